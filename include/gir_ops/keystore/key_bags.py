"""Every private key of a PKCS12 keystore, not only the first one.

cryptography (like OpenSSL's PKCS12_parse) returns only the first private key of a PKCS12 file and lists
the certificates of every other key as plain extra certificates. A Java keystore, RCS's, may hold several
private keys, and a replica that lost one of them (holding only its certificate) must be drift that says
so. So the key bags are found here by walking the PKCS12 structure (RFC 7292), after cryptography has
verified the file's integrity with the password. Key bags sit in the plain ``data`` parts of the
authenticated safe (each key encrypted inside its bag); the ``encryptedData`` parts hold the
certificates, which cryptography has already read.

Key bytes never leave this module: a bag is matched to its certificate by its public half only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_OID_DATA = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1 pkcs7-data
_OID_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0101")  # 1.2.840.113549.1.12.10.1.1 keyBag
_OID_SHROUDED_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0102")  # ...1.2 pkcs8ShroudedKeyBag
_OID_SECRET_BAG = bytes.fromhex("2a864886f70d010c0a0105")  # ...1.5 secretBag (Java's secret keys)
_OID_SAFE_CONTENTS_BAG = bytes.fromhex("2a864886f70d010c0a0106")  # ...1.6 safeContentsBag
_OID_FRIENDLY_NAME = bytes.fromhex("2a864886f70d010914")  # 1.2.840.113549.1.9.20 friendlyName
_TAG_OID, _TAG_OCTETS, _TAG_OCTETS_CONSTRUCTED, _TAG_BMP_STRING = 0x06, 0x04, 0x24, 0x1E
_MAX_BAG_NESTING = 8


@dataclass(frozen=True)
class KeyBag:
    friendly_name: str | None
    der: bytes  # the PKCS8 (encrypted when shrouded) private key: never leaves this module
    shrouded: bool

    def __repr__(self) -> str:  # never show key bytes, even in a traceback
        return f"<PKCS12 key bag {self.friendly_name!r}>"


def _ber(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """The BER element at ``pos``: (tag, contents, end). Definite and indefinite lengths."""
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tags are not used by PKCS12")
    pos += 2
    if first == 0x80:  # indefinite length: the contents end at the end-of-contents octets
        if not tag & 0x20:
            raise ValueError("indefinite length on a primitive element")
        start = pos
        while data[pos : pos + 2] != b"\0\0":
            pos = _ber(data, pos)[2]
        return tag, data[start:pos], pos + 2
    length = first
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise ValueError("an element runs past the end of its container")
    return tag, data[pos:end], end


def _elements(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """The elements one after another in ``data``: (tag, contents, the whole element)."""
    found, pos = [], 0
    while pos < len(data):
        tag, contents, end = _ber(data, pos)
        found.append((tag, contents, data[pos:end]))
        pos = end
    return found


def _octets(tag: int, contents: bytes) -> bytes:
    if tag == _TAG_OCTETS:
        return contents
    if tag == _TAG_OCTETS_CONSTRUCTED:  # BER: the string in pieces
        return b"".join(_octets(t, c) for t, c, _ in _elements(contents))
    raise ValueError("expected an OCTET STRING")


def _data_content(content_info: bytes) -> bytes | None:
    """The bytes of a pkcs7-data ContentInfo; None for any other content type (e.g. encryptedData)."""
    (oid_tag, oid, _), (_, explicit, _), *_ = _elements(content_info)
    if oid_tag != _TAG_OID or oid != _OID_DATA:
        return None
    (tag, contents, _), *_ = _elements(explicit)
    return _octets(tag, contents)


def _friendly_name(attributes: bytes) -> str | None:
    for _, attribute, _ in _elements(attributes):
        (_, oid, _), (_, values, _), *_ = _elements(attribute)
        if oid == _OID_FRIENDLY_NAME:
            for tag, contents, _ in _elements(values):
                if tag == _TAG_BMP_STRING:
                    return contents.decode("utf-16-be", "replace")
    return None


def _collect_key_bags(
    safe_contents: bytes, bags: list[KeyBag], depth: int = 0, secrets: list[str] | None = None
) -> None:
    for _, bag, _ in _elements(safe_contents):
        (_, bag_id, _), (_, explicit, _), *rest = _elements(bag)
        (_, value, whole), *_ = _elements(explicit)
        if bag_id in (_OID_KEY_BAG, _OID_SHROUDED_KEY_BAG):
            name = _friendly_name(rest[0][1]) if rest else None
            bags.append(KeyBag(name, whole, shrouded=bag_id == _OID_SHROUDED_KEY_BAG))
        elif bag_id == _OID_SECRET_BAG and secrets is not None:
            secrets.append((_friendly_name(rest[0][1]) if rest else None) or "(secret key without alias)")
        elif bag_id == _OID_SAFE_CONTENTS_BAG and depth < _MAX_BAG_NESTING:
            _collect_key_bags(value, bags, depth + 1, secrets)


def pkcs12_key_bags(data: bytes, secrets: list[str] | None = None) -> list[KeyBag] | None:
    """Every private-key bag in the plain parts of a PKCS12 file; None when it cannot be walked.

    ``secrets`` (when given) receives the aliases of the secret-key bags (a JDK stores secret keys there);
    only their names are read, never the (encrypted) key.
    """
    try:
        (_, pfx, _), *_ = _elements(data)
        _version, (_, auth_safe, _), *_ = _elements(pfx)
        safe = _data_content(auth_safe)
        if safe is None:  # public-key integrity mode (signed): not used for keystores
            return None
        (_, content_infos, _), *_ = _elements(safe)
        bags: list[KeyBag] = []
        for _, content_info, _ in _elements(content_infos):
            contents = _data_content(content_info)
            if contents is not None:
                (_, safe_bags, _), *_ = _elements(contents)
                _collect_key_bags(safe_bags, bags, secrets=secrets)
        return bags
    except (ValueError, IndexError, RecursionError):
        return None


def _public_key_der(owner: Any) -> bytes | None:
    """The SubjectPublicKeyInfo of a certificate or a private key; None for an unsupported key type."""
    from cryptography.hazmat.primitives import serialization

    try:
        public = owner.public_key()
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:
        return None


def _bag_public_key(bag: KeyBag, password: str) -> bytes | None:
    """The public half of a bag's private key; None when it cannot be decrypted with the store password."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_der_private_key(bag.der, password.encode("utf-8") if bag.shrouded else None)
    except Exception:
        return None
    return _public_key_der(key)


