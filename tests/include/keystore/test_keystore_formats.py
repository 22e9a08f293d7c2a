"""Keystore formats: the DER envelope check, and every private key of a PKCS12 keystore.

The multi-key files are built at test time from cryptography's one-key files (see below), since
cryptography writes one private key per PKCS12 file and RCS's Java keystore may hold several.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops.keystore.formats import der_length_problem, open_pkcs12
from include.gir_ops.keystore.key_bags import pkcs12_key_bags
from include.gir_ops.keystore.model import DRIFT, MATCH
from include.gir_ops.keystore.report import failure_message
from include.gir_ops.topology import Topology
from include.gir_sim.demo_data import keystore_paths
from tests.include.keystore.keystore_support import CONN, INSTANCES, PASSWORD, row_of, run, topology_for


def test_der_length_problem() -> None:
    assert der_length_problem(bytes([0x30, 0x03, 1, 2, 3]), 5) is None
    assert der_length_problem(bytes([0x30, 0x82, 0x01, 0x00]), 4) == (
        "truncated: 4 bytes, its PKCS12 header declares 260"
    )
    assert "unexpected bytes" in (der_length_problem(bytes([0x30, 0x01, 1, 9]), 4) or "")
    assert "not valid DER" in (der_length_problem(bytes([0x30, 0x80, 0, 0]), 4) or "")


# --- several private keys in one PKCS12 keystore ----------
#
# cryptography writes one private key per PKCS12 file, and RCS's Java keystore may hold several. So the
# fixture takes cryptography's one-key files apart and puts their pieces (each key bag, each encrypted
# certificate part) into one PFX, with a fresh SHA-256 integrity MAC (RFC 7292, appendix B).

KEY_ALIASES = ("gir-recording-2026", "gir-recording-2025", "gir-recording-2024")
CA_ALIAS = "gir-root-ca"


def _tlv(tag: int, contents: bytes) -> bytes:
    size = len(contents)
    if size < 0x80:
        return bytes([tag, size]) + contents
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + contents


def _items(data: bytes) -> list[tuple[int, bytes]]:
    """DER elements one after another: (tag, contents)."""
    found, pos = [], 0
    while pos < len(data):
        tag, first = data[pos], data[pos + 1]
        pos += 2
        size = first
        if first & 0x80:
            size = int.from_bytes(data[pos : pos + (first & 0x7F)], "big")
            pos += first & 0x7F
        found.append((tag, data[pos : pos + size]))
        pos += size
    return found


_OID_DATA = bytes.fromhex("2a864886f70d010701")
_OID_SHA256 = bytes.fromhex("608648016503040201")


def _content_infos(pfx: bytes) -> list[bytes]:
    """The ContentInfo parts of a PFX's authenticated safe (key bags, encrypted certificates)."""
    ((_, body),) = _items(pfx)
    _version, (_, auth_safe), *_ = _items(body)
    _oid, (_, explicit) = _items(auth_safe)
    ((_, safe),) = _items(explicit)
    ((_, parts),) = _items(safe)
    return [_tlv(tag, contents) for tag, contents in _items(parts)]


