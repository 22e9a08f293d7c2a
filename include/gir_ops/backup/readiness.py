"""Is the newest source backup complete? One cheap listing per look, no file contents.

With ``ready_marker`` set, the backup is complete only once that file exists (strict: a SpeechMiner that
died mid-backup also goes quiet). Without a marker it is complete once nothing in it changed for
``quiet_minutes`` (file and folder mtimes, plus changes the poller itself observed) **and** two scans
``quiet_minutes`` apart listed the same names, sizes and mtimes: a copy that keeps old mtimes
(``cp -p``, robocopy) is never complete on one look.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from include.gir_ops.backup.errors import BackupRefused
from include.gir_ops.backup.tree import (
    entries,
    join_url,
    mtime_of,
    newest_backup,
    storage_path,
    utc_datetime,
)
from include.gir_ops.shared import format_size, format_utc, iso_utc
from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


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
        return join_url(self.root, self.backup_name)

    def scan_state(self) -> ScanState:
        return ScanState(self.backup_name, self.signature, self.stable_since, self.seen_change_at)

    def describe(self) -> str:
        changed = utc_datetime(self.last_change)
        when = "unknown" if changed is None else format_utc(changed)
        return (
            f"{self.folder}: {self.reason} ({self.files} files, {format_size(self.bytes)}, "
            f"last change at {when})"
        )

    def as_event(self) -> dict[str, Any]:
        return {
            "backup_name": self.backup_name,
            "folder": self.folder,
            "reason": self.reason,
            "files": self.files,
            "bytes": self.bytes,
            "last_change": iso_utc(utc_datetime(self.last_change)),
        }


def _listing(
    folder: ObjectStoragePath,
) -> tuple[list[tuple[str, int, float | None]], list[tuple[str, float | None]]]:
    """Files (path, size, mtime) and folders (path/, mtime; the backup folder itself is '') of a backup."""
    files: list[tuple[str, int, float | None]] = []
    folders: list[tuple[str, float | None]] = [("", mtime_of(folder.fs.info(folder.path)))]
    for relative, info in entries(folder, dirs=True):
        if isinstance(relative, BackupRefused) or info.get("islink"):
            continue
        if info.get("type") == "directory":
            folders.append((f"{relative}/", mtime_of(info)))
        elif info.get("type") == "file":
            files.append((relative, int(info.get("size") or 0), mtime_of(info)))
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
