"""RCS keystore replication check: is every Recording Crypto Server's keystore the same file?

The GIR guide requires the RCS keystore to be replicated to every RCS instance in every data center. An
instance holding a stale keystore cannot decrypt recordings encrypted with a newer key, and nobody notices
until playback fails. This module reads every instance's keystore through ``ObjectStoragePath`` (in
parallel, so a slow store does not add up), fingerprints the file (SHA-256 and size, streamed), opens
PKCS12 keystores when a password connection is configured, and compares each instance with a reference.

Every instance ends in exactly one state:

- ``match``: the same bytes as the reference.
- ``drift``: other bytes; the detail says the sizes, digest prefixes and (when both were opened) which
  aliases were added or are missing, which certificates changed and which private keys are missing
  (every private key of the file counts, not only the first one).
- ``missing``: the file does not exist.
- ``unreadable``: it exists but cannot be read or opened (permission denied, a directory, empty,
  truncated, corrupt, wrong password), or an open or read did not answer within
  ``keystore_check.read_timeout_seconds`` (a hung mount, a FIFO). A read error is never reported as drift.
- ``not_compared``: only when the reference itself is missing or unreadable, for instances that could
  be read: there is nothing to compare them against, and the check fails.

Only digests and metadata leave this module: never file bytes, key material, whole certificates or
passwords. Certificates are described by alias, SHA-256 fingerprint and expiry date.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

from include.gir_ops.topology import DEFAULT_KEYSTORE_PARALLEL_READS, DEFAULT_KEYSTORE_READ_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from include.gir_ops.topology import Topology

log = logging.getLogger(__name__)

MATCH = "match"
DRIFT = "drift"
MISSING = "missing"
UNREADABLE = "unreadable"
NOT_COMPARED = "not_compared"
STATES = (MATCH, DRIFT, MISSING, UNREADABLE, NOT_COMPARED)

FINGERPRINT_PREFIX_HEX = 12
READ_CHUNK_BYTES = 1024 * 1024
# Keystores are kilobytes; a bigger file is still fingerprinted, but not held in memory to be opened.
MAX_OPEN_BYTES = 4 * 1024 * 1024

FORMAT_PKCS12 = "PKCS12"
FORMAT_JKS = "JKS"
FORMAT_JCEKS = "JCEKS"
FORMAT_UNKNOWN = "unknown"
_JKS_MAGIC = bytes.fromhex("feedfeed")
_JCEKS_MAGIC = bytes.fromhex("cececece")
_DER_SEQUENCE = 0x30

PasswordGetter = Callable[[str], str | None]


# --- what is read --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeystoreTarget:
    """One RCS instance's keystore as the topology names it."""

    instance: str
    site: str
    url: str
    password_conn_id: str | None = None


@dataclass(frozen=True)
class CertificateInfo:
    """Metadata of one keystore entry: never the certificate itself, never the key."""

    alias: str
    has_private_key: bool
    sha256_fingerprint: str
    not_valid_after: str  # ISO-8601 UTC
    expiry: str  # "valid", "expiring" (within the warning window) or "expired"
    days_left: int


@dataclass
class KeystoreReading:
    """What reading one instance's keystore found. ``error`` set means missing or unreadable."""

    target: KeystoreTarget
    sha256: str | None = None
    size: int | None = None
    format: str | None = None
    missing: bool = False
    error: str | None = None
    opened: bool = False
    not_opened_reason: str | None = None
    certificates: list[CertificateInfo] = field(default_factory=list)
    read_seconds: float = 0.0

    @property
    def readable(self) -> bool:
        return not self.missing and self.error is None

    @property
    def fingerprint_prefix(self) -> str:
        return self.sha256[:FINGERPRINT_PREFIX_HEX] if self.sha256 else "-"


@dataclass(frozen=True)
class InstanceResult:
    """One row of the report."""

    instance: str
    site: str
    url: str
    state: str
    detail: str
    sha256: str | None
    fingerprint_prefix: str
    size: int | None
    format: str | None
    opened: bool
    certificates: list[CertificateInfo]


