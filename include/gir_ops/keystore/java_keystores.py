"""JKS and JCEKS keystores, the formats Java 7/8 (RCS's JRE) writes by default: read without decrypting.

A small reader of the published format (the JDK's ``sun.security.provider.JavaKeyStore`` and
``com.sun.crypto.provider.JceKeyStore``), chosen over ``pyjks`` (last release 2020, pulls in
``pycryptodomex``, ``twofish`` and ``javaobj-py3`` to decrypt keys, which this check never does):

    magic (FEEDFEED JKS, CECECECE JCEKS) | version (1 or 2) | entry count
    entry: tag (1 private key, 2 trusted certificate, 3 secret key: JCEKS only) | alias | timestamp
      1: protected key (length + bytes) | chain length | certificates (type name in v2, length + DER)
      2: certificate (type name in v2, length + DER)
      3: a serialized ``SealedObject`` (Java object stream)
    SHA-1(password as UTF-16BE + "Mighty Aphrodite" + every byte before the digest) | the 20-byte digest

Certificates are stored in the clear, so aliases, entry types, subjects and expiry need no key
decryption; the store password is only used to verify the integrity digest. Key bytes are skipped, never
kept: :class:`JavaEntry` holds a certificate's DER, which is public.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

JKS_MAGIC = bytes.fromhex("feedfeed")
JCEKS_MAGIC = bytes.fromhex("cececece")
DIGEST_SALT = b"Mighty Aphrodite"
DIGEST_SIZE = 20

PRIVATE_KEY, TRUSTED_CERTIFICATE, SECRET_KEY = "private_key", "trusted_certificate", "secret_key"
_TAGS = {1: PRIVATE_KEY, 2: TRUSTED_CERTIFICATE, 3: SECRET_KEY}
_MAX_ENTRIES = 100_000


class JavaKeystoreError(ValueError):
    """The file is not a whole JKS/JCEKS keystore; the text says where it breaks (never its bytes)."""


@dataclass(frozen=True)
class JavaEntry:
    alias: str
    entry_type: str
    certificate_der: bytes | None  # the entry's own certificate (a chain's first); None for a secret key
    chain_length: int = 0

    def __repr__(self) -> str:
        return f"<{self.entry_type} entry {self.alias!r}>"


@dataclass
class JavaKeystore:
    format: str  # "JKS" or "JCEKS"
    version: int
    entries: list[JavaEntry] = field(default_factory=list)
    body_end: int = 0  # where the integrity digest starts

    def integrity_ok(self, data: bytes, password: str) -> bool:
        """Whether the store's SHA-1 digest matches ``password`` (wrong password and damage look alike)."""
        return hmac.compare_digest(integrity_digest(data[: self.body_end], password), data[self.body_end :])


def integrity_digest(body: bytes, password: str) -> bytes:
    """The digest the JDK appends: SHA-1 over the password's UTF-16BE chars, the salt phrase and the body."""
    return hashlib.sha1(password.encode("utf-16-be") + DIGEST_SALT + body, usedforsecurity=False).digest()


class _Reader:
    def __init__(self, data: bytes, end: int) -> None:
        self.data, self.pos, self.end = data, 0, end

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.pos + count > self.end:
            raise JavaKeystoreError(f"truncated: {what} runs past the end of the file (at byte {self.pos})")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack(">H", self.take(2, what))[0]

    def i32(self, what: str) -> int:
        return struct.unpack(">i", self.take(4, what))[0]

    def utf(self, what: str) -> str:
        """Java's modified UTF-8 (``DataOutput.writeUTF``): close enough to UTF-8 for aliases."""
        raw = self.take(self.u16(what), what)
        return raw.replace(b"\xc0\x80", b"\0").decode("utf-8", "replace")

    def blob(self, what: str) -> bytes:
        return self.take(self.i32(what), what)


