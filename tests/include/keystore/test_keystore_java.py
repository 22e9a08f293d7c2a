"""JKS, JCEKS and PKCS12 keystores made by the JDK's keytool (and openssl): what the check reports for each
is what ``keytool -list -v`` says of the same file; drift, expiry, wrong passwords and damage alike."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from include.gir_ops.keystore.formats import open_java_keystore
from include.gir_ops.keystore.java_keystores import (
    JavaKeystoreError,
    integrity_digest,
    parse_java_keystore,
)
from include.gir_ops.keystore.model import DRIFT, MATCH, UNREADABLE
from include.gir_ops.topology import Topology
from include.gir_sim.demo_data import keystore_paths
from tests.include.keystore.keystore_support import CONN, assert_no_secrets, passwords, row_of, run
from tests.include.keystore.keytool_support import (
    EXPIRED_ALIAS,
    EXPIRING_ALIAS,
    FORMATS,
    SECRET_ALIAS,
    STORE_PASSWORD,
    TRUSTED_ALIAS,
    VALID_ALIAS,
    delete_alias,
    keytool_list,
    make_keystore,
    make_openssl_pkcs12,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One keytool-made keystore per format, made once for the module (keytool starts a JVM each time)."""
    root = tmp_path_factory.mktemp("keytool")
    return {fmt: make_keystore(root / f"store.{fmt.lower()}", fmt) for fmt in FORMATS}


def _replicate(topology: Topology, source: Path) -> dict[str, Path]:
    paths = keystore_paths(topology)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
    return paths


def _check(topology: Topology, **kwargs: object) -> dict:
    kwargs.setdefault("get_password", passwords({CONN: STORE_PASSWORD}))
    return run(topology, **kwargs).to_dict()  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_reports_what_keytool_lists(fmt: str, stores: dict[str, Path], topology: Topology) -> None:
    _replicate(topology, stores[fmt])
    report = _check(topology)
    reference = report["instances"][0]

    assert report["ok"], report["summary"]
    assert reference["format"] == fmt
    assert reference["opened"]
    listed = keytool_list(stores[fmt], fmt)
    seen = {c["alias"]: c for c in reference["certificates"]}
    assert set(seen) == set(listed)
    expected_aliases = {VALID_ALIAS, EXPIRING_ALIAS, EXPIRED_ALIAS, TRUSTED_ALIAS}
    assert set(seen) == expected_aliases | ({SECRET_ALIAS} if fmt in ("JCEKS", "PKCS12") else set())
    for alias, entry in listed.items():
        mine = seen[alias]
        assert mine["entry_type"] == entry.entry_type, alias
        if entry.entry_type == "secret_key":
            assert (mine["sha256_fingerprint"], mine["not_valid_after"]) == ("-", "-")
            continue
        assert mine["subject"] == entry.owner, alias
        assert mine["not_valid_after"] == entry.until, alias
        assert mine["sha256_fingerprint"] == entry.sha256, alias
        assert mine["has_private_key"] == (entry.entry_type == "private_key")
    assert seen[EXPIRED_ALIAS]["expiry"] == "expired"
    assert seen[EXPIRING_ALIAS]["expiry"] == "expiring"
    assert seen[VALID_ALIAS]["expiry"] == "valid"


@pytest.mark.parametrize("fmt", FORMATS)
def test_expiry_warnings_and_drift_are_the_same_for_every_format(
    fmt: str, stores: dict[str, Path], topology: Topology, tmp_path: Path
) -> None:
    paths = _replicate(topology, stores[fmt])
    drifted = tmp_path / f"drifted.{fmt.lower()}"
    shutil.copyfile(stores[fmt], drifted)
    delete_alias(drifted, fmt, VALID_ALIAS)
    shutil.copyfile(drifted, paths["rcs-dc2-a"])
    report = _check(topology)

    states = report["states"]
    assert states == {"rcs-dc1-a": MATCH, "rcs-dc1-b": MATCH, "rcs-dc2-a": DRIFT, "rcs-dc3-a": MATCH}
    detail = next(i["detail"] for i in report["instances"] if i["instance"] == "rcs-dc2-a")
    assert f"alias missing: {VALID_ALIAS}" in detail
    (warning,) = [w for w in report["warnings"] if EXPIRING_ALIAS in w]
    assert "rcs-dc1-a, rcs-dc1-b, rcs-dc2-a, rcs-dc3-a" in warning
    assert "renew it and replicate the keystore" in warning
    (kept,) = report["expired_kept"]
    assert EXPIRED_ALIAS in kept
    assert "kept for old recordings" in kept
    assert_no_secrets(json.dumps(report), paths, STORE_PASSWORD)


