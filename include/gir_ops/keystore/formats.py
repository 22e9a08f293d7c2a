"""What kind of keystore a file is, whether its DER envelope is whole, and what a PKCS12 keystore holds.

Only PKCS12 keystores are opened (with ``cryptography``); JKS and JCEKS are recognised by their magic
bytes and compared byte for byte. Opening returns metadata only: aliases, whether each holds a private
key, certificate fingerprints and expiry. Never the password, the bytes or key material.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from include.gir_ops.keystore.key_bags import private_key_owners
from include.gir_ops.keystore.model import CertificateInfo
from include.gir_ops.shared import iso_utc

FORMAT_PKCS12 = "PKCS12"
FORMAT_JKS = "JKS"
FORMAT_JCEKS = "JCEKS"
FORMAT_UNKNOWN = "unknown"
_JKS_MAGIC = bytes.fromhex("feedfeed")
_JCEKS_MAGIC = bytes.fromhex("cececece")
_DER_SEQUENCE = 0x30


def sniff_format(head: bytes) -> str:
    """The keystore format from the first bytes: JKS and JCEKS by their magic, PKCS12 by its DER SEQUENCE."""
    if head.startswith(_JKS_MAGIC):
        return FORMAT_JKS
    if head.startswith(_JCEKS_MAGIC):
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


def open_pkcs12(
    data: bytes, password: str, conn_id: str | None, *, now: datetime, expiry_warning_days: int
) -> tuple[list[CertificateInfo], str | None]:
    """The entries of a PKCS12 keystore, or why it cannot be opened. Never the password or the bytes."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        store = pkcs12.load_pkcs12(data, password.encode("utf-8"))
    except ValueError as exc:
        # cryptography says "Invalid password or PKCS12 data" when the integrity MAC does not verify
        # (wrong password, or contents changed after writing), "Could not deserialize" when the
        # structure is broken.
        if "password" in str(exc).lower():
            return [], (
                f"cannot open: wrong keystore password (connection {conn_id!r}) or corrupt contents: "
                "the PKCS12 integrity check failed"
            )
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

    certificates = []
    for entry, has_key in entries:
        alias = unique((entry.friendly_name or b"").decode("utf-8", "replace") or "(no alias)")
        not_after = entry.certificate.not_valid_after_utc
        if not_after <= now:
            expiry = "expired"
        elif not_after <= now + timedelta(days=expiry_warning_days):
            expiry = "expiring"
        else:
            expiry = "valid"
        certificates.append(
            CertificateInfo(
                alias=alias,
                has_private_key=has_key,
                sha256_fingerprint=entry.certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
                not_valid_after=iso_utc(not_after) or "-",
                expiry=expiry,
                days_left=math.ceil((not_after - now) / timedelta(days=1)),
            )
        )
    certificates += [CertificateInfo(unique(alias), True, "-", "-", "valid", 0) for alias in key_only]
    return certificates, None