def parse_java_keystore(data: bytes) -> JavaKeystore:
    """The entries of a JKS or JCEKS file; raises :class:`JavaKeystoreError` when its structure is broken.

    Needs no password: the structure, the aliases and the certificates are in the clear.
    """
    if data[:4] == JKS_MAGIC:
        fmt = "JKS"
    elif data[:4] == JCEKS_MAGIC:
        fmt = "JCEKS"
    else:
        raise JavaKeystoreError("not a JKS or JCEKS keystore (wrong magic number)")
    if len(data) < 12 + DIGEST_SIZE:
        raise JavaKeystoreError(f"truncated: only {len(data)} bytes")
    reader = _Reader(data, len(data) - DIGEST_SIZE)
    reader.take(4, "the magic number")
    version = reader.i32("the version")
    if version not in (1, 2):
        raise JavaKeystoreError(f"corrupt: unknown {fmt} version {version}")
    count = reader.i32("the entry count")
    if not 0 <= count <= _MAX_ENTRIES:
        raise JavaKeystoreError(f"corrupt: entry count {count}")
    store = JavaKeystore(fmt, version)
    store.entries = [_read_entry(reader, store, index) for index in range(count)]
    if reader.pos != reader.end:
        raise JavaKeystoreError(
            f"corrupt: {reader.end - reader.pos} unexpected bytes after the last entry (or a damaged entry)"
        )
    store.body_end = reader.end
    return store


def _read_entry(reader: _Reader, store: JavaKeystore, index: int) -> JavaEntry:
    def certificate(what: str) -> bytes:
        if store.version == 2:
            kind = reader.utf(f"{what}'s type")
            if kind != "X.509":
                raise JavaKeystoreError(f"unsupported certificate type {kind!r} in {what}")
        return reader.blob(what)

    tag = reader.i32(f"entry {index + 1}'s tag")
    entry_type = _TAGS.get(tag)
    if entry_type is None or (entry_type == SECRET_KEY and store.format != "JCEKS"):
        raise JavaKeystoreError(f"corrupt: entry {index + 1} has unknown tag {tag}")
    alias = reader.utf(f"entry {index + 1}'s alias")
    reader.take(8, f"{alias}'s date")
    if entry_type == TRUSTED_CERTIFICATE:
        return JavaEntry(alias, entry_type, certificate(f"{alias}'s certificate"), 1)
    if entry_type == SECRET_KEY:
        _skip_java_object(reader, alias)
        return JavaEntry(alias, entry_type, None)
    reader.blob(f"{alias}'s protected key")  # skipped, never kept
    chain = reader.i32(f"{alias}'s chain length")
    if not 0 <= chain <= 64:
        raise JavaKeystoreError(f"corrupt: {alias} has a chain of {chain} certificates")
    certs = [certificate(f"{alias}'s certificate {n + 1}") for n in range(chain)]
    return JavaEntry(alias, entry_type, certs[0] if certs else None, chain)


# --- a Java object stream, only as far as a JCEKS secret-key entry needs to be skipped --------------------
# (java.io.ObjectOutputStream protocol: a SealedObjectForKeyProtector holding the encrypted key.)

_STREAM_MAGIC = b"\xac\xed\x00\x05"
TC_NULL, TC_REFERENCE, TC_CLASSDESC, TC_OBJECT, TC_STRING, TC_ARRAY = 0x70, 0x71, 0x72, 0x73, 0x74, 0x75
TC_BLOCKDATA, TC_ENDBLOCKDATA, TC_LONGSTRING, TC_BLOCKDATALONG = 0x77, 0x78, 0x7C, 0x7A
_SC_WRITE_METHOD, _SC_SERIALIZABLE = 0x01, 0x02
_PRIMITIVE_SIZES = {"B": 1, "C": 2, "D": 8, "F": 4, "I": 4, "J": 8, "S": 2, "Z": 1}


@dataclass
class _ClassDesc:
    name: str
    flags: int
    fields: list[tuple[str, str]]  # (type code, name)
    parent: _ClassDesc | None


