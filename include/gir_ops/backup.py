"""Ship SpeechMiner's Daily Index Backup to the backup DC: find, wait, list, copy, verify, publish, prune.

The guide asks for the daily SpeechMiner index backup to be written to the backup data center so the
backup index can become primary when the primary DC is lost. A backup that is partial, corrupt or stale is
worse than none, because it is trusted in an incident, so every step here is built to be checkable:

* **find**: the newest backup is the last folder under the source DC's ``speechminer.index_backup`` whose
  name matches ``shipping.backup_name_pattern``, in natural name order (``index-2026-11-20`` after
  ``index-2026-11-19``; ``b-10`` after ``b-9``). ``tmp``, ``lost+found``, dot-folders, links and names
  with control characters are never chosen. The backup itself is an opaque tree: no public description
  of its layout exists.
* **complete**: with ``ready_marker`` set, the backup is complete only once that file exists (strict: a
  SpeechMiner that died mid-backup also goes quiet). Without a marker it is complete once nothing in it
  changed for ``quiet_minutes`` (file and folder mtimes, plus changes the poller itself observed) **and**
  two scans ``quiet_minutes`` apart listed the same names, sizes and mtimes: a copy that keeps old
  mtimes (``cp -p``, robocopy) is never complete on one look.
* **list** (the DAG's ``manifest`` task): relative path, size and mtime of every file; symlinks, special
  files and names that could escape the folder are refused.
* **copy**: each file is streamed in large chunks into ``<destination>/<name>.partial/`` and hashed while
  it is read, so the copy *is* the source SHA-256 pass (one read of the source). Memory stays flat
  whatever the size. A rerun keeps staged files that already match the source, appends the missing tail
  of a truncated file (file:// only) and copies the rest.
* **verify and publish**: the staged tree is read back and compared with the sizes and hashes taken from
  the source; any difference fails and names the files. Then ``MANIFEST.json`` is written and the backup
  made visible under its final name in one step (file://: ``rename(<name>.partial, <name>)``; other
  stores: move, then write ``MANIFEST.json`` last).
* **reader rule**: a backup ``<destination>/<name>/`` is complete only when its ``MANIFEST.json`` exists,
  parses, its ``manifest_sha256`` matches its entries, and every listed file matches size and SHA-256.
  ``*.partial`` folders are never trusted.
* **retention** keeps the newest ``keep`` verified backups, never deletes the one just shipped, never
  deletes a folder without a verified manifest (it warns instead), and deletes stale ``.partial``
  staging folders of older backups with a warning.
* **freshness**: the newest verified backup at the destination must be younger than ``max_age_hours``,
  measured from when SpeechMiner finished writing it.
* **the destination is never escaped**: backup names are single folder names (no ``/``, ``..`` or
  control characters), and on local stores a symbolic link anywhere at the destination (staging folder,
  published copy, retention candidate, a file or folder inside them, and the destination root unless
  ``shipping.destination_may_be_link``) is refused with an error naming it, checked with ``lstat``
  before every write, rename and delete: nothing is followed, written or deleted through a link.
* **faults are not swallowed**: a failed ``fsync`` (file or folder), ``close`` or ``rename`` at the
  destination raises ``WriteFailed`` naming the file; the staged file is removed (its bytes may exist
  only in the page cache) and nothing is published.

Everything goes through ``ObjectStoragePath`` (file://, and any registered fsspec scheme). Its ``copy()``
is not used: between stores it appends the source key to the destination, and ``checksum()`` is not
comparable across stores, so files are streamed with the store's own ``open()`` and hashed on both sides.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from include.gir_ops.topology import Topology

log = logging.getLogger(__name__)

CHUNK_SIZE = 8 * 1024 * 1024  # large reads and writes: throughput on multi-GB segment files
PROGRESS_EVERY_SECONDS = 10.0
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "gir-speechminer-backup/1"
PARTIAL_SUFFIX = ".partial"
# A published copy being replaced by a newer verified one lives here for the moment of the swap.
RETIRED_SUFFIX = ".retired"
# Stores whose files can be reopened for append, so a truncated staged file only gets its missing tail.
APPEND_PROTOCOLS = frozenset({"file", "local"})
# Stores where renaming a folder is one atomic step (POSIX rename on one file system).
ATOMIC_RENAME_PROTOCOLS = frozenset({"file", "local"})
_MAX_NAMED_PROBLEMS = 20
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"(\d+)")


# --- errors --------------------------------------------------------------------------------------------


class BackupError(Exception):
    """Shipping cannot go on; the message names the folder or file and what to do."""


class BackupNotFound(BackupError):
    """No backup folder where the topology says SpeechMiner writes them."""


class BackupRefused(BackupError):
    """The backup contains something that must not be shipped: a symlink, a special file, a bad name."""


class SourceChanged(BackupError):
    """A source file changed while it was copied: SpeechMiner is still writing. Retrying is safe."""


class WriteFailed(BackupError, OSError):
    """An fsync, close or rename at the destination failed: nothing was published. Retrying is safe.

    An ``OSError`` too, so code that handles storage errors still sees it as one.
    """


class VerificationFailed(BackupError):
    """The destination does not hold what was read from the source; ``problems`` names every file."""

    def __init__(self, folder: str, problems: list[Problem]) -> None:
        self.folder = folder
        self.problems = problems
        super().__init__(
            f"verification of {folder} failed for {len(problems)} file(s): {_name_problems(problems)}"
        )


class PublishConflict(BackupError):
    """The final name is taken by something this DAG cannot safely replace."""


class BackupStale(BackupError):
    """The newest verified backup at the destination is too old (or there is none)."""


# --- small value types ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """One file of a backup as listed: relative POSIX path, size, modification time (if the store has one)."""

    path: str
    size: int
    mtime: float | None = None


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Problem:
    """One file that failed verification and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


@dataclass(frozen=True)
class ScanState:
    """What one readiness scan saw, as much as the next scan needs: small and JSON-safe for a trigger.

    ``signature`` is a digest of the listing (names, sizes, mtimes of files and folders);
    ``stable_since`` is when a scan first saw that listing; ``seen_change_at`` when a scan saw it change.
    """

    backup_name: str
    signature: str
    stable_since: float | None = None
    seen_change_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanState:
        return cls(
            backup_name=str(data["backup_name"]),
            signature=str(data["signature"]),
            stable_since=None if data.get("stable_since") is None else float(data["stable_since"]),
            seen_change_at=None if data.get("seen_change_at") is None else float(data["seen_change_at"]),
        )


@dataclass(frozen=True)
class Readiness:
    """Whether the newest backup folder is complete, and why (or why not)."""

    root: str
    backup_name: str
    complete: bool
    reason: str
    files: int
    bytes: int
    last_change: float | None
    signature: str
    seen_change_at: float | None = None
    stable_since: float | None = None

    @property
    def folder(self) -> str:
        return _join_url(self.root, self.backup_name)

    def scan_state(self) -> ScanState:
        return ScanState(self.backup_name, self.signature, self.stable_since, self.seen_change_at)

    def describe(self) -> str:
        when = _iso(self.last_change) if self.last_change is not None else "unknown"
        return (
            f"{self.folder}: {self.reason} ({self.files} files, {_human(self.bytes)}, last change at {when})"
        )

    def as_event(self) -> dict[str, Any]:
        return {
            "backup_name": self.backup_name,
            "folder": self.folder,
            "reason": self.reason,
            "files": self.files,
            "bytes": self.bytes,
            "last_change": _iso(self.last_change) if self.last_change is not None else None,
        }


