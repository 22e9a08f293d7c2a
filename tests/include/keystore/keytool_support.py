"""Keystores as Java writes them: made at test time by the JDK's ``keytool`` (and ``openssl pkcs12``).

Each store has a valid private key (RSA), one expiring soon (EC), one expired (``-startdate`` in the past,
kept for old recordings) and a trusted certificate; the JCEKS and PKCS12 stores also a secret key (AES).
The JDK is a test dependency (``make jdk-deps`` installs it); without ``keytool`` these tests fail, never
skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

STORE_PASSWORD = "Rcs-Jks-Store-42!"  # JCEKS key protection takes ASCII only
FORMATS = ("JKS", "JCEKS", "PKCS12")
VALID_ALIAS, EXPIRING_ALIAS, EXPIRED_ALIAS = (
    "gir-recording-2026",
    "gir-recording-expiring",
    "gir-recording-2019",
)
TRUSTED_ALIAS, SECRET_ALIAS = "gir-root-ca", "gir-aes-key"
_ENV = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
_JAVA_OPTIONS = ["-J-Duser.timezone=UTC", "-J-Duser.language=en", "-J-Duser.country=US"]


def keytool(*args: str) -> str:
    """Run keytool (UTC, English), fail with its output when it fails."""
    binary = shutil.which("keytool")
    assert binary, "keytool (a JDK) is required for these tests: run `make jdk-deps`"
    done = subprocess.run(
        [binary, *_JAVA_OPTIONS, *args], capture_output=True, text=True, env=_ENV, timeout=120, check=False
    )
    assert done.returncode == 0, f"keytool {' '.join(args)} failed: {done.stdout}{done.stderr}"
    return done.stdout


def _store_args(path: Path, fmt: str, password: str) -> list[str]:
    return ["-keystore", str(path), "-storetype", fmt, "-storepass", password]


def make_keystore(path: Path, fmt: str, password: str = STORE_PASSWORD, *, secret_key: bool = True) -> Path:
    """A keystore of ``fmt`` with a valid, an expiring and an expired private key and a trusted cert."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = _store_args(path, fmt, password)
    key = ["-keypass", password] if fmt != "PKCS12" else []
    keytool(
        "-genkeypair",
        *store,
        *key,
        "-alias",
        VALID_ALIAS,
        "-keyalg",
        "RSA",
        "-keysize",
        "2048",
        "-dname",
        "CN=rcs recording 2026, OU=GIR, O=Example Contact Center, C=US",
        "-validity",
        "365",
    )
    keytool(
        "-genkeypair",
        *store,
        *key,
        "-alias",
        EXPIRING_ALIAS,
        "-keyalg",
        "EC",
        "-dname",
        "CN=rcs expiring, O=Example Contact Center",
        "-validity",
        "10",
    )
    keytool("-genkeypair", *store, *key, "-alias", EXPIRED_ALIAS, "-keyalg", "RSA", "-keysize", "2048",
            "-dname", "CN=rcs recording 2019, O=Example Contact Center", "-startdate", "2019/01/01 00:00:00",
            "-validity", "90")  # fmt: skip
    # The trusted certificate is a CA's whose key lives elsewhere (a side store, removed).
    side, exported = path.with_name(path.name + ".ca.p12"), path.with_name(path.name + ".ca.der")
    ca = _store_args(side, "PKCS12", password)
    keytool("-genkeypair", *ca, "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
            "-dname", "CN=Example Root CA, O=Example Contact Center, C=US", "-validity", "3650")  # fmt: skip
    keytool("-exportcert", *ca, "-alias", "ca", "-file", str(exported))
    keytool("-importcert", "-noprompt", *store, "-alias", TRUSTED_ALIAS, "-file", str(exported))
    exported.unlink()
    side.unlink()
    if fmt in ("JCEKS", "PKCS12") and secret_key:  # JKS cannot hold secret keys
        keytool("-genseckey", *store, *key, "-alias", SECRET_ALIAS, "-keyalg", "AES", "-keysize", "128")
    return path


def delete_alias(path: Path, fmt: str, alias: str, password: str = STORE_PASSWORD) -> None:
    keytool("-delete", *_store_args(path, fmt, password), "-alias", alias)


def make_openssl_pkcs12(folder: Path, alias: str, password: str = STORE_PASSWORD) -> Path:
    """A PKCS12 keystore written by ``openssl pkcs12 -export`` (a self-signed certificate and its key)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert, out = folder / "key.pem", folder / "cert.pem", folder / "openssl.p12"
    openssl = shutil.which("openssl")
    assert openssl, "openssl is required for this test"
    env = {**_ENV, "GIR_P12_PASS": password}
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "200", "-subj", "/C=US/O=Example Contact Center/CN=rcs openssl"],
        check=True, capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    subprocess.run(
        [openssl, "pkcs12", "-export", "-inkey", str(key), "-in", str(cert), "-name", alias,
         "-out", str(out), "-passout", "env:GIR_P12_PASS"],
        check=True, capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    key.unlink()
    return out


@dataclass(frozen=True)
class KeytoolEntry:
    """One entry as ``keytool -list -v`` prints it."""

    alias: str
    entry_type: str  # private_key, trusted_certificate, secret_key (our names for keytool's)
    owner: str | None
    until: str | None  # ISO-8601 UTC
    sha256: str | None


_TYPES = {"PrivateKeyEntry": "private_key", "trustedCertEntry": "trusted_certificate"}
_TYPES["SecretKeyEntry"] = "secret_key"


def keytool_list(path: Path, fmt: str, password: str = STORE_PASSWORD) -> dict[str, KeytoolEntry]:
    """What ``keytool -list -v`` says of every entry (the first certificate of a chain)."""
    text = keytool("-list", "-v", *_store_args(path, fmt, password))
    entries = {}
    for block in re.split(r"\n(?=Alias name: )", text)[1:]:
        alias = re.search(r"^Alias name: (.*)$", block, re.M)[1]  # type: ignore[index]
        kind = _TYPES[re.search(r"^Entry type: (.*)$", block, re.M)[1]]  # type: ignore[index]
        owner = re.search(r"^Owner: (.*)$", block, re.M)
        until = re.search(r"^Valid from: .* until: (.*)$", block, re.M)
        sha = re.search(r"^\s*SHA256: (.*)$", block, re.M)
        entries[alias] = KeytoolEntry(
            alias,
            kind,
            owner[1].strip() if owner else None,
            datetime.strptime(until[1].strip(), "%a %b %d %H:%M:%S %Z %Y").replace(tzinfo=UTC).isoformat()
            if until
            else None,
            sha[1].strip() if sha else None,
        )
    return entries