class _ObjectStream:
    def __init__(self, reader: _Reader, alias: str) -> None:
        self.r, self.alias = reader, alias
        self.handles: list[object] = []

    def fail(self, why: str) -> JavaKeystoreError:
        return JavaKeystoreError(f"corrupt: {self.alias}'s secret key entry: {why}")

    def content(self) -> object:
        tc = self.r.u8(f"{self.alias}'s secret key")
        if tc == TC_NULL:
            return None
        if tc == TC_REFERENCE:
            handle = self.r.i32("a reference") - 0x7E0000
            if not 0 <= handle < len(self.handles):
                raise self.fail("a reference to nothing")
            return self.handles[handle]
        if tc in (TC_STRING, TC_LONGSTRING):
            if tc == TC_STRING:
                text = self.r.utf("a string")
            else:
                size = struct.unpack(">q", self.r.take(8, "a long string"))[0]
                text = self.r.take(size, "a long string").decode("utf-8", "replace")
            self.handles.append(text)
            return text
        if tc == TC_CLASSDESC:
            return self.class_desc_body()
        if tc == TC_ARRAY:
            return self.array()
        if tc == TC_OBJECT:
            desc = self.class_desc()
            self.handles.append("object")
            self.class_data(desc)
            return "object"
        raise self.fail(f"unsupported object stream element 0x{tc:02x}")

    def array(self) -> str:
        desc = self.class_desc()
        self.handles.append("array")
        length = self.r.i32("an array length")
        element = desc.name[1:2] if desc else ""
        if element in _PRIMITIVE_SIZES:
            self.r.take(length * _PRIMITIVE_SIZES[element], "an array")
        else:
            for _ in range(length):
                self.content()
        return "array"

    def class_desc(self) -> _ClassDesc | None:
        desc = self.content()
        if desc is not None and not isinstance(desc, _ClassDesc):
            raise self.fail("expected a class description")
        return desc

    def class_desc_body(self) -> _ClassDesc:
        name = self.r.utf("a class name")
        self.r.take(8, "a serialVersionUID")
        desc = _ClassDesc(name, 0, [], None)
        self.handles.append(desc)
        desc.flags = self.r.u8("class flags")
        for _ in range(self.r.u16("a field count")):
            code = chr(self.r.u8("a field type"))
            field_name = self.r.utf("a field name")
            if code in ("L", "["):
                self.content()  # the field's class name (a string or a reference)
            elif code not in _PRIMITIVE_SIZES:
                raise self.fail(f"unknown field type {code!r}")
            desc.fields.append((code, field_name))
        self.annotations()
        desc.parent = self.class_desc()
        return desc

    def annotations(self) -> None:
        """Block data and objects up to the end-of-block marker (class annotations, writeObject data)."""
        while True:
            tc = self.r.data[self.r.pos] if self.r.pos < self.r.end else None
            if tc is None:
                raise self.fail("ends inside an object")
            if tc == TC_ENDBLOCKDATA:
                self.r.pos += 1
                return
            if tc == TC_BLOCKDATA:
                self.r.pos += 1
                self.r.take(self.r.u8("a data block"), "a data block")
            elif tc == TC_BLOCKDATALONG:
                self.r.pos += 1
                self.r.take(self.r.i32("a data block"), "a data block")
            else:
                self.content()

    def class_data(self, desc: _ClassDesc | None) -> None:
        chain = []
        while desc is not None:
            chain.append(desc)
            desc = desc.parent
        for cls in reversed(chain):  # superclass first
            if not cls.flags & _SC_SERIALIZABLE:
                raise self.fail(f"{cls.name} is not a plain serializable class")
            for code, _name in cls.fields:
                if code in _PRIMITIVE_SIZES:
                    self.r.take(_PRIMITIVE_SIZES[code], "a field")
                else:
                    self.content()
            if cls.flags & _SC_WRITE_METHOD:
                self.annotations()


def _skip_java_object(reader: _Reader, alias: str) -> None:
    """Move past one serialized object (a JCEKS secret key, encrypted): its bytes are never kept."""
    if reader.take(4, f"{alias}'s secret key") != _STREAM_MAGIC:
        raise JavaKeystoreError(f"corrupt: {alias}'s secret key entry is not a Java object stream")
    stream = _ObjectStream(reader, alias)
    try:
        stream.content()
    except RecursionError:
        raise stream.fail("nested too deeply") from None
