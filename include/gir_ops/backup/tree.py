"""Walking a backup tree: backup names, the files of one backup, and the newest backup at the source.

* **find**: the newest backup is the last folder under the source DC's ``speechminer.index_backup`` whose
  name matches ``shipping.backup_name_pattern``, in natural name order (``index-2026-11-20`` after
  ``index-2026-11-19``; ``b-10`` after ``b-9``). ``tmp``, ``lost+found``, dot-folders, links and names
  with control characters are never chosen. The backup itself is an opaque tree: no public description
  of its layout exists.
* **list**: relative path, size and mtime of every file; symlinks, special files and names that could
  escape the folder are refused. Only names and sizes are held, never file contents.

Everything goes through ``ObjectStoragePath`` (file://, and any registered fsspec scheme).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.gir_ops.backup.errors import BackupNotFound, BackupRefused, SourceUnreachable
from include.gir_ops.backup.spec import MANIFEST_NAME, PARTIAL_SUFFIX, RETIRED_SUFFIX
from include.gir_ops.shared import missing_path_detail
from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

# Stores where renaming a folder is one atomic step (POSIX rename on one file system) and links exist.
ATOMIC_RENAME_PROTOCOLS = frozenset({"file", "local"})
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class SourceFile:
    """One file of a backup as listed: relative POSIX path, size, modification time (if the store has one)."""

    path: str
    size: int
    mtime: float | None = None


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a backup as hashed: relative POSIX path, size, SHA-256."""

    path: str
    size: int
    sha256: str


# --- paths, times and names ----------------------------------------------------------------------------


def storage_path(url: str) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a topology URL (``scheme://[conn_id@]path``)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url)


def join_url(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def is_local(path: ObjectStoragePath) -> bool:
    return (path.protocol or "file") in ATOMIC_RENAME_PROTOCOLS


def utc_datetime(timestamp: float | None) -> datetime | None:
    """A POSIX timestamp (what stores report as mtime) as an aware UTC datetime, for the shared formatters."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def parse_iso(text: Any) -> float | None:
    """An ISO-8601 text as a POSIX timestamp; None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def mtime_of(info: Mapping[str, Any]) -> float | None:
    """The modification time an fsspec ``info`` dict carries, whatever the store calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "time_modified"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
        parsed = parse_iso(value)
        if parsed is not None:
            return parsed
    return None


def printable(name: str) -> str:
    """``name`` safe for one log line: control characters (a newline forging a log line) escaped."""
    return CONTROL_CHARS.sub(lambda match: f"\\x{ord(match.group()):02x}", name)


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digits as numbers: ``b-9`` before ``b-10``, dates chronologically."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name) if part)


def check_backup_name(name: str, pattern: str = DEFAULT_BACKUP_NAME_PATTERN) -> str:
    """``name`` if it is a backup folder name this DAG may ship; ``BackupRefused`` saying why otherwise.

    A name is one folder (no ``/``, ``\\``, ``.`` or ``..``: it must not lead outside the source root or
    the destination), has no control character (it is written to logs), is not a name this DAG reserves
    (``*.partial``, ``*.retired``, ``MANIFEST.json``) and matches ``shipping.backup_name_pattern`` whole.
    """
    if not isinstance(name, str) or CONTROL_CHARS.search(name):
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


def relative_name(root: str, name: str) -> str:
    """``name`` relative to ``root``, refusing anything that could land outside the folder when written."""
    root = root.rstrip("/")
    name = name.rstrip("/")
    if not name.startswith(root + "/"):
        raise BackupRefused(f"{name!r} is not inside {root!r}: a name that escapes the backup folder")
    relative = name[len(root) + 1 :]
    if "\\" in relative or CONTROL_CHARS.search(relative):
        raise BackupRefused(
            f"{relative!r} in {root} contains a backslash or control character; it would name a different "
            "file on the destination: rename it at the source"
        )
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BackupRefused(f"{relative!r} in {root} escapes the backup folder ('..', '.' or empty part)")
    return relative


# --- walking one backup --------------------------------------------------------------------------------


def entries(
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


def walk(folder: ObjectStoragePath, *, strict: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (relative path, info) for every regular file under ``folder``, depth first.

    ``strict`` refuses symlinks (files or folders), special files (FIFOs, sockets, devices) and bad names;
    otherwise those are skipped, which is what a completeness poll wants.
    """
    for relative, info in entries(folder):
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
    for relative, info in walk(folder, strict=True):
        if relative in reserved:
            raise BackupRefused(
                f"{relative} in {folder} is a name this DAG reserves for its own manifest at the "
                "destination; rename it at the source"
            )
        files.append(SourceFile(relative, int(info.get("size") or 0), mtime_of(info)))
    return sorted(files, key=lambda item: item.path)


# --- the backups at the source root --------------------------------------------------------------------


def top_level(folder: ObjectStoragePath) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, fs info) of every entry directly under ``folder``; links are listed, never followed."""
    own = folder.path.rstrip("/")
    for info in folder.fs.ls(folder.path, detail=True):
        full = str(info["name"]).rstrip("/")
        if full != own:  # some object stores list the folder's own placeholder
            yield full.rsplit("/", 1)[-1], info


def _scan_root(root: ObjectStoragePath, pattern: str) -> tuple[list[str], list[str]]:
    """(backup folder names, oldest first; names of the other entries, printable) under ``root``."""
    if not root.exists():
        raise SourceUnreachable(
            f"{root} does not exist ({missing_path_detail(str(root), 'folder')}): SpeechMiner's Daily Index "
            "Backup cannot be read where the topology says; check that the source DC's share is mounted on "
            "this machine, the source DC's speechminer.index_backup and SpeechMiner's backup configuration "
            "(SMConfig > Index)"
        )
    names: list[str] = []
    ignored: list[str] = []
    for name, info in top_level(root):
        if info.get("islink"):
            log.warning("ignoring %s/%s: a symbolic link, not a backup folder", root, printable(name))
        elif info.get("type") == "directory":
            try:
                names.append(check_backup_name(name, pattern))
                continue
            except BackupRefused as refused:
                if CONTROL_CHARS.search(name):
                    # Never chosen, and never written to a log as it is: it could forge log lines.
                    log.warning("refusing %s/%s: %s", root, printable(name), "control character in the name")
                else:
                    log.debug("ignoring %s/%s: %s", root, name, refused)
        ignored.append(printable(name))
    return sorted(names, key=natural_key), sorted(ignored)


def list_backups(root: ObjectStoragePath, *, pattern: str = DEFAULT_BACKUP_NAME_PATTERN) -> list[str]:
    """Backup folder names under ``root``, oldest first (natural name order).

    Only folders whose name matches ``pattern`` (``shipping.backup_name_pattern``) and passes
    ``check_backup_name``: symbolic links, ``tmp``, ``lost+found``, dot-folders and names with control
    characters are never backups.
    """
    return _scan_root(root, pattern)[0]


def newest_backup(root: ObjectStoragePath, *, pattern: str = DEFAULT_BACKUP_NAME_PATTERN) -> str:
    """The last backup folder name under ``root``; ``BackupNotFound`` naming what was ignored if none."""
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