@dataclass
class KeystoreReport:
    """The outcome of one check: a table for people and ``to_dict()`` for machines (same data)."""

    checked_at: str
    reference: str | None
    reference_error: str | None
    results: list[InstanceResult]
    warnings: list[str]
    expired_kept: list[str]
    parallel_reads: int
    read_seconds: float

    @property
    def ok(self) -> bool:
        return self.reference_error is None and all(r.state == MATCH for r in self.results)

    @property
    def not_matching(self) -> list[InstanceResult]:
        return [r for r in self.results if r.state != MATCH]

    @property
    def states(self) -> dict[str, str]:
        return {r.instance: r.state for r in self.results}

    def summary(self) -> str:
        if self.reference_error:
            return f"FAILED: nothing to compare against: {self.reference_error}"
        bad = self.not_matching
        if not self.results:
            return "FAILED: no RCS instances in the topology"
        if bad:
            names = ", ".join(f"{r.instance} ({r.state})" for r in bad)
            count = f"{len(bad)} of {len(self.results)}"
            return f"FAILED: {count} RCS keystores do not match {self.reference}: {names}"
        tail = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return f"OK: all {len(self.results)} RCS keystores match {self.reference}{tail}"

    def table(self) -> str:
        return format_table(self.results)

    def failure_message(self) -> str | None:
        return failure_message(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: digests and metadata only."""
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "checked_at": self.checked_at,
            "reference": self.reference,
            "reference_error": self.reference_error,
            "states": self.states,
            "not_matching": [r.instance for r in self.not_matching],
            "warnings": list(self.warnings),
            "expired_kept": list(self.expired_kept),
            "instances": [
                {
                    "instance": r.instance,
                    "site": r.site,
                    "url": r.url,
                    "state": r.state,
                    "detail": r.detail,
                    "sha256": r.sha256,
                    "fingerprint_prefix": r.fingerprint_prefix,
                    "size": r.size,
                    "format": r.format,
                    "opened": r.opened,
                    "certificates": [asdict(c) for c in r.certificates],
                }
                for r in self.results
            ],
            "parallel_reads": self.parallel_reads,
            "read_seconds": round(self.read_seconds, 3),
            "table": self.table(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def asset_extra(self) -> dict[str, Any]:
        """The event extra documented on ``RCS_KEYSTORE_CHECK_ASSET`` (read by the failover pre-flight)."""
        return {
            "ok": self.ok,
            "checked_at": self.checked_at,
            "reference": self.reference,
            "states": self.states,
            "warnings": list(self.warnings),
            "summary": self.summary(),
        }


def failure_message(report: dict[str, Any]) -> str | None:
    """The run's failure reason from a report dict (as returned through XCom); None when all match.

    Names every instance that is not ``match``, with its DC, state and detail.
    """
    if report.get("ok"):
        return None
    lines = ["RCS keystore replication check failed."]
    instances = report.get("instances") or []
    if report.get("reference_error"):
        lines.append(f"Nothing to compare against: {report['reference_error']}.")
    elif not instances:
        lines.append("The topology lists no RCS instances; add data_centers[].rcs entries.")
    else:
        bad = [i for i in instances if i["state"] != MATCH]
        lines.append(
            f"{len(bad)} of {len(instances)} RCS keystore(s) do not match {report.get('reference')}:"
        )
    for item in instances:
        if item["state"] not in (MATCH, NOT_COMPARED):
            lines.append(f"- {item['instance']} ({item['site']}): {item['state']}: {item['detail']}")
    not_compared = [i["instance"] for i in instances if i["state"] == NOT_COMPARED]
    if not_compared:
        lines.append(f"Not compared (no reference): {', '.join(not_compared)}.")
    return "\n".join(lines)


# --- topology and passwords ----------------------------------------------------------------------------


def targets_from_topology(topology: Topology) -> list[KeystoreTarget]:
    return [
        KeystoreTarget(rcs.name, dc.site, rcs.keystore, rcs.password_conn_id)
        for dc, rcs in topology.rcs_instances
    ]


def connection_password(conn_id: str) -> str | None:
    """The password of an Airflow connection (the keystore password); None when it has none."""
    from airflow.sdk import Connection

    return Connection.get(conn_id).password or None


def fetch_passwords(
    targets: Iterable[KeystoreTarget], get_password: PasswordGetter
) -> tuple[dict[str, str], dict[str, str]]:
    """Look up every password connection once, before the parallel reads (connection lookups go to the
    task supervisor and are not meant to run from many threads).

    Returns (passwords by conn_id, why a conn_id gave no password). A missing connection is not fatal:
    the keystore is still compared byte for byte, and the report warns that it was not opened.
    """
    from airflow.sdk.exceptions import AirflowNotFoundException

    passwords: dict[str, str] = {}
    problems: dict[str, str] = {}
    for conn_id in sorted({t.password_conn_id for t in targets if t.password_conn_id}):
        try:
            password = get_password(conn_id)
        except AirflowNotFoundException:
            problems[conn_id] = f"password connection {conn_id!r} is not defined"
            continue
        except Exception as exc:
            # Never the exception text: a secrets backend error could echo what it was given.
            problems[conn_id] = f"password connection {conn_id!r} could not be read ({type(exc).__name__})"
            continue
        if password:
            passwords[conn_id] = password
        else:
            problems[conn_id] = f"password connection {conn_id!r} has no password"
    return passwords, problems


# --- reading one keystore ------------------------------------------------------------------------------


def open_keystore(url: str) -> BinaryIO:
    """Open a keystore URL for binary reading through Airflow's object storage layer."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url).open("rb")


def sniff_format(head: bytes) -> str:
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


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a keystore file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"read error: {reason}"


def read_keystore(
    target: KeystoreTarget,
    password: str | None,
    *,
    not_opened_reason: str | None = None,
    now: datetime,
    expiry_warning_days: int,
    opener: Callable[[str], BinaryIO] = open_keystore,
    cache: OpenedKeystores | None = None,
    progress: ReadProgress | None = None,
) -> KeystoreReading:
    """Fingerprint one keystore (streamed SHA-256 and size) and list its entries when it can be opened.

    Never raises: every failure becomes ``missing`` or an ``error`` reason on the reading. The bytes stay
    in this function. ``progress`` is told when each open and read answers and when the storage part is
    over, so that ``read_keystores`` can give up on a read that never answers.
    """
    reading = KeystoreReading(target=target)
    started = time.monotonic()
    progress = progress or ReadProgress()
    try:
        data = _stream(reading, opener, progress)
    finally:
        progress.storage_done()
    if data is not None:
        _inspect(
            reading,
            data,
            password,
            not_opened_reason=not_opened_reason,
            now=now,
            expiry_warning_days=expiry_warning_days,
            cache=cache,
        )
    reading.read_seconds = time.monotonic() - started
    return reading


def _stream(
    reading: KeystoreReading, opener: Callable[[str], BinaryIO], progress: ReadProgress
) -> _Content | None:
    """Hash the file in chunks; keep its bytes only when small enough to open. None on a read error."""
    url = reading.target.url
    digest = hashlib.sha256()
    size = 0
    kept = bytearray()
    head = b""
    try:
        with opener(url) as handle:
            progress.answered()
            while chunk := handle.read(READ_CHUNK_BYTES):
                progress.answered()
                head = head or chunk[:16]
                digest.update(chunk)
                size += len(chunk)
                if size <= MAX_OPEN_BYTES:
                    kept += chunk
    except FileNotFoundError:
        reading.missing = True
        reading.error = f"file does not exist: {url}"
        return None
    except OSError as exc:
        reading.error = _describe_os_error(exc)
        return None
    except Exception as exc:  # a remote store's own errors (e.g. access denied from a cloud SDK)
        reading.error = f"read error: {type(exc).__name__}: {str(exc)[:200]}"
        return None
    reading.sha256, reading.size = digest.hexdigest(), size
    return _Content(head=head, data=bytes(kept) if size <= MAX_OPEN_BYTES else None)


@dataclass(frozen=True)
class _Content:
    head: bytes
    data: bytes | None  # None when too large to open

    def __repr__(self) -> str:  # never show keystore bytes, even in a traceback
        return "<keystore content>"


def _inspect(
    reading: KeystoreReading,
    content: _Content,
    password: str | None,
    *,
    not_opened_reason: str | None,
    now: datetime,
    expiry_warning_days: int,
    cache: OpenedKeystores | None,
) -> None:
    """Decide whether the file is usable, and open it when it is PKCS12 and a password is available."""
    if reading.size == 0:
        reading.error = "empty file (0 bytes)"
        return
    reading.format = sniff_format(content.head)
    if content.data is None:
        limit = MAX_OPEN_BYTES // (1024 * 1024)
        reading.not_opened_reason = f"larger than {limit} MiB: compared by bytes only"
        return
    if reading.format == FORMAT_PKCS12:
        problem = der_length_problem(content.data, reading.size or 0)
        if problem:
            reading.error = problem
            return
    if reading.format in (FORMAT_JKS, FORMAT_JCEKS):
        only = "only PKCS12 keystores are opened"
        reading.not_opened_reason = f"{reading.format} keystore: compared by bytes only ({only})"
    elif reading.format == FORMAT_UNKNOWN:
        reading.not_opened_reason = "not PKCS12, JKS or JCEKS: compared by bytes only"
    elif password is None:
        reading.not_opened_reason = not_opened_reason or "no password_conn_id: compared by bytes only"
    else:
        data, conn_id = content.data, reading.target.password_conn_id
        certificates, error = (cache or OpenedKeystores()).open(
            (reading.sha256 or "", conn_id),
            lambda: _open_pkcs12(data, password, conn_id, now=now, expiry_warning_days=expiry_warning_days),
        )
        reading.certificates, reading.error, reading.opened = certificates, error, error is None


class OpenedKeystores:
    """Opened PKCS12 contents by (file SHA-256, password connection), shared by the reading threads.

    Replicated keystores are the same bytes, so a hundred instances need one PKCS12 decryption, not a
    hundred. Opening holds the GIL anyway, so one lock around it costs no parallelism.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened: dict[tuple[str, str | None], tuple[list[CertificateInfo], str | None]] = {}

    def open(
        self,
        key: tuple[str, str | None],
        opener: Callable[[], tuple[list[CertificateInfo], str | None]],
    ) -> tuple[list[CertificateInfo], str | None]:
        with self._lock:
            if key not in self._opened:
                self._opened[key] = opener()
            certificates, error = self._opened[key]
            return list(certificates), error


def _open_pkcs12(
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
    entries, key_only = _private_key_owners(data, password, entries)
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
                not_valid_after=not_after.isoformat(),
                expiry=expiry,
                days_left=math.ceil((not_after - now) / timedelta(days=1)),
            )
        )
    certificates += [CertificateInfo(unique(alias), True, "-", "-", "valid", 0) for alias in key_only]
    return certificates, None


# --- every private key of a PKCS12 keystore -----------------------------------------------------------
#
# cryptography (like OpenSSL's PKCS12_parse) returns only the first private key of a PKCS12 file and
# lists the certificates of every other key as plain extra certificates. A Java keystore, RCS's, may hold
# several private keys, and a replica that lost one of them (holding only its certificate) must be drift
# that says so. So the key bags are found by walking the PKCS12 structure (RFC 7292) here, after
# cryptography has verified the file's integrity with the password. Key bags sit in the plain ``data``
# parts of the authenticated safe (each key encrypted inside its bag); the ``encryptedData`` parts hold the
# certificates, which cryptography has already read.

_OID_DATA = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1 pkcs7-data
_OID_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0101")  # 1.2.840.113549.1.12.10.1.1 keyBag
_OID_SHROUDED_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0102")  # ...1.2 pkcs8ShroudedKeyBag
_OID_SAFE_CONTENTS_BAG = bytes.fromhex("2a864886f70d010c0a0106")  # ...1.6 safeContentsBag
_OID_FRIENDLY_NAME = bytes.fromhex("2a864886f70d010914")  # 1.2.840.113549.1.9.20 friendlyName
_TAG_OID, _TAG_OCTETS, _TAG_OCTETS_CONSTRUCTED, _TAG_BMP_STRING = 0x06, 0x04, 0x24, 0x1E
_MAX_BAG_NESTING = 8


@dataclass(frozen=True)
class _KeyBag:
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


def _collect_key_bags(safe_contents: bytes, bags: list[_KeyBag], depth: int = 0) -> None:
    for _, bag, _ in _elements(safe_contents):
        (_, bag_id, _), (_, explicit, _), *rest = _elements(bag)
        (_, value, whole), *_ = _elements(explicit)
        if bag_id in (_OID_KEY_BAG, _OID_SHROUDED_KEY_BAG):
            name = _friendly_name(rest[0][1]) if rest else None
            bags.append(_KeyBag(name, whole, shrouded=bag_id == _OID_SHROUDED_KEY_BAG))
        elif bag_id == _OID_SAFE_CONTENTS_BAG and depth < _MAX_BAG_NESTING:
            _collect_key_bags(value, bags, depth + 1)


def pkcs12_key_bags(data: bytes) -> list[_KeyBag] | None:
    """Every private-key bag in the plain parts of a PKCS12 file; None when it cannot be walked."""
    try:
        (_, pfx, _), *_ = _elements(data)
        _version, (_, auth_safe, _), *_ = _elements(pfx)
        safe = _data_content(auth_safe)
        if safe is None:  # public-key integrity mode (signed): not used for keystores
            return None
        (_, content_infos, _), *_ = _elements(safe)
        bags: list[_KeyBag] = []
        for _, content_info, _ in _elements(content_infos):
            contents = _data_content(content_info)
            if contents is not None:
                (_, safe_bags, _), *_ = _elements(contents)
                _collect_key_bags(safe_bags, bags)
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


def _bag_public_key(bag: _KeyBag, password: str) -> bytes | None:
    """The public half of a bag's private key; None when it cannot be decrypted with the store password."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_der_private_key(bag.der, password.encode("utf-8") if bag.shrouded else None)
    except Exception:
        return None
    return _public_key_der(key)


def _private_key_owners(
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
        if not owners and public is None and bag.friendly_name:
            name = bag.friendly_name.encode("utf-8")
            owners = [i for i, (entry, _) in enumerate(entries) if entry.friendly_name == name]
        for index in owners:
            owned[index] = True
        if not owners:
            key_only.append(bag.friendly_name or "(private key without certificate)")
    return [(entry, has_key) for (entry, _), has_key in zip(entries, owned, strict=True)], key_only


def _preload(opener: Callable[[str], BinaryIO]) -> None:
    """Import once, before the threads start, rather than in every worker thread at the same time."""
    import cryptography.hazmat.primitives.serialization.pkcs12  # noqa: F401

    if opener is open_keystore:
        import airflow.sdk.io.path  # noqa: F401


class ReadProgress:
    """When one keystore read last heard from its storage, shared by its reading thread and the scheduler.

    ``answered`` only pushes the deadline further, so it needs no lock and wakes nobody; ``storage_done``
    wakes the scheduler, which from then on waits for the (CPU-only) inspection without a deadline.
    """

    def __init__(self, wake: threading.Condition | None = None) -> None:
        self._wake = wake
        self.started = self.last_answer = time.monotonic()
        self.storage_over = False

    def answered(self) -> None:
        self.last_answer = time.monotonic()

    def storage_done(self) -> None:
        if self._wake is None:
            self.storage_over = True
            return
        with self._wake:
            self.storage_over = True
            self._wake.notify_all()


@dataclass
class _ReadJob:
    target: KeystoreTarget
    progress: ReadProgress
    reading: KeystoreReading | None = None


def no_answer_error(read_timeout_seconds: float) -> str:
    return (
        f"no answer within {read_timeout_seconds:g} s: the storage did not answer an open or read "
        "(hung mount or store?); limit: keystore_check.read_timeout_seconds"
    )


def read_keystores(
    targets: Sequence[KeystoreTarget],
    passwords: dict[str, str],
    password_problems: dict[str, str] | None = None,
    *,
    now: datetime,
    expiry_warning_days: int,
    parallel_reads: int = DEFAULT_KEYSTORE_PARALLEL_READS,
    read_timeout_seconds: float = DEFAULT_KEYSTORE_READ_TIMEOUT_SECONDS,
    opener: Callable[[str], BinaryIO] = open_keystore,
    logger: logging.Logger = log,
) -> dict[str, KeystoreReading]:
    """Read every keystore, ``parallel_reads`` at a time: reads wait on storage, not on the CPU.

    A read whose open or read call has not answered for ``read_timeout_seconds`` (a FIFO, a hung NFS/SMB
    mount) is given up: that instance is unreadable, its slot goes to the next keystore, and its thread is
    left behind. A thread blocked in open()/read() cannot be stopped, so every read runs in a daemon
    thread that nothing ever joins: no executor shutdown, no interpreter exit, no task timeout waits for
    it. Worst case, when every keystore hangs: ceil(instances / parallel_reads) x read_timeout_seconds.
    """
    if parallel_reads < 1:
        raise ValueError(f"parallel_reads must be at least 1, got {parallel_reads}")
    if not read_timeout_seconds > 0:
        raise ValueError(f"read_timeout_seconds must be more than 0, got {read_timeout_seconds}")
    problems = password_problems or {}
    cache = OpenedKeystores()
    wake = threading.Condition()

    def work(job: _ReadJob) -> None:
        conn_id = job.target.password_conn_id
        try:
            reading = read_keystore(
                job.target,
                passwords.get(conn_id) if conn_id else None,
                not_opened_reason=(
                    f"{problems[conn_id]}: compared by bytes only" if conn_id in problems else None
                ),
                now=now,
                expiry_warning_days=expiry_warning_days,
                opener=opener,
                cache=cache,
                progress=job.progress,
            )
        except BaseException as exc:  # read_keystore never raises; the scheduler must never wait in vain
            reading = KeystoreReading(target=job.target, error=f"read error: {type(exc).__name__}")
        with wake:
            job.reading = reading
            wake.notify_all()

    if not targets:
        return {}
    _preload(opener)
    workers = min(parallel_reads, len(targets))
    waiting = deque(targets)
    running: list[_ReadJob] = []
    readings: dict[str, KeystoreReading] = {}
    with wake:
        while waiting or running:
            while waiting and len(running) < workers:
                job = _ReadJob(waiting.popleft(), ReadProgress(wake))
                running.append(job)
                name = f"rcs-keystore-{job.target.instance}"
                threading.Thread(target=work, args=(job,), name=name, daemon=True).start()
            clock = time.monotonic()
            next_deadline: float | None = None
            for job in list(running):
                if job.reading is not None:
                    readings[job.target.instance] = job.reading
                    running.remove(job)
                elif not job.progress.storage_over:
                    deadline = job.progress.last_answer + read_timeout_seconds
                    if clock < deadline:
                        next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
                        continue
                    running.remove(job)
                    readings[job.target.instance] = KeystoreReading(
                        target=job.target,
                        error=no_answer_error(read_timeout_seconds),
                        read_seconds=clock - job.progress.started,
                    )
                    logger.warning(
                        "RCS keystore of %s (%s): no answer within %g s; reported unreadable, its read "
                        "is left behind",
                        job.target.instance,
                        job.target.url,
                        read_timeout_seconds,
                    )
            if running and not (waiting and len(running) < workers):
                wake.wait(None if next_deadline is None else max(next_deadline - clock, 0.0))
    return {target.instance: readings[target.instance] for target in targets}


# --- comparing -----------------------------------------------------------------------------------------


def _human_size(size: int | None) -> str:
    return "?" if size is None else f"{size} B"


def _short(sha256: str | None) -> str:
    return f"{sha256[:FINGERPRINT_PREFIX_HEX]}…" if sha256 else "?"


def _alias_diff(reference: KeystoreReading, reading: KeystoreReading) -> list[str]:
    ref = {c.alias: c for c in reference.certificates}
    here = {c.alias: c for c in reading.certificates}
    parts = []
    missing = sorted(set(ref) - set(here))
    added = sorted(set(here) - set(ref))
    if missing:
        parts.append(f"alias missing: {', '.join(missing)}")
    if added:
        parts.append(f"alias added: {', '.join(added)}")
    for alias in sorted(set(ref) & set(here)):
        a, b = ref[alias], here[alias]
        if a.sha256_fingerprint != b.sha256_fingerprint:
            parts.append(
                f"certificate changed: {alias} ({b.sha256_fingerprint[:11]}… here, "
                f"{a.sha256_fingerprint[:11]}… on reference)"
            )
        elif a.has_private_key and not b.has_private_key:
            parts.append(f"private key missing: {alias} (only its certificate is here)")
        elif b.has_private_key and not a.has_private_key:
            parts.append(f"private key added: {alias} (only its certificate is on reference)")
    return parts


def _drift_detail(reference: KeystoreReading, reading: KeystoreReading) -> str:
    parts = [
        f"bytes differ (size {_human_size(reading.size)} vs {_human_size(reference.size)} on reference, "
        f"sha256 {_short(reading.sha256)} vs {_short(reference.sha256)})"
    ]
    if reading.opened and reference.opened:
        entries = _alias_diff(reference, reading)
        parts += entries or [
            "same aliases, certificates and private keys (keystore re-exported rather than copied?)"
        ]
    elif not reading.opened:
        parts.append(f"aliases not compared: {reading.not_opened_reason or 'not opened'}")
    else:
        parts.append(f"aliases not compared: reference {reference.not_opened_reason or 'not opened'}")
    return "; ".join(parts)


def _match_detail(reading: KeystoreReading, is_reference: bool) -> str:
    head = "reference" if is_reference else "identical to reference"
    if reading.opened:
        expired = sum(c.expiry == "expired" for c in reading.certificates)
        expiring = sum(c.expiry == "expiring" for c in reading.certificates)
        keys = [c.alias for c in reading.certificates if c.has_private_key]
        extra = [f"{len(reading.certificates)} alias(es)"]
        extra.append(f"private key(s): {', '.join(keys)}" if keys else "no private key")
        if expired:
            extra.append(f"{expired} expired, kept for old recordings")
        if expiring:
            extra.append(f"{expiring} expiring soon")
        return f"{head}; {', '.join(extra)}"
    return f"{head}; not opened: {reading.not_opened_reason}"


def _certificate_notes(readings: Iterable[KeystoreReading]) -> tuple[list[str], list[str]]:
    """Expiring certificates (warnings) and expired ones kept for old recordings (information).

    Replicated keystores hold the same certificates, so each is listed once with the instances it is on.
    """
    by_cert: dict[tuple[str, str, str], tuple[CertificateInfo, list[str]]] = {}
    for reading in readings:
        for cert in reading.certificates:
            if cert.expiry == "valid":
                continue
            key = (cert.expiry, cert.alias, cert.sha256_fingerprint)
            by_cert.setdefault(key, (cert, []))[1].append(reading.target.instance)
    warnings, expired = [], []
    for (expiry, alias, fingerprint), (cert, instances) in sorted(by_cert.items()):
        on = ", ".join(instances)
        day = cert.not_valid_after[:10]
        if expiry == "expiring":
            warnings.append(
                f"certificate {alias} (sha256 {fingerprint[:11]}…) expires on {day} "
                f"(in {cert.days_left} day(s)) on {on}: renew it and replicate the keystore"
            )
        else:
            expired.append(
                f"certificate {alias} (sha256 {fingerprint[:11]}…) expired on {day}, "
                f"kept for old recordings, on {on}"
            )
    return warnings, expired


def compare_keystores(
    targets: Sequence[KeystoreTarget],
    readings: dict[str, KeystoreReading],
    reference: str | None,
    *,
    checked_at: datetime,
    password_problems: dict[str, str] | None = None,
    parallel_reads: int = DEFAULT_KEYSTORE_PARALLEL_READS,
    read_seconds: float = 0.0,
) -> KeystoreReport:
    """Give every instance exactly one state by comparing its file with the reference's."""
    ref_reading = readings.get(reference) if reference else None
    reference_error = None
    if reference is None:
        reference_error = (
            "no reference instance: the primary site has no RCS instance and keystore_check.reference "
            "is not set"
        )
    elif ref_reading is None:
        reference_error = f"reference instance {reference!r} is not among the RCS instances read"
    elif ref_reading.missing:
        reference_error = f"reference instance {reference} is missing ({ref_reading.error})"
    elif ref_reading.error:
        reference_error = f"reference instance {reference} is unreadable ({ref_reading.error})"

    results = []
    for target in targets:
        reading = readings[target.instance]
        if reading.missing:
            state, detail = MISSING, reading.error or "file does not exist"
        elif reading.error:
            state, detail = UNREADABLE, reading.error
        elif reference_error or ref_reading is None:
            state, detail = NOT_COMPARED, "nothing to compare against (see the reference)"
        elif reading.sha256 == ref_reading.sha256 and reading.size == ref_reading.size:
            state, detail = MATCH, _match_detail(reading, target.instance == reference)
        else:
            state, detail = DRIFT, _drift_detail(ref_reading, reading)
        results.append(
            InstanceResult(
                instance=target.instance,
                site=target.site,
                url=target.url,
                state=state,
                detail=detail,
                sha256=reading.sha256,
                fingerprint_prefix=reading.fingerprint_prefix,
                size=reading.size,
                format=reading.format,
                opened=reading.opened,
                certificates=list(reading.certificates),
            )
        )
    warnings, expired = _certificate_notes(readings[t.instance] for t in targets)
    warnings += [
        f"{problem}: keystores using it were compared by bytes only"
        for problem in (password_problems or {}).values()
    ]
    return KeystoreReport(
        checked_at=checked_at.astimezone(UTC).isoformat(timespec="seconds"),
        reference=reference,
        reference_error=reference_error,
        results=results,
        warnings=warnings,
        expired_kept=expired,
        parallel_reads=parallel_reads,
        read_seconds=read_seconds,
    )


# --- the report ----------------------------------------------------------------------------------------

_COLUMNS = ("instance", "DC", "state", "fingerprint", "detail")


def format_table(results: Sequence[InstanceResult]) -> str:
    """A fixed-width table an on-call engineer reads at a glance."""
    rows = [(r.instance, r.site, r.state, r.fingerprint_prefix, r.detail) for r in results]
    widths = [max([len(_COLUMNS[i])] + [len(row[i]) for row in rows]) for i in range(4)]
    lines = []
    for row in [_COLUMNS, *rows]:
        cells = [str(cell).ljust(widths[i]) for i, cell in enumerate(row[:4])]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(_COLUMNS[4]))
    return "\n".join(lines)


def log_report(report: KeystoreReport, logger: logging.Logger = log) -> None:
    """Log the summary, the table, warnings and the JSON: digests and metadata only."""
    level = logging.INFO if report.ok else logging.ERROR
    logger.log(level, "RCS keystore replication: %s", report.summary())
    logger.info("RCS keystores compared with %s:\n%s", report.reference or "(none)", report.table())
    for warning in report.warnings:
        logger.warning("RCS keystore warning: %s", warning)
    for note in report.expired_kept:
        logger.info("RCS keystore: %s", note)
    machine = {key: value for key, value in report.to_dict().items() if key != "table"}
    logger.info("RCS keystore report JSON: %s", json.dumps(machine, sort_keys=True))


# --- the whole check -----------------------------------------------------------------------------------


def check_replication(
    topology: Topology,
    *,
    parallel_reads: int = DEFAULT_KEYSTORE_PARALLEL_READS,
    read_timeout_seconds: float | None = None,
    get_password: PasswordGetter = connection_password,
    now: datetime | None = None,
    opener: Callable[[str], BinaryIO] = open_keystore,
    logger: logging.Logger = log,
) -> KeystoreReport:
    """Read, fingerprint and compare every RCS keystore of the topology; log and return the report.

    Never raises for a keystore problem: the report says what is wrong, and the caller decides to fail.
    A keystore that does not answer within ``read_timeout_seconds`` (default: the topology's
    ``keystore_check.read_timeout_seconds``) is unreadable; the report still comes out.
    """
    now = now or datetime.now(UTC)
    timeout = topology.keystore_check.read_timeout_seconds
    if read_timeout_seconds is not None:
        timeout = read_timeout_seconds
    targets = targets_from_topology(topology)
    passwords, problems = fetch_passwords(targets, get_password)
    logger.info(
        "Reading %d RCS keystore(s), %d at a time, %g s per open/read at most; reference %s",
        len(targets),
        min(parallel_reads, max(len(targets), 1)),
        timeout,
        topology.keystore_reference or "(none)",
    )
    _preload(opener)
    started = time.monotonic()
    readings = read_keystores(
        targets,
        passwords,
        problems,
        now=now,
        expiry_warning_days=topology.keystore_check.expiry_warning_days,
        parallel_reads=parallel_reads,
        read_timeout_seconds=timeout,
        opener=opener,
        logger=logger,
    )
    elapsed = time.monotonic() - started
    del passwords
    report = compare_keystores(
        targets,
        readings,
        topology.keystore_reference,
        checked_at=now,
        password_problems=problems,
        parallel_reads=parallel_reads,
        read_seconds=elapsed,
    )
    logger.info(
        "Read %d keystore(s) in %.2f s (sum of individual reads %.2f s)",
        len(readings),
        elapsed,
        sum(r.read_seconds for r in readings.values()),
    )
    log_report(report, logger)
    return report
