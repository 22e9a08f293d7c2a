"""Moving bytes to the destination: streaming copy with hashing, resume, and writes that are durable.

* **copy**: each file is streamed in large chunks into ``<destination>/<name>.partial/`` and hashed while
  it is read, so the copy *is* the source SHA-256 pass (one read of the source). Memory stays flat
  whatever the size. A rerun keeps staged files that already match the source, appends the missing tail
  of a truncated file (file:// only) and copies the rest.
* **faults are not swallowed**: a failed ``fsync`` (file or folder) or ``close`` at the destination
  raises ``WriteFailed`` naming the file; the staged file is removed (its bytes may exist only in the page
  cache) and nothing is published.

``ObjectStoragePath.copy()`` is not used: between stores it appends the source key to the destination,
and ``checksum()`` is not comparable across stores, so files are streamed with the store's own ``open()``
and hashed on both sides.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.gir_ops.backup.errors import BackupRefused, SourceChanged, WriteFailed
from include.gir_ops.backup.links import lexists, link_target, refuse_link, refuse_links_on_the_way
from include.gir_ops.backup.tree import (
    ManifestEntry,
    SourceFile,
    entries,
    is_local,
    mtime_of,
    utc_datetime,
)
from include.gir_ops.shared import format_size, format_utc

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

CHUNK_SIZE = 8 * 1024 * 1024  # large reads and writes: throughput on multi-GB segment files
PROGRESS_EVERY_SECONDS = 10.0
# Stores whose files can be reopened for append, so a truncated staged file only gets its missing tail.
APPEND_PROTOCOLS = frozenset({"file", "local"})


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


# --- streaming and hashing -----------------------------------------------------------------------------


def chunks(handle: Any, buffer: memoryview, limit: int | None = None) -> Iterator[memoryview]:
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
        for chunk in chunks(handle, buffer):
            digest.update(chunk)
            size += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return size, digest.hexdigest()


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
            format_size(self.done),
            format_size(self.total),
            percent,
            format_size(self.written),
            rate,
            self.file_index,
            self.files,
            elapsed,
        )


# --- durable writes ------------------------------------------------------------------------------------


def _discard(path: ObjectStoragePath) -> None:
    """Best-effort removal of a staged file whose bytes cannot be trusted (never through a link)."""
    with contextlib.suppress(Exception):
        if link_target(path) is None and lexists(path):
            path.fs.rm(path.path)


@contextlib.contextmanager
def writing(path: ObjectStoragePath, mode: str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[Any]:
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
        if is_local(path):
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


def _fsync_at(path: str, flags: int) -> None:
    """Open ``path`` read-only (with ``flags``), fsync and close it; the caller names an ``OSError``."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: ObjectStoragePath) -> None:
    """fsync a staged file kept from an earlier attempt (that attempt may have died before its fsync)."""
    if not is_local(path):
        return
    try:
        _fsync_at(path.path, getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        _discard(path)
        raise WriteFailed(
            f"fsync of {path} failed ({exc}): nothing is published; the staged file was removed and a retry "
            "copies it again"
        ) from exc


def fsync_local_dir(path: str) -> None:
    """fsync a local folder (its entries: new, renamed and deleted names); a failure is ``WriteFailed``."""
    try:
        _fsync_at(path, getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise WriteFailed(
            f"fsync of the folder {path} failed ({exc}): its entries may not be on disk, so nothing is "
            "published"
        ) from exc


def fsync_dir(path: ObjectStoragePath) -> None:
    """fsync a folder on a local store; object stores have no folder entries to sync."""
    if is_local(path):
        fsync_local_dir(path.path)


# --- the copy ------------------------------------------------------------------------------------------


def _staged_sizes(staging: ObjectStoragePath) -> tuple[dict[str, int], list[str]]:
    """Files already in a staging folder (relative path -> size), and entries to throw away (odd files).

    A symbolic link anywhere in it is refused (never followed, never deleted through).
    """
    if not lexists(staging):
        return {}, []
    sizes: dict[str, int] = {}
    junk: list[str] = []
    for relative, info in entries(staging):
        if isinstance(relative, BackupRefused):
            continue
        if info.get("islink"):
            refuse_link(staging / relative, "inside the staging folder")
            raise BackupRefused(
                f"{staging}/{relative} is a symbolic link inside the staging folder; remove it"
            )
        if info.get("type") != "file":
            junk.append(relative)
        else:
            sizes[relative] = int(info.get("size") or 0)
    return sizes, junk


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
    refuse_link(staging, "staging folder")
    staged, junk = _staged_sizes(staging)
    wanted = {item.path for item in ordered}
    for relative in sorted(junk) + sorted(set(staged) - wanted):
        log.warning("removing %s from staging %s: not a file of the source backup", relative, staging)
        refuse_links_on_the_way(staging, relative, "staging folder")
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
        refuse_links_on_the_way(staging, item.path, "staging folder")
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
    if is_local(staging):
        for folder in sorted(made_dirs | {staging.path}, key=len, reverse=True):
            fsync_local_dir(folder)
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
        writing(dst, "wb", chunk_size=chunk_size) as writer,
    ):
        size = _pump(reader, writer, digest=digest, buffer=buffer, progress=progress)
    _check_size(src, item, size)
    return ManifestEntry(item.path, size, digest.hexdigest())


def _pump(reader: Any, writer: Any, *, digest: Any, buffer: memoryview, progress: _Progress) -> int:
    """Copy the rest of ``reader`` to ``writer`` through ``buffer``, hashing what passes; bytes copied."""
    copied = 0
    for chunk in chunks(reader, buffer):
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
        for chunk in chunks(reader, buffer, limit=staged_size):
            digest.update(chunk)
            prefix += len(chunk)
        if prefix != staged_size or digest.copy().hexdigest() != staged_sha:
            log.info("staged %s is not a prefix of the source: copying it again", item.path)
            return None
        progress.advance(prefix, written=False)
        with writing(dst, "ab", chunk_size=chunk_size) as writer:
            size = prefix + _pump(reader, writer, digest=digest, buffer=buffer, progress=progress)
    _check_size(src, item, size)
    log.info(
        "resumed %s: kept %s staged, appended %s", item.path, format_size(prefix), format_size(size - prefix)
    )
    return ManifestEntry(item.path, size, digest.hexdigest())


def _check_size(src: ObjectStoragePath, item: SourceFile, size: int) -> None:
    if size != item.size:
        raise SourceChanged(
            f"{src} was {item.size} bytes when listed but {size} bytes were read: SpeechMiner is still "
            "writing this backup; the retry resumes once it is complete"
        )


def _check_unchanged(src: ObjectStoragePath, item: SourceFile) -> None:
    info = src.fs.info(src.path)
    size, mtime = int(info.get("size") or 0), mtime_of(info)
    if size != item.size or (item.mtime is not None and mtime is not None and mtime != item.mtime):
        listed, now = (
            "unknown" if moment is None else format_utc(moment)
            for moment in (utc_datetime(item.mtime), utc_datetime(mtime))
        )
        raise SourceChanged(
            f"{src} changed while it was copied (size {item.size} -> {size}, mtime {listed} -> {now}): "
            "SpeechMiner is still writing this backup; the retry resumes once it is complete"
        )