def _mac_key(password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 7292 B.2 key derivation (ID 3: MAC key) with SHA-256."""
    u, v = 32, 64
    secret = password.encode("utf-16-be") + b"\0\0"

    def stretch(value: bytes) -> bytes:
        size = v * -(-len(value) // v)
        return (value * (size // len(value) + 1))[:size]

    block = bytearray(stretch(salt) + stretch(secret))
    digest = bytes([3]) * v + bytes(block)
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return digest[:u]


def _pkcs12(entries: list[tuple[str, Any, Any]], password: str) -> bytes:
    """One PKCS12 file holding every (alias, private key or None, certificate) entry."""
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    encryption = BestAvailableEncryption(password.encode())
    parts = []
    for alias, key, cert in entries:
        if key is not None:
            one = pkcs12.serialize_key_and_certificates(alias.encode(), key, cert, None, encryption)
        else:  # a certificate-only entry: the certificate with its alias, no key
            only = [pkcs12.PKCS12Certificate(cert, alias.encode())]
            one = pkcs12.serialize_key_and_certificates(None, None, None, only, encryption)
        parts += _content_infos(one)
    auth_safe = _tlv(0x30, b"".join(parts))
    salt, iterations = os.urandom(16), 2048
    mac = hmac.new(_mac_key(password, salt, iterations), auth_safe, hashlib.sha256).digest()
    digest_info = _tlv(0x30, _tlv(0x30, _tlv(0x06, _OID_SHA256) + _tlv(0x05, b"")) + _tlv(0x04, mac))
    mac_data = _tlv(0x30, digest_info + _tlv(0x04, salt) + _tlv(0x02, iterations.to_bytes(2, "big")))
    content_info = _tlv(0x30, _tlv(0x06, _OID_DATA) + _tlv(0xA0, _tlv(0x04, auth_safe)))
    return _tlv(0x30, _tlv(0x02, b"\x03") + content_info + mac_data)


def _certificate(alias: str, key: Any, days: int) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"GIR test {alias}")])
    not_before = min(now - timedelta(days=1), now + timedelta(days=days) - timedelta(days=30))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def key_entries() -> dict[str, tuple[Any, Any]]:
    """Three private keys (the 2025 certificate expired: its key still decrypts old recordings) and a CA."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    keys = {
        KEY_ALIASES[0]: ec.generate_private_key(ec.SECP256R1()),
        KEY_ALIASES[1]: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        KEY_ALIASES[2]: ec.generate_private_key(ec.SECP384R1()),
        CA_ALIAS: ec.generate_private_key(ec.SECP256R1()),
    }
    days = {KEY_ALIASES[0]: 365, KEY_ALIASES[1]: -10, KEY_ALIASES[2]: 700, CA_ALIAS: 3650}
    return {alias: (key, _certificate(alias, key, days[alias])) for alias, key in keys.items()}


def _keystore(entries: dict[str, tuple[Any, Any]], *, certificate_only: tuple[str, ...] = ()) -> bytes:
    rows = [
        (alias, None if alias in certificate_only or alias == CA_ALIAS else key, cert)
        for alias, (key, cert) in entries.items()
    ]
    return _pkcs12(rows, PASSWORD)


def _key_secrets(entries: dict[str, tuple[Any, Any]]) -> list[str]:
    """Every private key as it must never appear: PKCS8 DER in base64 (and its start) and hex, PEM body."""
    from cryptography.hazmat.primitives import serialization

    found = []
    for key, _cert in entries.values():
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        encoded = base64.b64encode(der).decode()
        found += [encoded, encoded[:40], der.hex()[:64], encoded[40:80]]
    return found


def test_every_private_key_alias_is_reported(
    topology: Topology, key_entries: dict[str, tuple[Any, Any]], caplog: Any
) -> None:
    whole = _keystore(key_entries)
    for path in keystore_paths(topology).values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(whole)
    caplog.set_level(logging.DEBUG)
    report = run(topology)

    assert report.states == dict.fromkeys(INSTANCES, MATCH)
    for row in report.results:
        assert row.opened
        assert {c.alias: c.has_private_key for c in row.certificates} == {
            KEY_ALIASES[0]: True,
            KEY_ALIASES[1]: True,
            KEY_ALIASES[2]: True,
            CA_ALIAS: False,
        }
    assert f"private key(s): {', '.join(KEY_ALIASES)}" in row_of(report, "rcs-dc1-a").detail
    assert any(KEY_ALIASES[1] in note and "kept for old recordings" in note for note in report.expired_kept)
    for text in (caplog.text, report.to_json()):
        assert PASSWORD not in text
        for secret in _key_secrets(key_entries):
            assert secret not in text


