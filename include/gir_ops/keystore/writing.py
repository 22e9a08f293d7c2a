"""Replacing one RCS keystore with the reference's bytes: never half-written, the previous one kept.

On a local store (``file://``, an NFS/SMB mount): the new bytes go to a temp file beside the keystore
(same folder, so the rename is atomic), are fsynced; the previous keystore is kept as
``<name>.bak-<UTC timestamp>`` (a verified, fsynced copy); just before the
rename the keystore is hashed again and must still be what pre-flight saw (else it is refused, never
overwritten); ``os.replace`` swaps it in, the folder is fsynced, and the result is read back and its
SHA-256 compared. Any failure before the rename removes the temp file and leaves the keystore as it was.

On an object store (``s3://`` etc.) a PUT is atomic by itself: the previous object is copied to the
``.bak-`` name first, the new one written in one PUT, then read back.

Symbolic links are refused with the backup destination's rule (``storage_links``): never the keystore,
its temp or backup file; the folder only with ``keystore_replication.target_dir_may_be_link``. Only the
keystore, its temp file and its backup file are ever written: nothing else in or outside the folder.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.gir_ops.storage_links import is_local, link_target

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# What one target ended as.
REPLACED, CREATED, ALREADY_CURRENT = "replaced", "created", "already-current"
REFUSED, FAILED = "refused", "failed"
WRITTEN = (REPLACED, CREATED)
BACKUP_INFIX = ".bak-"
TEMP_SUFFIX = ".replicate-tmp"
_CHUNK = 1024 * 1024


@dataclass
class TargetResult:
    instance: str
    url: str
    status: str
    detail: str
    sha256_before: str | None = None
    sha256_after: str | None = None
    backup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TargetRefused(Exception):
    """This target is not written, for a reason the operator must look at (the others go on)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def backup_stamp(now: datetime) -> str:
    """20261130T120000Z: sortable, no ':' (Windows shares, object keys)."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a module function, so tests can make the disk fill up mid-write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sha256_local(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def _refuse_link(path: ObjectStoragePath, role: str) -> None:
    target = link_target(path)
    if target is not None:
        raise TargetRefused(
            REFUSED,
            f"{path} ({role}) is a symbolic link to {target!r}: a keystore is never written, renamed or "
            "kept through a link; remove the link (and find out who made it), then rerun",
        )


def _changed(expected: str | None, now: str | None) -> str | None:
    if expected == now:
        return None
    seen = f"sha256 {expected[:12]}…" if expected else "no file"
    found = f"sha256 {now[:12]}…" if now else "no file"
    return (
        f"changed by someone else since pre-flight ({seen} then, {found} now): not overwritten; check who "
        "changed it, then trigger a new run for a fresh pre-flight and approval"
    )


def replace_keystore(
    instance: str,
    url: str,
    data: bytes,
    *,
    sha256: str,
    expected_sha256: str | None,
    now: datetime,
    folder_may_be_link: bool = False,
) -> TargetResult:
    """Put ``data`` (whose digest is ``sha256``) at ``url`` if it still holds ``expected_sha256`` (None:
    absent). Never raises for a storage problem: the result says replaced, created, already-current,
    refused or failed, and why; a failed or refused target is left exactly as it was.
    """
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(url)
    result = TargetResult(instance, url, FAILED, "", sha256_before=expected_sha256)
    try:
        if is_local(path):
            _replace_local(
                path,
                data,
                sha256=sha256,
                expected=expected_sha256,
                now=now,
                folder_may_be_link=folder_may_be_link,
                result=result,
            )
        else:
            _replace_remote(path, data, sha256=sha256, expected=expected_sha256, now=now, result=result)
    except TargetRefused as exc:
        result.status, result.detail = exc.status, exc.message
    except OSError as exc:
        result.status = FAILED
        result.detail = f"{_describe(exc)}: the keystore was left as it was" + (
            f" (previous kept as {result.backup})" if result.backup else ""
        )
    except Exception as exc:  # a remote store's own errors
        result.status = FAILED
        result.detail = f"{type(exc).__name__}: {str(exc)[:200]}: the keystore was left as it was"
    return result


def _replace_local(
    path: ObjectStoragePath,
    data: bytes,
    *,
    sha256: str,
    expected: str | None,
    now: datetime,
    folder_may_be_link: bool,
    result: TargetResult,
) -> None:
    target = path.path
    folder, name = os.path.split(target)
    if not os.path.isdir(folder):
        raise TargetRefused(
            FAILED,
            f"the folder {folder} does not exist (or is not a folder): nothing written; create it for the "
            "RCS instance (or fix its keystore path in the topology), then rerun",
        )
    if not folder_may_be_link:
        _refuse_link(path.parent, "the keystore's folder; keystore_replication.target_dir_may_be_link")
    _refuse_link(path, "the keystore")
    current = _sha256_local(target)
    if current == sha256:
        result.status, result.sha256_after = ALREADY_CURRENT, current
        result.detail = "already holds the reference's keystore: nothing written"
        return
    change = _changed(expected, current)
    if change:
        raise TargetRefused(REFUSED, change)
    temp = os.path.join(folder, f".{name}{TEMP_SUFFIX}")
    _refuse_link(path.parent / os.path.basename(temp), "the temp file")
    if os.path.lexists(temp):
        os.unlink(temp)  # left by a run that died mid-write: never the keystore itself
    mode = os.stat(target).st_mode & 0o777 if current else 0o600
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if current is not None:
            result.backup = _keep_previous(path, target, expected, now)
        change = _changed(expected, _sha256_local(target))  # again, right before the swap
        if change:
            raise TargetRefused(REFUSED, change)
        os.replace(temp, target)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise
    _fsync_folder(folder)
    _read_back(result, _sha256_local(target), sha256, CREATED if current is None else REPLACED)


def _keep_previous(path: ObjectStoragePath, target: str, expected: str | None, now: datetime) -> str:
    """``<name>.bak-<stamp>`` beside it: a copy of the previous keystore, fsynced, verified to be the file
    pre-flight saw (a copy, not a hard link: a later in-place write such as ``cp`` must not change it)."""
    base = f"{target}{BACKUP_INFIX}{backup_stamp(now)}"
    backup, number = base, 1
    while os.path.lexists(backup):
        number += 1
        backup = f"{base}-{number}"
    _refuse_link(path.parent / os.path.basename(backup), "the backup file")
    with open(target, "rb") as source:
        previous = source.read()
    change = _changed(expected, hashlib.sha256(previous).hexdigest())
    if change:
        raise TargetRefused(REFUSED, change)
    fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            write_all(fd, previous)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        os.unlink(backup)
        raise
    return f"file://{backup}"


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some network file systems do not fsync folders; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _read_back(result: TargetResult, found: str | None, sha256: str, status: str) -> None:
    result.sha256_after = found
    if found != sha256:
        result.status = FAILED
        result.detail = (
            f"read back sha256 {(found or 'nothing')[:12]}… differs from the reference's {sha256[:12]}…"
            + (f"; the previous keystore is {result.backup}" if result.backup else "")
        )
        return
    result.status = status
    result.detail = f"{'replaced' if status == REPLACED else 'created'}; read back sha256 {sha256[:12]}… " + (
        f"matches; previous kept as {result.backup}" if result.backup else "matches"
    )


def _replace_remote(
    path: ObjectStoragePath,
    data: bytes,
    *,
    sha256: str,
    expected: str | None,
    now: datetime,
    result: TargetResult,
) -> None:
    def digest() -> str | None:
        if not path.exists():
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()

    current = digest()
    if current == sha256:
        result.status, result.sha256_after = ALREADY_CURRENT, current
        result.detail = "already holds the reference's keystore: nothing written"
        return
    change = _changed(expected, current)
    if change:
        raise TargetRefused(REFUSED, change)
    if current is not None:
        backup = path.parent / f"{path.name}{BACKUP_INFIX}{backup_stamp(now)}"
        backup.write_bytes(path.read_bytes())
        result.backup = str(backup)
    change = _changed(expected, digest())
    if change:
        raise TargetRefused(REFUSED, change)
    path.write_bytes(data)  # one PUT: the object is either the old or the new one
    _read_back(result, digest(), sha256, CREATED if current is None else REPLACED)