@dataclass
class CopyResult:
    """What one copy run did; ``entries`` is the manifest, hashed from the bytes read at the source."""

    entries: list[ManifestEntry]
    bytes_total: int
    bytes_copied: int = 0
    files_copied: list[str] = field(default_factory=list)
    files_resumed: list[str] = field(default_factory=list)
    files_kept: list[str] = field(default_factory=list)
    extras_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class PublishedManifest:
    """A ``MANIFEST.json`` that parsed and whose digest matches its entries."""

    backup_name: str
    entries: list[ManifestEntry]
    manifest_sha256: str
    created_at: float | None
    shipped_at: float | None
    document: dict[str, Any]

    @property
    def bytes(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def as_of(self) -> float | None:
        """When the backup's content is from: SpeechMiner's last write, else when it was shipped."""
        return self.created_at if self.created_at is not None else self.shipped_at


# --- paths and formatting ------------------------------------------------------------------------------


def storage_path(url: str) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a topology URL (``scheme://[conn_id@]path``)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url)


def _join_url(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _parse_iso(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _human(size: float) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def _name_problems(problems: list[Problem]) -> str:
    named = "; ".join(str(problem) for problem in problems[:_MAX_NAMED_PROBLEMS])
    more = len(problems) - _MAX_NAMED_PROBLEMS
    return named + (f"; and {more} more" if more > 0 else "")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digits as numbers: ``b-9`` before ``b-10``, dates chronologically."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name) if part)


def _mtime(info: Mapping[str, Any]) -> float | None:
    """The modification time an fsspec ``info`` dict carries, whatever the store calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "time_modified"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
        parsed = _parse_iso(value)
        if parsed is not None:
            return parsed
    return None


def _is_local(path: ObjectStoragePath) -> bool:
    return (path.protocol or "file") in ATOMIC_RENAME_PROTOCOLS


def _printable(name: str) -> str:
    """``name`` safe for one log line: control characters (a newline forging a log line) escaped."""
    return _CONTROL_CHARS.sub(lambda match: f"\\x{ord(match.group()):02x}", name)


# --- backup names --------------------------------------------------------------------------------------


def check_backup_name(name: str, pattern: str = DEFAULT_BACKUP_NAME_PATTERN) -> str:
    """``name`` if it is a backup folder name this DAG may ship; ``BackupRefused`` saying why otherwise.

    A name is one folder (no ``/``, ``\\``, ``.`` or ``..``: it must not lead outside the source root or
    the destination), has no control character (it is written to logs), is not a name this DAG reserves
    (``*.partial``, ``*.retired``, ``MANIFEST.json``) and matches ``shipping.backup_name_pattern`` whole.
    """
    if not isinstance(name, str) or _CONTROL_CHARS.search(name):
        raise BackupRefused(
            f"backup folder name {name!r} contains a control character (a newline would forge log lines): "
            "refused; rename the folder at the source"
        )
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise BackupRefused(
            f"backup folder name {name!r} is not a single folder name ('/', '\\', '.' or '..'): it would "
            "lead outside the source or the destination folder; refused"
        )
    if name.endswith((PARTIAL_SUFFIX, RETIRED_SUFFIX)) or name == MANIFEST_NAME:
        raise BackupRefused(f"source folder {name!r} has a name this DAG reserves; rename it")
    if re.fullmatch(pattern, name) is None:
        raise BackupRefused(
            f"{name!r} is not a backup folder name: it does not match shipping.backup_name_pattern "
            f"{pattern!r}; set that pattern to SpeechMiner's naming"
        )
    return name


# --- symbolic links at the destination -----------------------------------------------------------------


def _link_target(path: ObjectStoragePath) -> str | None:
    """Where ``path`` points if it is a symbolic link on a local store (``lstat``: never followed).

    ``None`` when it is not a link, does not exist, or the store has no links (object stores).
    """
    if not _is_local(path):
        return None
    try:
        mode = os.lstat(path.path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISLNK(mode):
        return None
    try:
        return os.readlink(path.path)
    except OSError:
        return "?"


def _refuse_link(path: ObjectStoragePath, role: str) -> None:
    target = _link_target(path)
    if target is not None:
        raise BackupRefused(
            f"{path} ({role}) is a symbolic link to {_printable(target)}: this DAG never follows, writes, "
            "renames or deletes through a link at the destination; remove the link (and find out who "
            "made it), then rerun"
        )


def _refuse_links_on_the_way(base: ObjectStoragePath, relative: str, role: str) -> None:
    """No component of ``base/relative`` (``base`` included) is a link: checked right before a write."""
    _refuse_link(base, role)
    current = base
    for part in relative.split("/"):
        current = current / part
        _refuse_link(current, role)


def _refuse_links_inside(folder: ObjectStoragePath, role: str) -> None:
    """``folder`` and nothing inside it is a link (one listing): checked before a tree is deleted."""
    _refuse_link(folder, role)
    if not _is_local(folder) or not _lexists(folder):
        return
    for relative, info in _entries(folder):
        if info.get("islink"):
            name = relative if isinstance(relative, str) else str(info.get("name"))
            _refuse_link(folder / name, f"inside the {role}")


def _lexists(path: ObjectStoragePath) -> bool:
    """Exists, counting a dangling link as existing (local stores; elsewhere ``exists()``)."""
    if _is_local(path):
        return os.path.lexists(path.path)
    return bool(path.exists())


def check_destination_root(root: ObjectStoragePath, *, may_be_link: bool) -> None:
    """Refuse a destination root that is a symbolic link, unless ``shipping.destination_may_be_link``."""
    if may_be_link:
        return
    target = _link_target(root)
    if target is not None:
        raise BackupRefused(
            f"the destination {root} is a symbolic link to {_printable(target)}; this DAG does not follow "
            "it: point shipping.destination at the real folder, or set shipping.destination_may_be_link: "
            "true if the link is intended (links below it are still refused)"
        )


# --- walking a backup tree -----------------------------------------------------------------------------


def relative_name(root: str, name: str) -> str:
    """``name`` relative to ``root``, refusing anything that could land outside the folder when written."""
    root = root.rstrip("/")
    name = name.rstrip("/")
    if not name.startswith(root + "/"):
        raise BackupRefused(f"{name!r} is not inside {root!r}: a name that escapes the backup folder")
    relative = name[len(root) + 1 :]
    if "\\" in relative or _CONTROL_CHARS.search(relative):
        raise BackupRefused(
            f"{relative!r} in {root} contains a backslash or control character; it would name a different "
            "file on the destination: rename it at the source"
        )
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BackupRefused(f"{relative!r} in {root} escapes the backup folder ('..', '.' or empty part)")
    return relative


def _entries(
    folder: ObjectStoragePath, *, dirs: bool = False
) -> Iterator[tuple[str | BackupRefused, dict[str, Any]]]:
    """Every entry under ``folder`` but the sub-folders it descends into (unless ``dirs``), depth first.

    Yields (relative path, or the refusal of a name that escapes the folder, fs info). Symbolic links
    are yielded, never followed; a folder whose name is refused is yielded, not entered.
    """
    fs = folder.fs
    root = folder.path.rstrip("/")
    pending = [root]
    while pending:
        current = pending.pop()
        for info in fs.ls(current, detail=True):
            name = str(info["name"]).rstrip("/")
            if name == current:
                continue  # some object stores list the folder's own placeholder
            try:
                relative: str | BackupRefused = relative_name(root, name)
            except BackupRefused as refused:
                relative = refused
            if isinstance(relative, str) and info.get("type") == "directory" and not info.get("islink"):
                pending.append(name)
                if dirs:
                    yield relative, info
            else:
                yield relative, info


def _walk(folder: ObjectStoragePath, *, strict: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (relative path, info) for every regular file under ``folder``, depth first.

    ``strict`` refuses symlinks (files or folders), special files (FIFOs, sockets, devices) and bad names;
    otherwise those are skipped, which is what a completeness poll wants.
    """
    for relative, info in _entries(folder):
        if isinstance(relative, BackupRefused):
            if strict:
                raise relative
            continue
        if info.get("islink"):
            if strict:
                target = info.get("destination", "?")
                raise BackupRefused(
                    f"{relative} in {folder} is a symbolic link (to {target}); a backup must contain "
                    "only regular files: replace the link with the file, or fix SpeechMiner's backup"
                )
            continue
        if info.get("type") == "file":
            yield relative, info
        elif strict:
            raise BackupRefused(
                f"{relative} in {folder} is not a regular file (a FIFO, socket or device); "
                "a backup must contain only regular files"
            )


def scan_backup(
    folder: ObjectStoragePath, *, reserved: tuple[str, ...] = (MANIFEST_NAME,)
) -> list[SourceFile]:
    """List a backup folder (path, size, mtime), sorted by path; refuses what must not be shipped.

    Only names and sizes are held (a few hundred bytes per file), never file contents.
    """
    if not folder.exists():
        raise BackupNotFound(f"backup folder {folder} does not exist")
    files = []
    for relative, info in _walk(folder, strict=True):
        if relative in reserved:
            raise BackupRefused(
                f"{relative} in {folder} is a name this DAG reserves for its own manifest at the "
                "destination; rename it at the source"
            )
        files.append(SourceFile(relative, int(info.get("size") or 0), _mtime(info)))
    return sorted(files, key=lambda item: item.path)


# --- streaming and hashing -----------------------------------------------------------------------------


def _chunks(handle: Any, buffer: memoryview, limit: int | None = None) -> Iterator[memoryview]:
    """Read ``handle`` into one reused buffer: memory stays at one chunk whatever the file size."""
    readinto = getattr(handle, "readinto", None)
    left = limit
    while left is None or left > 0:
        view = buffer if left is None or left >= len(buffer) else buffer[:left]
        if readinto is not None:
            count = readinto(view)
        else:  # a store's file object without readinto: read() allocates one chunk at a time
            data = handle.read(len(view))
            count = len(data)
            view[:count] = data
        if not count:
            return
        if left is not None:
            left -= count
        yield view[:count]


def hash_file(
    path: ObjectStoragePath,
    *,
    chunk_size: int = CHUNK_SIZE,
    buffer: memoryview | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[int, str]:
    """Size and SHA-256 of one file, streamed (through ``buffer`` when given; ``on_chunk`` sees each read)."""
    if buffer is None:
        buffer = memoryview(bytearray(chunk_size))
    digest = hashlib.sha256()
    size = 0
    with path.fs.open(path.path, "rb", block_size=chunk_size) as handle:
        for chunk in _chunks(handle, buffer):
            digest.update(chunk)
            size += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return size, digest.hexdigest()


def build_manifest(folder: ObjectStoragePath, *, chunk_size: int = CHUNK_SIZE) -> list[ManifestEntry]:
    """Path, size and SHA-256 of every file in ``folder`` (refusing symlinks etc.), streamed, by path."""
    entries = []
    buffer = memoryview(bytearray(chunk_size))
    for item in scan_backup(folder):
        size, sha256 = hash_file(folder / item.path, chunk_size=chunk_size, buffer=buffer)
        entries.append(ManifestEntry(item.path, size, sha256))
    return entries


def manifest_digest(entries: list[ManifestEntry]) -> str:
    """SHA-256 over the canonical entry list: the same backup content always gives the same digest."""
    canonical = [[entry.path, entry.size, entry.sha256] for entry in sorted(entries, key=lambda e: e.path)]
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Progress:
    """Logs bytes done, percent and MB/s on a steady clock (every ``every`` seconds) and once at the end."""

    def __init__(
        self,
        label: str,
        total: int,
        files: int,
        *,
        every: float,
        clock: Callable[[], float],
    ) -> None:
        self.label = label
        self.total = total
        self.files = files
        self.every = every
        self.clock = clock
        self.started = clock()
        self.last_logged = self.started
        self.done = 0  # bytes accounted for (copied, appended or found already staged)
        self.written = 0  # bytes actually written at the destination
        self.file_index = 0
        self.lines = 0

    def advance(self, count: int, *, written: bool) -> None:
        self.done += count
        if written:
            self.written += count
        now = self.clock()
        if now - self.last_logged >= self.every:
            self._log(now)

    def finish(self) -> float:
        now = self.clock()
        self._log(now, final=True)
        return now - self.started

    def _log(self, now: float, *, final: bool = False) -> None:
        self.last_logged = now
        self.lines += 1
        elapsed = max(now - self.started, 1e-9)
        percent = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.written / elapsed / 1e6
        log.info(
            "%s%s: %s of %s (%.1f%%), %s written at %.1f MB/s, file %d/%d, %.0f s",
            self.label,
            " done" if final else "",
            _human(self.done),
            _human(self.total),
            percent,
            _human(self.written),
            rate,
            self.file_index,
            self.files,
            elapsed,
        )


def _staged_sizes(staging: ObjectStoragePath) -> tuple[dict[str, int], list[str]]:
    """Files already in a staging folder (relative path -> size), and entries to throw away (odd files).

    A symbolic link anywhere in it is refused (never followed, never deleted through).
    """
    if not _lexists(staging):
        return {}, []
    sizes: dict[str, int] = {}
    junk: list[str] = []
    for relative, info in _entries(staging):
        if isinstance(relative, BackupRefused):
            continue
        if info.get("islink"):
            _refuse_link(staging / relative, "inside the staging folder")
            raise BackupRefused(
                f"{staging}/{relative} is a symbolic link inside the staging folder; remove it"
            )
        if info.get("type") != "file":
            junk.append(relative)
        else:
            sizes[relative] = int(info.get("size") or 0)
    return sizes, junk


def _discard(path: ObjectStoragePath) -> None:
    """Best-effort removal of a staged file whose bytes cannot be trusted (never through a link)."""
    with contextlib.suppress(Exception):
        if _link_target(path) is None and _lexists(path):
            path.fs.rm(path.path)


@contextlib.contextmanager
def _writing(path: ObjectStoragePath, mode: str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[Any]:
    """Open ``path`` for writing; on success flush, fsync (local stores) and close, and any failure of
    those raises ``WriteFailed`` naming the file, after removing it.

    Never suppressed: after a failed fsync the kernel may drop the dirty pages while a read still returns
    them from the page cache, so the file is removed and a retry writes it again instead of keeping it.
    """
    handle = path.fs.open(path.path, mode, block_size=chunk_size)
    try:
        yield handle
    except BaseException:
        with contextlib.suppress(Exception):
            handle.close()
        raise
    step = "flush"
    try:
        handle.flush()
        if _is_local(path):
            step = "fsync"
            os.fsync(handle.fileno())
        step = "close"
        handle.close()
    except OSError as exc:
        with contextlib.suppress(Exception):
            handle.close()
        _discard(path)
        raise WriteFailed(
            f"{step} of {path} failed ({exc}): its bytes may not be on the destination's disk, so nothing "
            "is published; the staged file was removed and a retry copies it again"
        ) from exc


def _fsync_file(path: ObjectStoragePath) -> None:
    """fsync a staged file kept from an earlier attempt (that attempt may have died before its fsync)."""
    if not _is_local(path):
        return
    try:
        fd = os.open(path.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _discard(path)
        raise WriteFailed(
            f"fsync of {path} failed ({exc}): nothing is published; the staged file was removed and a retry "
            "copies it again"
        ) from exc


def copy_backup(
    source: ObjectStoragePath,
    files: list[SourceFile],
    staging: ObjectStoragePath,
    *,
    last: str | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress_every: float = PROGRESS_EVERY_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> CopyResult:
    """Stream ``files`` from ``source`` into ``staging``, hashing the source bytes as they are read.

    Resumes a crashed run: a staged file of the same size whose SHA-256 equals the source's is kept; a
    shorter one whose bytes match the start of the source gets only its missing tail appended (stores in
    ``APPEND_PROTOCOLS``); anything else is copied again. Staged files that are not in ``files`` are
    removed. ``last`` (the ready marker) is copied last. Raises ``SourceChanged`` when a file's size or
    mtime moved while it was read.
    """
    ordered = sorted(files, key=lambda item: (item.path == last, item.path))
    total = sum(item.size for item in ordered)
    result = CopyResult(entries=[], bytes_total=total)
    progress = _Progress(
        f"copy {source.name} -> {staging}", total, len(ordered), every=progress_every, clock=clock
    )
    _refuse_link(staging, "staging folder")
    staged, junk = _staged_sizes(staging)
    wanted = {item.path for item in ordered}
    for relative in sorted(junk) + sorted(set(staged) - wanted):
        log.warning("removing %s from staging %s: not a file of the source backup", relative, staging)
        _refuse_links_on_the_way(staging, relative, "staging folder")
        (staging / relative).fs.rm((staging / relative).path)
        result.extras_removed.append(relative)
    staging.fs.makedirs(staging.path, exist_ok=True)
    buffer = memoryview(bytearray(chunk_size))
    can_append = (staging.protocol or "file") in APPEND_PROTOCOLS
    made_dirs: set[str] = set()
    for index, item in enumerate(ordered, start=1):
        progress.file_index = index
        src = source / item.path
        dst = staging / item.path
        # Checked before every write: a link made after the listing is still never written through.
        _refuse_links_on_the_way(staging, item.path, "staging folder")
        parent = dst.fs._parent(dst.path)
        if parent not in made_dirs:
            dst.fs.makedirs(parent, exist_ok=True)
            made_dirs.add(parent)
        staged_size = staged.get(item.path)
        entry: ManifestEntry | None = None
        if staged_size is not None and staged_size == item.size:
            entry = _keep_if_same(
                src, dst, item=item, buffer=buffer, progress=progress, chunk_size=chunk_size
            )
            if entry is not None:
                _fsync_file(dst)
                result.files_kept.append(item.path)
        elif staged_size is not None and 0 < staged_size < item.size and can_append:
            entry = _append_tail(
                src,
                dst,
                item=item,
                staged_size=staged_size,
                buffer=buffer,
                progress=progress,
                chunk_size=chunk_size,
            )
            if entry is not None:
                result.files_resumed.append(item.path)
                result.bytes_copied += item.size - staged_size
        if entry is None:
            entry = _copy_file(src, dst, item=item, buffer=buffer, progress=progress, chunk_size=chunk_size)
            result.files_copied.append(item.path)
            result.bytes_copied += item.size
        _check_unchanged(src, item)
        result.entries.append(entry)
    # The folders' entries must be durable too, or a crash can lose a whole verified file.
    if _is_local(staging):
        for folder in sorted(made_dirs | {staging.path}, key=len, reverse=True):
            _fsync_local_dir(folder)
    result.seconds = progress.finish()
    result.entries.sort(key=lambda e: e.path)
    return result


def _copy_file(
    src: ObjectStoragePath,
    dst: ObjectStoragePath,
    *,
    item: SourceFile,
    buffer: memoryview,
    progress: _Progress,
    chunk_size: int,
) -> ManifestEntry:
    digest = hashlib.sha256()
    with (
        src.fs.open(src.path, "rb", block_size=chunk_size) as reader,
        _writing(dst, "wb", chunk_size=chunk_size) as writer,
    ):
        size = _pump(reader, writer, digest=digest, buffer=buffer, progress=progress)
    _check_size(src, item, size)
    return ManifestEntry(item.path, size, digest.hexdigest())


def _pump(reader: Any, writer: Any, *, digest: Any, buffer: memoryview, progress: _Progress) -> int:
    """Copy the rest of ``reader`` to ``writer`` through ``buffer``, hashing what passes; bytes copied."""
    copied = 0
    for chunk in _chunks(reader, buffer):
        digest.update(chunk)
        writer.write(chunk)
        copied += len(chunk)
        progress.advance(len(chunk), written=True)
    return copied


def _keep_if_same(
    src: ObjectStoragePath,
    dst: ObjectStoragePath,
    *,
    item: SourceFile,
    buffer: memoryview,
    progress: _Progress,
    chunk_size: int,
) -> ManifestEntry | None:
    """A staged file of the right size is kept when its SHA-256 equals the source's (both read once)."""
    _, staged_sha = hash_file(dst, chunk_size=chunk_size, buffer=buffer)
    size, source_sha = hash_file(
        src, chunk_size=chunk_size, buffer=buffer, on_chunk=lambda n: progress.advance(n, written=False)
    )
    _check_size(src, item, size)
    if source_sha == staged_sha:
        return ManifestEntry(item.path, size, staged_sha)
    log.info("staged %s differs from the source: copying it again", item.path)
    progress.done -= size
    return None


def _append_tail(
    src: ObjectStoragePath,
    dst: ObjectStoragePath,
    *,
    item: SourceFile,
    staged_size: int,
    buffer: memoryview,
    progress: _Progress,
    chunk_size: int,
) -> ManifestEntry | None:
    """A truncated staged file whose bytes equal the source's start gets only the missing tail."""
    _, staged_sha = hash_file(dst, chunk_size=chunk_size, buffer=buffer)
    digest = hashlib.sha256()
    with src.fs.open(src.path, "rb", block_size=chunk_size) as reader:
        prefix = 0
        for chunk in _chunks(reader, buffer, limit=staged_size):
            digest.update(chunk)
            prefix += len(chunk)
        if prefix != staged_size or digest.copy().hexdigest() != staged_sha:
            log.info("staged %s is not a prefix of the source: copying it again", item.path)
            return None
        progress.advance(prefix, written=False)
        with _writing(dst, "ab", chunk_size=chunk_size) as writer:
            size = prefix + _pump(reader, writer, digest=digest, buffer=buffer, progress=progress)
    _check_size(src, item, size)
    log.info("resumed %s: kept %s staged, appended %s", item.path, _human(prefix), _human(size - prefix))
    return ManifestEntry(item.path, size, digest.hexdigest())


def _check_size(src: ObjectStoragePath, item: SourceFile, size: int) -> None:
    if size != item.size:
        raise SourceChanged(
            f"{src} was {item.size} bytes when listed but {size} bytes were read: SpeechMiner is still "
            "writing this backup; the retry resumes once it is complete"
        )


def _check_unchanged(src: ObjectStoragePath, item: SourceFile) -> None:
    info = src.fs.info(src.path)
    size, mtime = int(info.get("size") or 0), _mtime(info)
    if size != item.size or (item.mtime is not None and mtime is not None and mtime != item.mtime):
        raise SourceChanged(
            f"{src} changed while it was copied (size {item.size} -> {size}, mtime {_iso(item.mtime)} -> "
            f"{_iso(mtime)}): SpeechMiner is still writing this backup; the retry resumes once it is complete"
        )


# --- verification --------------------------------------------------------------------------------------


def verify_tree(
    folder: ObjectStoragePath,
    entries: list[ManifestEntry],
    *,
    chunk_size: int = CHUNK_SIZE,
    ignore: tuple[str, ...] = (MANIFEST_NAME,),
) -> list[Problem]:
    """Read ``folder`` back and compare every file with ``entries``; returns every difference, by file."""
    if not folder.exists():
        return [Problem(str(folder), "folder missing")]
    expected = {entry.path: entry for entry in entries}
    problems: list[Problem] = []
    try:
        actual = {relative: int(info.get("size") or 0) for relative, info in _walk(folder, strict=True)}
    except BackupRefused as exc:
        return [Problem(str(folder), str(exc))]
    for relative in sorted(set(actual) - set(expected) - set(ignore)):
        problems.append(Problem(relative, "not in the manifest"))
    buffer = memoryview(bytearray(chunk_size))
    for relative, entry in sorted(expected.items()):
        if relative not in actual:
            problems.append(Problem(relative, "missing"))
            continue
        if actual[relative] != entry.size:
            problems.append(Problem(relative, f"size {actual[relative]} bytes, expected {entry.size}"))
            continue
        size, sha256 = hash_file(folder / relative, chunk_size=chunk_size, buffer=buffer)
        if size != entry.size:
            problems.append(Problem(relative, f"read {size} bytes, expected {entry.size}"))
        elif sha256 != entry.sha256:
            problems.append(Problem(relative, f"SHA-256 {sha256[:12]}..., expected {entry.sha256[:12]}..."))
    return problems


# --- manifests at the destination ----------------------------------------------------------------------


def manifest_document(
    *,
    backup_name: str,
    entries: list[ManifestEntry],
    source: str,
    source_site: str,
    site: str,
    created_at: float | None,
    shipped_at: float,
    source_mtimes: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    mtimes = source_mtimes or {}
    return {
        "format": MANIFEST_FORMAT,
        "backup_name": backup_name,
        "source_site": source_site,
        "site": site,
        "source": source,
        "created_at": _iso(created_at),
        "shipped_at": _iso(shipped_at),
        "files": len(entries),
        "bytes": sum(entry.size for entry in entries),
        "manifest_sha256": manifest_digest(entries),
        "reader_rule": (
            "trust this backup only if manifest_sha256 matches the entries and every file matches its "
            "size and sha256; folders ending in .partial are never complete"
        ),
        "entries": [
            {"path": e.path, "size": e.size, "sha256": e.sha256, "source_mtime": mtimes.get(e.path)}
            for e in sorted(entries, key=lambda e: e.path)
        ],
    }


def read_manifest(folder: ObjectStoragePath) -> PublishedManifest | None:
    """The folder's ``MANIFEST.json`` if it exists; raises ``BackupError`` if it exists but is not valid."""
    path = folder / MANIFEST_NAME
    target = _link_target(path)
    if target is not None:
        raise BackupError(
            f"{path} is a symbolic link to {_printable(target)}, not a manifest this DAG wrote: not trusted"
        )
    if not path.exists():
        return None
    try:
        with path.fs.open(path.path, "rb") as handle:
            document = json.loads(handle.read().decode("utf-8"))
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        entries = [
            ManifestEntry(str(e["path"]), int(e["size"]), str(e["sha256"])) for e in document["entries"]
        ]
        digest = manifest_digest(entries)
        if digest != document.get("manifest_sha256"):
            raise ValueError("manifest_sha256 does not match its entries (edited or damaged)")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{path} is not a valid manifest: {exc}") from None
    return PublishedManifest(
        backup_name=str(document.get("backup_name") or folder.name),
        entries=entries,
        manifest_sha256=digest,
        created_at=_parse_iso(document.get("created_at")),
        shipped_at=_parse_iso(document.get("shipped_at")),
        document=document,
    )


def _write_json(path: ObjectStoragePath, document: Mapping[str, Any]) -> None:
    data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    _refuse_link(path, "manifest")
    with _writing(path, "wb") as handle:
        handle.write(data)


def _fsync_local_dir(path: str) -> None:
    """fsync a local folder (its entries: new, renamed and deleted names); a failure is ``WriteFailed``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise WriteFailed(
            f"fsync of the folder {path} failed ({exc}): its entries may not be on disk, so nothing is "
            "published"
        ) from exc


def _fsync_dir(path: ObjectStoragePath) -> None:
    if _is_local(path):
        _fsync_local_dir(path.path)


def _rename(src: ObjectStoragePath, dst: ObjectStoragePath) -> None:
    """One POSIX rename on a local store; a failure is ``WriteFailed`` naming both folders."""
    try:
        os.rename(src.path, dst.path)
    except OSError as exc:
        raise WriteFailed(f"renaming {src} to {dst} failed ({exc})") from exc


def _sibling(folder: ObjectStoragePath, suffix: str) -> ObjectStoragePath:
    return folder.parent / f"{folder.name}{suffix}"


def _remove_tree(path: ObjectStoragePath, role: str = "backup folder") -> None:
    """Delete a folder: its manifest first, so no reader sees a half-deleted backup as complete.

    Refused (``BackupRefused``, nothing deleted) when the folder or anything inside it is a link.
    """
    _refuse_links_inside(path, role)
    manifest = path / MANIFEST_NAME
    if _lexists(manifest):
        manifest.fs.rm(manifest.path)
    if _lexists(path):
        path.fs.rm(path.path, recursive=True)


def _undo_rename(src: ObjectStoragePath, dst: ObjectStoragePath) -> None:
    try:
        os.rename(src.path, dst.path)
    except OSError as exc:
        log.error("could not rename %s back to %s (%s): check the destination by hand", src, dst, exc)


def publish(
    staging: ObjectStoragePath,
    final: ObjectStoragePath,
    document: Mapping[str, Any],
    *,
    replace: str | None = None,
) -> None:
    """Make a verified staged backup visible under its final name in one step.

    file://: ``MANIFEST.json`` is written inside the staging folder, then the folder is renamed (one POSIX
    rename: a reader sees either no ``<name>`` or the complete one). Other stores cannot rename a folder
    atomically: the files are moved first and ``MANIFEST.json`` is written last, so the reader rule (only
    a folder with a valid manifest is complete) holds at every moment.

    ``replace`` is the ``manifest_sha256`` of a published copy this verified one replaces (the source
    changed since it was shipped): the old copy stays published until this moment, then is swapped out
    (renamed to ``<name>.retired``, the new one renamed in, the old one deleted). Any other existing
    ``<name>`` is a ``PublishConflict``. A failed rename or folder fsync undoes the swap: the old copy
    (or nothing) stays published.
    """
    _refuse_link(staging, "staging folder")
    _refuse_link(final, "published backup")
    retired = _sibling(final, RETIRED_SUFFIX)
    _refuse_link(retired, "replaced backup")
    present = _lexists(final)
    if present and replace is None:
        raise PublishConflict(
            f"{final} already exists; move it away (or delete it if it is not a backup you need), then rerun"
        )
    if present:
        current = read_manifest(final)
        if current is None or current.manifest_sha256 != replace:
            raise PublishConflict(
                f"{final} is not the published copy this run planned to replace (its MANIFEST.json changed); "
                "nothing was published: rerun"
            )
        if _lexists(retired):
            log.warning("removing %s, left over from an interrupted swap", retired)
            _remove_tree(retired, "replaced backup")
    if _is_local(staging) and _is_local(final):
        _publish_by_rename(staging, final, document, retired=retired if present else None)
        return
    if present:
        _refuse_links_inside(final, "published backup")
        (final / MANIFEST_NAME).fs.rm((final / MANIFEST_NAME).path)
        final.fs.mv(final.path, retired.path, recursive=True)
    staging.fs.mv(staging.path, final.path, recursive=True)
    expected = {entry["path"]: entry["size"] for entry in document["entries"]}
    moved = {relative: int(info.get("size") or 0) for relative, info in _walk(final, strict=True)}
    if moved != expected:
        raise PublishConflict(f"{final}: the moved files do not match the verified staging; rerun to re-ship")
    _write_json(final / MANIFEST_NAME, document)
    if present:
        _drop_retired(retired)


def _publish_by_rename(
    staging: ObjectStoragePath,
    final: ObjectStoragePath,
    document: Mapping[str, Any],
    *,
    retired: ObjectStoragePath | None,
) -> None:
    """file://: manifest into staging, fsync, rename (swapping out the old copy via ``retired``), fsync."""
    _write_json(staging / MANIFEST_NAME, document)
    _fsync_dir(staging)
    if retired is not None:
        _rename(final, retired)  # the old, complete copy leaves its name only now
        try:
            _rename(staging, final)
        except WriteFailed:
            _undo_rename(retired, final)
            raise
    else:
        _rename(staging, final)
    try:
        _fsync_dir(final.parent)
    except WriteFailed:
        _undo_rename(final, staging)
        if retired is not None:
            _undo_rename(retired, final)
        raise
    if retired is not None:
        _drop_retired(retired)


def _drop_retired(retired: ObjectStoragePath) -> None:
    """Delete the copy a swap replaced; a failure only warns (retention deletes it later)."""
    try:
        _remove_tree(retired, "replaced backup")
    except (BackupError, OSError) as exc:
        log.warning("could not delete the replaced copy %s (%s); retention deletes it later", retired, exc)


def unpublish(final: ObjectStoragePath, staging: ObjectStoragePath) -> None:
    """Withdraw a published backup that failed verification, keeping its files as staging to resume from.

    Refused, with nothing changed, when the published folder, its manifest or the staging folder is a link.
    """
    _refuse_link(final, "published backup")
    manifest = final / MANIFEST_NAME
    _refuse_link(manifest, "manifest")
    _refuse_link(staging, "staging folder")
    if _lexists(manifest):
        manifest.fs.rm(manifest.path)  # from here on no reader trusts it
    if _lexists(staging):
        log.warning("removing stale staging %s before withdrawing %s into it", staging, final)
        _remove_tree(staging, "staging folder")
    if _is_local(final) and _is_local(staging):
        _rename(final, staging)
        _fsync_dir(final.parent)
    else:
        final.fs.mv(final.path, staging.path, recursive=True)


def restore_interrupted_swap(final: ObjectStoragePath) -> bool:
    """A crash between the two renames of a swap leaves ``<name>.retired`` and no ``<name>``: put the old,
    verified copy back under its name (file:// only). True when it did."""
    retired = _sibling(final, RETIRED_SUFFIX)
    if not _is_local(final) or _lexists(final) or not _lexists(retired):
        return False
    _refuse_links_inside(retired, "replaced backup")
    try:
        manifest = read_manifest(retired)
    except BackupError:
        manifest = None
    if manifest is None:
        return False
    log.warning(
        "restoring %s from %s: a swap was interrupted before the new copy was renamed in", final, retired
    )
    _rename(retired, final)
    _fsync_dir(final.parent)
    return True


# --- finding and waiting for the newest source backup --------------------------------------------------


def _scan_root(root: ObjectStoragePath, pattern: str) -> tuple[list[str], list[str]]:
    """(backup folder names, oldest first; names of the other entries, printable) under ``root``."""
    if not root.exists():
        raise BackupNotFound(
            f"{root} does not exist: SpeechMiner's Daily Index Backup is not where the topology says; "
            "check the source DC's speechminer.index_backup and SpeechMiner's backup configuration "
            "(SMConfig > Index)"
        )
    names: list[str] = []
    ignored: list[str] = []
    for info in root.fs.ls(root.path, detail=True):
        full = str(info["name"]).rstrip("/")
        if full == root.path.rstrip("/"):
            continue
        name = full.rsplit("/", 1)[-1]
        if info.get("islink"):
            log.warning("ignoring %s/%s: a symbolic link, not a backup folder", root, _printable(name))
        elif info.get("type") == "directory":
            try:
                names.append(check_backup_name(name, pattern))
                continue
            except BackupRefused as refused:
                if _CONTROL_CHARS.search(name):
                    # Never chosen, and never written to a log as it is: it could forge log lines.
                    log.warning("refusing %s/%s: %s", root, _printable(name), "control character in the name")
                else:
                    log.debug("ignoring %s/%s: %s", root, name, refused)
        ignored.append(_printable(name))
    return sorted(names, key=natural_key), sorted(ignored)


def list_backups(root: ObjectStoragePath, *, pattern: str = DEFAULT_BACKUP_NAME_PATTERN) -> list[str]:
    """Backup folder names under ``root``, oldest first (natural name order).

    Only folders whose name matches ``pattern`` (``shipping.backup_name_pattern``) and passes
    ``check_backup_name``: symbolic links, ``tmp``, ``lost+found``, dot-folders and names with control
    characters are never backups.
    """
    return _scan_root(root, pattern)[0]


def newest_backup(root: ObjectStoragePath, *, pattern: str = DEFAULT_BACKUP_NAME_PATTERN) -> str:
    names, ignored = _scan_root(root, pattern)
    if not names:
        skipped = ""
        if ignored:
            shown = ", ".join(ignored[:10]) + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
            skipped = f" (not backups, ignored: {shown})"
        raise BackupNotFound(
            f"no backup folder under {root} whose name matches shipping.backup_name_pattern {pattern!r}"
            f"{skipped}: SpeechMiner has not written any Daily Index Backup there; check its backup "
            "configuration (SMConfig > Index), the source DC's speechminer.index_backup and the pattern"
        )
    return names[-1]


def _listing(
    folder: ObjectStoragePath,
) -> tuple[list[tuple[str, int, float | None]], list[tuple[str, float | None]]]:
    """Files (path, size, mtime) and folders (path/, mtime; the backup folder itself is '') of a backup."""
    files: list[tuple[str, int, float | None]] = []
    folders: list[tuple[str, float | None]] = [("", _mtime(folder.fs.info(folder.path)))]
    for relative, info in _entries(folder, dirs=True):
        if isinstance(relative, BackupRefused) or info.get("islink"):
            continue
        if info.get("type") == "directory":
            folders.append((f"{relative}/", _mtime(info)))
        elif info.get("type") == "file":
            files.append((relative, int(info.get("size") or 0), _mtime(info)))
    return sorted(files), sorted(folders)


def backup_readiness(
    root_url: str,
    *,
    ready_marker: str | None,
    quiet_seconds: float,
    now: float | None = None,
    previous: Readiness | ScanState | None = None,
    name_pattern: str = DEFAULT_BACKUP_NAME_PATTERN,
) -> Readiness:
    """Is the newest backup under ``root_url`` complete? Cheap: one listing, no file contents.

    With ``ready_marker`` the marker decides. Without it both must hold:

    * quiet: the last change, the newest mtime of any file **or folder** (a file added, renamed or
      deleted moves its folder's mtime) or, if later, the moment a previous scan saw the listing change,
      is at least ``quiet_seconds`` ago;
    * stable: a previous scan (``previous``) of the same folder listed the same names, sizes and mtimes
      at least ``quiet_seconds`` ago. A first look is never complete: a copy that keeps old mtimes
      (``cp -p``, robocopy) looks quiet from its first second.

    Raises ``BackupNotFound`` when there is no backup folder.
    """
    now = time.time() if now is None else now
    root = storage_path(root_url)
    name = newest_backup(root, pattern=name_pattern)
    folder = root / name
    files, folders = _listing(folder)
    signature = hashlib.sha256(json.dumps([files, folders], ensure_ascii=False).encode("utf-8")).hexdigest()
    before = previous.scan_state() if isinstance(previous, Readiness) else previous
    same_folder = before is not None and before.backup_name == name
    unchanged = same_folder and before is not None and before.signature == signature
    seen = before.seen_change_at if same_folder and before is not None else None
    if before is not None and not unchanged:
        seen = now
    stable_since = before.stable_since if unchanged and before is not None else None
    stable_since = now if stable_since is None else stable_since
    mtimes = [mtime for _, _, mtime in files if mtime is not None]
    mtimes += [mtime for _, mtime in folders if mtime is not None]
    candidates = [*mtimes, *([seen] if seen is not None else [])]
    last_change = max(candidates) if candidates else None
    total = sum(size for _, size, _ in files)
    quiet_for = None if last_change is None else now - last_change
    stable_for = now - stable_since
    if ready_marker:
        complete = any(relative == ready_marker for relative, _, _ in files)
        reason = f"marker {ready_marker} found" if complete else f"marker {ready_marker} not found"
    elif not files:
        complete, reason = False, "folder is empty"
    elif quiet_for is not None and quiet_for < quiet_seconds:
        complete = False
        reason = f"still changing: quiet for {max(quiet_for, 0):.0f} s of the {quiet_seconds:.0f} s required"
    elif not unchanged:
        complete = False
        reason = (
            "first look at this listing: complete once a scan at least "
            f"{quiet_seconds:.0f} s later sees the same names, sizes and mtimes"
        )
    elif stable_for < quiet_seconds:
        complete = False
        reason = f"same listing for {stable_for:.0f} s of the {quiet_seconds:.0f} s required"
    else:
        complete = True
        quiet = stable_for if quiet_for is None else min(quiet_for, stable_for)
        reason = (
            f"quiet for {quiet:.0f} s (>= {quiet_seconds:.0f} s), the same listing on two scans "
            f"{stable_for:.0f} s apart"
        )
    return Readiness(
        root=str(root),
        backup_name=name,
        complete=complete,
        reason=reason,
        files=len(files),
        bytes=total,
        last_change=last_change,
        signature=signature,
        seen_change_at=seen,
        stable_since=stable_since,
    )


# --- the destination as a whole: retention and freshness -----------------------------------------------


@dataclass
class DestinationState:
    verified: dict[str, PublishedManifest] = field(default_factory=dict)
    unverified: dict[str, str] = field(default_factory=dict)  # folder name -> why it is not trusted
    partials: list[str] = field(default_factory=list)  # backup names with a <name>.partial folder
    retired: list[str] = field(default_factory=list)  # backup names with a <name>.retired folder
    other: list[str] = field(default_factory=list)  # files or links at the top level
    links: dict[str, str] = field(default_factory=dict)  # top-level symbolic links -> their target


def destination_state(destination: ObjectStoragePath) -> DestinationState:
    """Classify everything at the top of the destination; reads manifests only, never backup contents.

    A symbolic link is never entered: it is listed in ``other`` and ``links``.
    """
    state = DestinationState()
    if not destination.exists():
        return state
    for info in destination.fs.ls(destination.path, detail=True):
        full = str(info["name"]).rstrip("/")
        if full == destination.path.rstrip("/"):
            continue
        name = full.rsplit("/", 1)[-1]
        if info.get("islink"):
            state.other.append(name)
            state.links[name] = _printable(str(info.get("destination", "?")))
        elif info.get("type") != "directory":
            state.other.append(name)
        elif name.endswith(PARTIAL_SUFFIX):
            state.partials.append(name[: -len(PARTIAL_SUFFIX)])
        elif name.endswith(RETIRED_SUFFIX):
            state.retired.append(name[: -len(RETIRED_SUFFIX)])
        else:
            try:
                manifest = read_manifest(destination / name)
            except BackupError as exc:
                state.unverified[name] = str(exc)
                continue
            if manifest is None:
                state.unverified[name] = f"no {MANIFEST_NAME}"
            else:
                state.verified[name] = manifest
    return state


@dataclass
class RetentionResult:
    kept: list[str]
    deleted: list[str]
    partials_deleted: list[str]
    unverified_left: list[str]
    other_left: list[str]
    retired_deleted: list[str] = field(default_factory=list)


def apply_retention(
    destination: ObjectStoragePath,
    *,
    keep: int,
    protect: str | None,
    destination_may_be_link: bool = False,
) -> RetentionResult:
    """Keep the newest ``keep`` verified backups (natural name order) and ``protect``; delete older ones.

    Never fewer than one. A folder without a verified manifest is never deleted: a warning names it.
    A ``<name>.partial`` staging folder is deleted (with a warning) when a verified ``<name>`` exists or
    ``<name>`` is older than the newest verified backup: this DAG always ships the newest backup, so such a
    staging folder would never be resumed. Newer staging folders are left for the next run to resume.
    A ``<name>.retired`` folder (a swap interrupted after the new copy was renamed in) is deleted when
    ``<name>`` is verified.

    Symbolic links are never followed or deleted through: a candidate that is or contains a link is left
    alone, a link at the top is left alone, and after everything else was pruned ``BackupRefused`` names
    them all.
    """
    check_destination_root(destination, may_be_link=destination_may_be_link)
    keep = max(1, keep)
    state = destination_state(destination)
    refused: list[str] = [
        f"{destination}/{name} (a link to {target})" for name, target in state.links.items()
    ]

    def remove(name: str, role: str) -> bool:
        try:
            _remove_tree(destination / name, role)
        except BackupRefused as exc:
            log.error("retention: NOT deleting %s/%s: %s", destination, name, exc)
            refused.append(str(exc))
            return False
        return True

    ordered = sorted(state.verified, key=natural_key)
    kept = set(ordered[-keep:])
    if protect is not None and protect in state.verified:
        kept.add(protect)
    deleted = []
    for name in ordered:
        if name in kept:
            continue
        log.info("retention: deleting verified backup %s/%s (keeping the newest %d)", destination, name, keep)
        if remove(name, "backup folder"):
            deleted.append(name)
    for name, why in sorted(state.unverified.items()):
        log.warning(
            "retention: NOT deleting %s/%s: it has no verified manifest (%s); inspect it and delete it by "
            "hand if it is not needed",
            destination,
            name,
            why,
        )
    newest = ordered[-1] if ordered else None
    partials_deleted = [
        f"{name}{PARTIAL_SUFFIX}"
        for name in _stale_partials(destination, state, protect=protect, newest=newest)
        if remove(f"{name}{PARTIAL_SUFFIX}", "staging folder")
    ]
    retired_deleted = [
        f"{name}{RETIRED_SUFFIX}"
        for name in _replaced_copies(destination, state)
        if remove(f"{name}{RETIRED_SUFFIX}", "replaced backup")
    ]
    for name in state.other:
        if name not in state.links:
            log.warning("retention: leaving %s/%s alone: not a backup folder", destination, name)
    if refused:
        raise BackupRefused(
            f"retention at {destination} refused {len(refused)} symbolic link(s), never followed or deleted "
            f"through: {'; '.join(refused)}. Everything else was pruned; remove the links by hand (and find "
            "out who made them): the destination belongs to this DAG"
        )
    return RetentionResult(
        kept=sorted(kept, key=natural_key),
        deleted=deleted,
        partials_deleted=partials_deleted,
        unverified_left=sorted(state.unverified),
        other_left=sorted(state.other),
        retired_deleted=retired_deleted,
    )


def _stale_partials(
    destination: ObjectStoragePath, state: DestinationState, *, protect: str | None, newest: str | None
) -> list[str]:
    """Backup names whose ``.partial`` staging folder will never be resumed (warned about)."""
    stale_names = []
    for name in sorted(state.partials, key=natural_key):
        if name == protect and name not in state.verified:
            continue
        stale = name in state.verified or (newest is not None and natural_key(name) < natural_key(newest))
        if not stale:
            continue
        log.warning(
            "retention: deleting stale staging folder %s/%s%s: an unfinished copy of an older backup that "
            "will never be resumed (readers never trust .partial folders)",
            destination,
            name,
            PARTIAL_SUFFIX,
        )
        stale_names.append(name)
    return stale_names


def _replaced_copies(destination: ObjectStoragePath, state: DestinationState) -> list[str]:
    """Backup names whose ``.retired`` copy (a swap interrupted after the new copy went in) can go."""
    names = []
    for name in sorted(state.retired, key=natural_key):
        if name not in state.verified:
            log.warning(
                "retention: leaving %s/%s%s: %s is not verified; the next run restores it",
                destination,
                name,
                RETIRED_SUFFIX,
                name,
            )
            continue
        log.warning(
            "retention: deleting %s/%s%s, replaced by a newer copy", destination, name, RETIRED_SUFFIX
        )
        names.append(name)
    return names


def check_freshness(
    destination: ObjectStoragePath,
    *,
    max_age_hours: float,
    site: str,
    now: float | None = None,
    destination_may_be_link: bool = False,
) -> dict[str, Any]:
    """The newest verified backup's age; raises ``BackupStale`` (with the age) beyond ``max_age_hours``.

    Links at the destination never count as backups.
    """
    check_destination_root(destination, may_be_link=destination_may_be_link)
    now = time.time() if now is None else now
    state = destination_state(destination)
    dated = [(m.as_of, name) for name, m in state.verified.items() if m.as_of is not None]
    if not dated:
        raise BackupStale(
            f"no verified SpeechMiner backup at {site} ({destination}): the backup DC has no index it could "
            "promote; check this DAG's earlier runs and the source backups"
        )
    as_of, name = max(dated)
    age_hours = (now - as_of) / 3600
    result = {
        "site": site,
        "backup_name": name,
        "as_of": _iso(as_of),
        "age_hours": round(age_hours, 2),
        "max_age_hours": max_age_hours,
    }
    if age_hours > max_age_hours:
        raise BackupStale(
            f"the newest verified SpeechMiner backup at {site} is {name}, {age_hours:.1f} h old (as of "
            f"{_iso(as_of)}), more than shipping.max_age_hours={max_age_hours:g}: the backup DC's index is "
            "stale; check that SpeechMiner still writes its Daily Index Backup and that this DAG ships it"
        )
    return result


# --- the DAG's tasks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShippingRoute:
    """Everything the shipping tasks need, taken from the topology's ``shipping`` section."""

    from_site: str
    to_site: str
    source_root: str
    destination: str
    keep: int
    ready_marker: str | None
    quiet_minutes: float
    max_age_hours: float
    wait_timeout_minutes: float
    poll_seconds: float
    backup_name_pattern: str = DEFAULT_BACKUP_NAME_PATTERN
    destination_may_be_link: bool = False

    @classmethod
    def from_topology(cls, topology: Topology) -> ShippingRoute:
        shipping = topology.shipping
        if shipping is None:
            raise ValueError("the topology has no shipping section")
        source_root = topology.site(shipping.from_site).speechminer.index_backup
        if source_root is None:  # the topology validator already refuses this
            raise ValueError(f"site {shipping.from_site} has no speechminer.index_backup")
        return cls(
            from_site=shipping.from_site,
            to_site=shipping.to_site,
            source_root=source_root,
            destination=shipping.destination,
            keep=shipping.keep,
            ready_marker=shipping.ready_marker,
            quiet_minutes=shipping.quiet_minutes,
            max_age_hours=shipping.max_age_hours,
            wait_timeout_minutes=shipping.wait_timeout_minutes,
            poll_seconds=shipping.poll_seconds,
            backup_name_pattern=shipping.backup_name_pattern,
            destination_may_be_link=shipping.destination_may_be_link,
        )

    # Every path is built through check_backup_name: a name from XCom (which users can edit) never
    # leads outside the source root or the destination.

    def source_folder(self, backup_name: str) -> ObjectStoragePath:
        return storage_path(self.source_root) / check_backup_name(backup_name, self.backup_name_pattern)

    def destination_root(self) -> ObjectStoragePath:
        """The destination folder, refused when it is a link and ``destination_may_be_link`` is off."""
        root = storage_path(self.destination)
        check_destination_root(root, may_be_link=self.destination_may_be_link)
        return root

    def final(self, backup_name: str) -> ObjectStoragePath:
        return self.destination_root() / check_backup_name(backup_name, self.backup_name_pattern)

    def staging(self, backup_name: str) -> ObjectStoragePath:
        name = check_backup_name(backup_name, self.backup_name_pattern)
        return self.destination_root() / f"{name}{PARTIAL_SUFFIX}"

    def retired(self, backup_name: str) -> ObjectStoragePath:
        name = check_backup_name(backup_name, self.backup_name_pattern)
        return self.destination_root() / f"{name}{RETIRED_SUFFIX}"


@contextlib.contextmanager
def _fail_without_retry() -> Iterator[None]:
    """Failures a retry cannot fix end the task at once (AirflowFailException), with the same message."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except (SourceChanged, WriteFailed):
        raise  # the retry resumes once SpeechMiner has finished writing / rewrites what was not synced
    except BackupError as exc:
        raise AirflowFailException(str(exc)) from exc


def _same_listing(files: list[SourceFile], manifest: PublishedManifest) -> bool:
    listed = {item.path: item for item in files}
    if {e.path: e.size for e in manifest.entries} != {p: f.size for p, f in listed.items()}:
        return False
    for entry in manifest.document.get("entries", []):
        shipped_mtime, item = entry.get("source_mtime"), listed.get(entry.get("path"))
        known = item is not None and shipped_mtime is not None and item.mtime is not None
        if known and float(shipped_mtime) != item.mtime:
            return False
    return True


def manifest_task(route: ShippingRoute, backup_name: str, *, chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """List the backup (refusing what must not ship) and decide whether it still has to be shipped.

    A backup already published at the destination is read back and verified: if it still verifies it is
    not copied again; if it does not, it is withdrawn (its manifest deleted first) and re-shipped, copying
    only what is damaged, with an error in the log naming the damaged files. A published copy that
    verifies but no longer matches the source (SpeechMiner rewrote the folder) stays published: the new
    copy is staged, verified and only then swapped in (``plan["replace"]``).
    """
    with _fail_without_retry():
        source = route.source_folder(backup_name)
        files = scan_backup(source)
        total = sum(item.size for item in files)
        log.info("backup %s: %d files, %s", source, len(files), _human(total))
        plan: dict[str, Any] = {
            "backup_name": backup_name,
            "source": str(source),
            "file_count": len(files),
            "bytes": total,
            "created_at": max((f.mtime for f in files if f.mtime is not None), default=None),
            "files": [[item.path, item.size, item.mtime] for item in files],
            "already_present": False,
            "repaired": [],
            "repair_reason": None,
            "replace": None,
        }
        final, staging = route.final(backup_name), route.staging(backup_name)
        _refuse_link(final, "published backup")
        _refuse_link(staging, "staging folder")
        _refuse_link(route.retired(backup_name), "replaced backup")
        restore_interrupted_swap(final)
        if not _lexists(final):
            return plan
        published = read_manifest(final)
        if published is None:
            raise PublishConflict(
                f"{final} exists at {route.to_site} without a {MANIFEST_NAME} (a crashed publish on an "
                "object store, or a manual copy): it is not trusted and this DAG will not overwrite it; "
                "move it away or delete it, then rerun"
            )
        if not _same_listing(files, published):
            log.warning(
                "published %s does not match the source any more (files, sizes or mtimes differ): shipping "
                "the source again; the published copy stays until the new one is verified, then is swapped",
                final,
            )
            plan["repair_reason"] = "the source changed since it was shipped"
            plan["replace"] = published.manifest_sha256
            return plan
        problems = verify_tree(final, published.entries, chunk_size=chunk_size)
        if not problems:
            log.info("%s is already present and verified at %s: nothing to copy", backup_name, route.to_site)
            plan["already_present"] = True
            return plan
        log.error(
            "published backup %s at %s FAILED verification (%s); withdrawing it and re-shipping the "
            "damaged files",
            final,
            route.to_site,
            _name_problems(problems),
        )
        unpublish(final, staging)
        plan["repair_reason"] = f"published copy failed verification: {_name_problems(problems)}"
        plan["repaired"] = [problem.path for problem in problems]
        return plan


def copy_task(
    route: ShippingRoute,
    plan: Mapping[str, Any],
    *,
    chunk_size: int = CHUNK_SIZE,
    progress_every: float = PROGRESS_EVERY_SECONDS,
) -> dict[str, Any]:
    """Copy the planned files into ``<name>.partial`` (resuming); skipped when already present."""
    from airflow.sdk.exceptions import AirflowSkipException

    with _fail_without_retry():
        name = check_backup_name(plan["backup_name"], route.backup_name_pattern)
    if plan["already_present"]:
        raise AirflowSkipException(
            f"{name} is already present and verified at {route.to_site}: nothing to copy"
        )
    with _fail_without_retry():
        files = [SourceFile(path, size, mtime) for path, size, mtime in plan["files"]]
        result = copy_backup(
            route.source_folder(plan["backup_name"]),
            files,
            route.staging(plan["backup_name"]),
            last=route.ready_marker,
            chunk_size=chunk_size,
            progress_every=progress_every,
        )
    log.info(
        "copied %s in %d file(s), appended to %d, kept %d already staged (%.1f s)",
        _human(result.bytes_copied),
        len(result.files_copied),
        len(result.files_resumed),
        len(result.files_kept),
        result.seconds,
    )
    summary = asdict(result)
    summary["entries"] = [[e.path, e.size, e.sha256] for e in result.entries]
    summary["backup_name"] = plan["backup_name"]
    return summary


def verify_and_publish_task(
    route: ShippingRoute,
    plan: Mapping[str, Any],
    copied: Mapping[str, Any],
    *,
    chunk_size: int = CHUNK_SIZE,
    now: float | None = None,
) -> dict[str, Any]:
    """Read the staged copy back, compare with the source hashes, write MANIFEST.json and publish."""
    with _fail_without_retry():
        name = plan["backup_name"]
        entries = [ManifestEntry(path, size, sha256) for path, size, sha256 in copied["entries"]]
        staging, final = route.staging(name), route.final(name)
        _refuse_link(staging, "staging folder")
        problems = verify_tree(staging, entries, chunk_size=chunk_size)
        if problems:
            raise VerificationFailed(str(staging), problems)
        shipped_at = time.time() if now is None else now
        document = manifest_document(
            backup_name=name,
            entries=entries,
            source=plan["source"],
            source_site=route.from_site,
            site=route.to_site,
            created_at=plan.get("created_at"),
            shipped_at=shipped_at,
            source_mtimes={path: mtime for path, _, mtime in plan["files"]},
        )
        publish(staging, final, document, replace=plan.get("replace"))
    log.info(
        "published %s at %s: %d files, %s, manifest_sha256 %s",
        final,
        route.to_site,
        document["files"],
        _human(document["bytes"]),
        document["manifest_sha256"],
    )
    return {
        "site": route.to_site,
        "backup_name": name,
        "bytes": document["bytes"],
        "files": document["files"],
        "manifest_sha256": document["manifest_sha256"],
        "shipped_at": document["shipped_at"],
    }


def retention_task(route: ShippingRoute, plan: Mapping[str, Any]) -> dict[str, Any]:
    with _fail_without_retry():
        protect = check_backup_name(plan["backup_name"], route.backup_name_pattern)
        result = apply_retention(
            route.destination_root(),
            keep=route.keep,
            protect=protect,
            destination_may_be_link=route.destination_may_be_link,
        )
    return asdict(result)


def freshness_task(route: ShippingRoute, *, now: float | None = None) -> dict[str, Any]:
    with _fail_without_retry():
        result = check_freshness(
            route.destination_root(),
            max_age_hours=route.max_age_hours,
            site=route.to_site,
            now=now,
            destination_may_be_link=route.destination_may_be_link,
        )
    log.info(
        "newest verified backup at %s: %s, %.1f h old (limit %g h)",
        route.to_site,
        result["backup_name"],
        result["age_hours"],
        route.max_age_hours,
    )
    return result