def private_key_owners(
    data: bytes, password: str, entries: list[tuple[Any, bool]]
) -> tuple[list[tuple[Any, bool]], list[str]]:
    """Mark every certificate whose private key is in the file; name the keys that have no certificate.

    A key belongs to the certificate with the same public key; a key that cannot be decrypted with the
    store password belongs to the certificate with its friendly name. Returns (entries with
    has_private_key, aliases of keys without a certificate).
    """
    bags = pkcs12_key_bags(data)
    if not bags:
        return entries, []
    cert_keys = [_public_key_der(entry.certificate) for entry, _ in entries]
    owned = [has_key for _, has_key in entries]
    key_only = []
    for bag in bags:
        public = _bag_public_key(bag, password)
        owners = [i for i, key in enumerate(cert_keys) if public is not None and key == public]
        if len(owners) > 1 and bag.friendly_name:
            # The same certificate stored again as a trusted certificate: the key is the named entry's.
            name = bag.friendly_name.encode("utf-8")
            owners = [i for i in owners if entries[i][0].friendly_name == name] or owners
        if not owners and public is None and bag.friendly_name:
            name = bag.friendly_name.encode("utf-8")
            owners = [i for i, (entry, _) in enumerate(entries) if entry.friendly_name == name]
        for index in owners:
            owned[index] = True
        if not owners:
            key_only.append(bag.friendly_name or "(private key without certificate)")
    return [(entry, has_key) for (entry, _), has_key in zip(entries, owned, strict=True)], key_only
