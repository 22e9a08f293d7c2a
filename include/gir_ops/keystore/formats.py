"""What kind of keystore a file is, whether its DER envelope is whole, and what a PKCS12 keystore holds.

PKCS12 keystores are opened with ``cryptography``; JKS and JCEKS (recognised by their magic bytes) by the
small reader in ``java_keystores``. All three give the same metadata: aliases, entry types (private key,
trusted certificate, secret key), certificate subjects, fingerprints and expiry, after the store's
integrity check with the password. Never the password, the bytes or key material.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from include.gir_ops.keystore.java_keystores import (
    JCEKS_MAGIC,
    JKS_MAGIC,
    PRIVATE_KEY,
    SECRET_KEY,
    TRUSTED_CERTIFICATE,
    JavaKeystoreError,
    parse_java_keystore,
)
from include.gir_ops.keystore.key_bags import pkcs12_key_bags, private_key_owners
from include.gir_ops.keystore.model import CertificateInfo
from include.gir_ops.shared import iso_utc

FORMAT_PKCS12 = "PKCS12"
FORMAT_JKS = "JKS"
FORMAT_JCEKS = "JCEKS"
FORMAT_UNKNOWN = "unknown"
_DER_SEQUENCE = 0x30


def sniff_format(head: bytes) -> str:
    """The keystore format from the first bytes: JKS and JCEKS by their magic, PKCS12 by its DER SEQUENCE."""
    if head.startswith(JKS_MAGIC):
        return FORMAT_JKS
    if head.startswith(JCEKS_MAGIC):
        return FORMAT_JCEKS
    if head[:1] == bytes([_DER_SEQUENCE]):
        return FORMAT_PKCS12
    return FORMAT_UNKNOWN


def der_length_problem(data: bytes, size: int) -> str | None:
    """Whether a DER file (PKCS12) is cut short or has trailing bytes, from its outer length header.

    Readable without the password, so a truncated copy is reported as unreadable even when no password
    connection is configured.
    """
    if len(data) < 2:
        return f"truncated: only {size} byte(s)"
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            return "corrupt: the PKCS12 length header is not valid DER"
        if len(data) < 2 + count:
            return f"truncated: only {size} bytes"
        header, length = 2 + count, int.from_bytes(data[2 : 2 + count], "big")
    expected = header + length
    if size < expected:
        return f"truncated: {size} bytes, its PKCS12 header declares {expected}"
    if size > expected:
        return f"corrupt: {size - expected} unexpected bytes after the PKCS12 structure"
    return None


def java_subject(certificate: Any) -> str:
    """The subject as Java prints it (``keytool -list -v``'s "Owner"): most specific RDN first, ", "."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(certificate.subject.rdns))


def certificate_info(
    alias: str, entry_type: str, certificate: Any, *, now: datetime, expiry_warning_days: int
) -> CertificateInfo:
    """One entry's metadata from its (public) certificate: the same for PKCS12, JKS and JCEKS."""
    from cryptography.hazmat.primitives import hashes

    not_after = certificate.not_valid_after_utc
    if not_after <= now:
        expiry = "expired"
    elif not_after <= now + timedelta(days=expiry_warning_days):
        expiry = "expiring"
    else:
        expiry = "valid"
    return CertificateInfo(
        alias=alias,
        has_private_key=entry_type == PRIVATE_KEY,
        sha256_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
        not_valid_after=iso_utc(not_after) or "-",
        expiry=expiry,
        days_left=math.ceil((not_after - now) / timedelta(days=1)),
        entry_type=entry_type,
        subject=java_subject(certificate),
    )


def secret_key_info(alias: str) -> CertificateInfo:
    """A JCEKS secret key: its alias and type only (no certificate; the key is never decrypted)."""
    return CertificateInfo(alias, False, "-", "-", "none", 0, entry_type=SECRET_KEY, subject="-")


def wrong_password(fmt: str, conn_id: str | None) -> str:
    return (
        f"cannot open: wrong keystore password (connection {conn_id!r}) or corrupt contents: "
        f"the {fmt} integrity check failed"
    )


def java_structure_problem(data: bytes) -> str | None:
    """Whether a JKS/JCEKS file is cut short or damaged in its structure: readable without the password."""
    try:
        parse_java_keystore(data)
    except JavaKeystoreError as exc:
        return str(exc)
    return None


def open_java_keystore(
    data: bytes, password: str, conn_id: str | None, *, now: datetime, expiry_warning_days: int
) -> tuple[list[CertificateInfo], str | None]:
    """The entries of a JKS or JCEKS keystore after its integrity digest verified with the password.

    Certificates are read in the clear; no key is decrypted. Never the password or the bytes.
    """
    from cryptography import x509

    try:
        store = parse_java_keystore(data)
    except JavaKeystoreError as exc:
        return [], str(exc)
    if not store.integrity_ok(data, password):
        return [], wrong_password(store.format, conn_id)
    certificates = []
    for entry in store.entries:
        if entry.certificate_der is None:
            if entry.entry_type == SECRET_KEY:
                certificates.append(secret_key_info(entry.alias))
            else:  # a private key stored without a certificate chain
                certificates.append(CertificateInfo(entry.alias, True, "-", "-", "none", 0, PRIVATE_KEY, "-"))
            continue
        try:
            cert = x509.load_der_x509_certificate(entry.certificate_der)
        except ValueError:
            return [], f"corrupt: the certificate of {entry.alias} is not valid X.509"
        certificates.append(
            certificate_info(
                entry.alias, entry.entry_type, cert, now=now, expiry_warning_days=expiry_warning_days
            )
        )
    return sorted(certificates, key=lambda c: c.alias), None


def open_pkcs12(
    data: bytes, password: str, conn_id: str | None, *, now: datetime, expiry_warning_days: int
) -> tuple[list[CertificateInfo], str | None]:
    """The entries of a PKCS12 keystore, or why it cannot be opened. Never the password or the bytes."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        store = pkcs12.load_pkcs12(data, password.encode("utf-8"))
    except ValueError as exc:
        # cryptography says "Invalid password or PKCS12 data" when the integrity MAC does not verify
        # (wrong password, or contents changed after writing), "Could not deserialize" when the
        # structure is broken.
        if "password" in str(exc).lower():
            return [], wrong_password(FORMAT_PKCS12, conn_id)
        return [], "corrupt: not a valid PKCS12 structure"
    except Exception as exc:  # an unsupported algorithm inside the keystore, etc.
        return [], f"cannot open PKCS12 ({type(exc).__name__})"

    entries = [(store.cert, store.key is not None)] if store.cert is not None else []
    entries += [(extra, False) for extra in store.additional_certs]
    entries, key_only = private_key_owners(data, password, entries)
    if store.cert is None and store.key is not None and not key_only:
        key_only = ["(private key without certificate)"]
    seen: dict[str, int] = {}

    def unique(alias: str) -> str:
        seen[alias] = seen.get(alias, 0) + 1
        return alias if seen[alias] == 1 else f"{alias} #{seen[alias]}"

    certificates = [
        certificate_info(
            unique((entry.friendly_name or b"").decode("utf-8", "replace") or "(no alias)"),
            PRIVATE_KEY if has_key else TRUSTED_CERTIFICATE,
            entry.certificate,
            now=now,
            expiry_warning_days=expiry_warning_days,
        )
        for entry, has_key in entries
    ]
    certificates += [
        CertificateInfo(unique(alias), True, "-", "-", "none", 0, PRIVATE_KEY, "-") for alias in key_only
    ]
    secrets: list[str] = []
    pkcs12_key_bags(data, secrets)
    certificates += [secret_key_info(unique(alias)) for alias in secrets]
    return certificates, None