def test_replica_holding_only_the_certificate_of_a_private_key_is_drift(
    topology: Topology, key_entries: dict[str, tuple[Any, Any]], caplog: Any
) -> None:
    whole, lacking = _keystore(key_entries), _keystore(key_entries, certificate_only=(KEY_ALIASES[1],))
    for name, path in keystore_paths(topology).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lacking if name == "rcs-dc2-a" else whole)
    caplog.set_level(logging.DEBUG)
    report = run(topology)

    assert report.states == {**dict.fromkeys(INSTANCES, MATCH), "rcs-dc2-a": DRIFT}
    row = row_of(report, "rcs-dc2-a")
    assert {c.alias: c.has_private_key for c in row.certificates}[KEY_ALIASES[1]] is False
    assert f"private key missing: {KEY_ALIASES[1]} (only its certificate is here)" in row.detail
    assert "re-exported" not in row.detail
    assert "alias missing" not in row.detail  # the certificate is there: it is the key that is missing
    assert KEY_ALIASES[0] not in row.detail and KEY_ALIASES[2] not in row.detail
    message = failure_message(report.to_dict()) or ""
    assert "- rcs-dc2-a (DC2): drift: bytes differ" in message
    assert f"private key missing: {KEY_ALIASES[1]}" in message
    for text in (caplog.text, report.to_json(), message):
        assert PASSWORD not in text
        for secret in _key_secrets(key_entries):
            assert secret not in text


def test_replica_with_an_extra_private_key_names_it(
    tmp_path: Path, key_entries: dict[str, tuple[Any, Any]]
) -> None:
    """The other way round (the reference lost the key): the replica's detail says it holds the key."""
    topology = topology_for(tmp_path, reference="rcs-dc2-a")
    whole, lacking = _keystore(key_entries), _keystore(key_entries, certificate_only=(KEY_ALIASES[2],))
    for name, path in keystore_paths(topology).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lacking if name == "rcs-dc2-a" else whole)
    row = row_of(run(topology), "rcs-dc3-a")
    assert row.state == DRIFT
    assert f"private key added: {KEY_ALIASES[2]} (only its certificate is on reference)" in row.detail


def test_private_key_without_a_certificate_is_listed(key_entries: dict[str, tuple[Any, Any]]) -> None:
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    key, _cert = key_entries[KEY_ALIASES[0]]
    data = pkcs12.serialize_key_and_certificates(
        b"lonely", key, None, None, BestAvailableEncryption(PASSWORD.encode())
    )
    certificates, error = open_pkcs12(data, PASSWORD, CONN, now=datetime.now(UTC), expiry_warning_days=30)
    assert error is None
    assert [(c.alias, c.has_private_key) for c in certificates] == [("lonely", True)]


def test_key_bags_are_found_in_ber_encoded_keystores(key_entries: dict[str, tuple[Any, Any]]) -> None:
    """BER (indefinite lengths, an OCTET STRING in pieces), as some exporters write, walks like DER."""
    der = _keystore(key_entries)
    ((_, body),) = _items(der)
    version, (_, auth_safe), mac_data = _items(body)
    _oid, (_, explicit) = _items(auth_safe)
    ((_, safe),) = _items(explicit)
    pieces = b"".join(_tlv(0x04, safe[i : i + 100]) for i in range(0, len(safe), 100))

    def indefinite(tag: int, contents: bytes) -> bytes:
        return bytes([tag, 0x80]) + contents + b"\0\0"

    content_info = indefinite(0x30, _tlv(0x06, _OID_DATA) + indefinite(0xA0, indefinite(0x24, pieces)))
    ber = indefinite(0x30, _tlv(*version) + content_info + _tlv(*mac_data))

    bags = pkcs12_key_bags(ber)
    assert bags is not None
    assert sorted(bag.friendly_name or "" for bag in bags) == sorted(KEY_ALIASES)
    assert pkcs12_key_bags(der) is not None
    assert pkcs12_key_bags(ber[:-40]) is None  # cut short: cannot be walked, never a crash
    assert "BEGIN" not in repr(bags) and all(bag.der.hex() not in repr(bags) for bag in bags)