@pytest.mark.parametrize("fmt", ["JKS", "JCEKS"])
def test_wrong_password_is_unreadable_with_that_reason(
    fmt: str, stores: dict[str, Path], topology: Topology
) -> None:
    paths = _replicate(topology, stores[fmt])
    report = run(topology, get_password=passwords({CONN: "not-the-password"}))

    row = row_of(report, "rcs-dc1-a")
    assert row.state == UNREADABLE
    assert row.detail == (
        f"cannot open: wrong keystore password (connection {CONN!r}) or corrupt contents: "
        f"the {fmt} integrity check failed"
    )
    assert_no_secrets(report.to_json(), paths, STORE_PASSWORD, "not-the-password")


@pytest.mark.parametrize("fmt", ["JKS", "JCEKS"])
def test_damaged_java_keystores_are_unreadable(fmt: str, stores: dict[str, Path], topology: Topology) -> None:
    paths = _replicate(topology, stores[fmt])
    data = stores[fmt].read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01  # inside a certificate or key: structure intact, digest not
    paths["rcs-dc1-b"].write_bytes(bytes(flipped))
    paths["rcs-dc2-a"].write_bytes(data[: len(data) - 300])  # cut short
    report = run(topology, get_password=passwords({CONN: STORE_PASSWORD}))

    assert row_of(report, "rcs-dc1-a").state == MATCH
    assert row_of(report, "rcs-dc1-b").state == UNREADABLE
    assert "corrupt" in row_of(report, "rcs-dc1-b").detail
    assert row_of(report, "rcs-dc2-a").state == UNREADABLE
    assert row_of(report, "rcs-dc2-a").detail.startswith(("truncated", "corrupt"))
    # The structure is checked without the password too: a cut-short copy is never "compared by bytes".
    without = run(topology, get_password=passwords({}))
    assert row_of(without, "rcs-dc2-a").state == UNREADABLE
    assert row_of(without, "rcs-dc1-a").state == MATCH
    assert "compared by bytes only" in row_of(without, "rcs-dc1-a").detail


def test_openssl_pkcs12_matches_keytool_listing(topology: Topology, tmp_path: Path) -> None:
    made = make_openssl_pkcs12(tmp_path / "openssl", "gir-openssl")
    _replicate(topology, made)
    report = _check(topology)

    assert report["ok"], report["summary"]
    (cert,) = report["instances"][0]["certificates"]
    (entry,) = keytool_list(made, "PKCS12").values()
    assert (
        (cert["alias"], cert["entry_type"])
        == (entry.alias, entry.entry_type)
        == ("gir-openssl", "private_key")
    )
    assert (cert["subject"], cert["not_valid_after"], cert["sha256_fingerprint"]) == (
        entry.owner,
        entry.until,
        entry.sha256,
    )


def test_reader_never_keeps_key_bytes_and_checks_the_published_digest(stores: dict[str, Path]) -> None:
    data = stores["JCEKS"].read_bytes()
    store = parse_java_keystore(data)
    assert data[store.body_end :] == integrity_digest(data[: store.body_end], STORE_PASSWORD)
    assert store.integrity_ok(data, STORE_PASSWORD)
    assert not store.integrity_ok(data, STORE_PASSWORD + "x")
    assert "gir-aes-key" in repr(store.entries)
    assert all(e.certificate_der is None for e in store.entries if e.entry_type == "secret_key")
    with pytest.raises(JavaKeystoreError, match="wrong magic"):
        parse_java_keystore(b"\x30" + data[1:])
    certificates, error = open_java_keystore(
        data, STORE_PASSWORD, CONN, now=datetime.now(UTC), expiry_warning_days=30
    )
    assert error is None
    assert [c.alias for c in certificates] == sorted(c.alias for c in certificates)


def test_a_key_entrys_certificate_also_stored_as_trusted_is_listed_as_keytool_lists_it(
    tmp_path: Path,
) -> None:
    """The same certificate under a private key alias and again as a trusted certificate (PKCS12)."""
    from include.gir_ops.keystore.formats import open_pkcs12
    from tests.include.keystore.keytool_support import keytool

    store = tmp_path / "same.p12"
    args = ["-keystore", str(store), "-storetype", "PKCS12", "-storepass", STORE_PASSWORD]
    keytool("-genkeypair", *args, "-alias", "key", "-keyalg", "EC", "-dname", "CN=same", "-validity", "30")
    keytool("-exportcert", *args, "-alias", "key", "-file", str(tmp_path / "same.der"))
    keytool("-importcert", "-noprompt", *args, "-alias", "trusted", "-file", str(tmp_path / "same.der"))
    certificates, error = open_pkcs12(
        store.read_bytes(), STORE_PASSWORD, CONN, now=datetime.now(UTC), expiry_warning_days=5
    )
    assert error is None
    listed = keytool_list(store, "PKCS12")
    assert {c.alias: c.entry_type for c in certificates} == {a: e.entry_type for a, e in listed.items()}
