"""Moving bytes to the destination: streaming copy with hashing, resume, and writes that are durable.

* **copy**: each file is streamed in large chunks into ``<destination>/<name>.partial/`` and hashed while
  it is read, so the copy *is* the source SHA-256 pass (one read of the source). Reading (the calling
  thread), hashing, writing (a thread each) and fsync (a few) overlap (``_Pipeline``): done in turn, the
  disk waited while the CPU hashed and the CPU waited for every fsync. Memory stays flat whatever the
  size (a few chunk buffers). A rerun keeps staged files that already match the source, appends the
  missing tail of a truncated file (file:// only) and copies the rest.
* **bandwidth cap**: ``Throttle`` paces the bytes the copy moves between the sites (source reads) to
  ``shipping.bandwidth_limit_mbps``; the read-back verification of the staged copy is never capped.
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
import io
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
WRITE_AHEAD = 3  # chunks read ahead of the ones being hashed and written (each has its own buffer)
FSYNC_AHEAD = 64  # files written whose fsync has not finished yet, at most (each keeps its file open)
FSYNC_THREADS = 4  # fsyncs at once: concurrent fsyncs can share the file system's journal commits
VERIFY_THREADS = 2  # files hashed at the same time by the read-back (hashlib releases the GIL)
THROTTLE_SLICES_PER_SECOND = 10  # a capped copy reads in pieces of a tenth of a second's worth
THROTTLE_MAX_BURST_SECONDS = 1.0  # after a stall, catch up at most this much above the cap
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
    throttled_seconds: float = 0.0  # time spent waiting for the bandwidth cap


# --- bandwidth cap -------------------------------------------------------------------------------------


class Throttle:
    """Paces a byte stream to ``bytes_per_second`` on an injected clock (tests pass a fake one).

    After ``passed(n)`` the caller has sent ``sent`` bytes since the first call; it sleeps until
    ``start + sent / rate``, so the average rate is the cap and sleeping costs no CPU. A stall (a slow
    source) is caught up by at most ``max_burst_seconds`` worth of bytes above the cap.
    """

    def __init__(
        self,
        bytes_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_burst_seconds: float = THROTTLE_MAX_BURST_SECONDS,
    ) -> None:
        if not bytes_per_second > 0:
            raise ValueError(
                f"a bandwidth cap must be more than 0 bytes per second, got {bytes_per_second!r}"
            )
        self.bytes_per_second = float(bytes_per_second)
        self.clock = clock
        self.sleep = sleep
        self.max_burst_seconds = max_burst_seconds
        self.started: float | None = None
        self.sent = 0
        self.slept = 0.0

    @classmethod
    def from_mbps(cls, megabits_per_second: float | None, **kwargs: Any) -> Throttle | None:
        """``shipping.bandwidth_limit_mbps`` (megabits, 10^6 bits, per second) as a throttle; None: no cap."""
        if megabits_per_second is None:
            return None
        return cls(megabits_per_second * 1_000_000 / 8, **kwargs)

    def piece(self, chunk_size: int) -> int:
        """How much to read at once: a tenth of a second's worth, so the stream is smooth, not bursts."""
        return max(64 * 1024, min(chunk_size, int(self.bytes_per_second / THROTTLE_SLICES_PER_SECOND)))

    def passed(self, count: int) -> None:
        """``count`` more bytes went: sleep until the average since the first call is back at the cap."""
        now = self.clock()
        if self.started is None:
            self.started = now
        behind = now - (self.started + self.sent / self.bytes_per_second)
        if behind > self.max_burst_seconds:  # a stall: do not burst the whole backlog at once
            self.started += behind - self.max_burst_seconds
        self.sent += count
        wait = self.started + self.sent / self.bytes_per_second - now
        if wait > 0:
            self.sleep(wait)
            self.slept += wait


# --- streaming and hashing -----------------------------------------------------------------------------


def chunks(handle: Any, buffer: memoryview, limit: int | None = None) -> Iterator[memoryview]:
    """Read ``handle`` into one reused buffer: memory stays at one chunk whatever the file size."""
    left = limit
    while left is None or left > 0:
        view = buffer if left is None or left >= len(buffer) else buffer[:left]
        count = read_into(handle, view)
        if not count:
            return
        if left is not None:
            left -= count
        yield view[:count]


def sequential(handle: Any) -> Any:
    """Tell the kernel a local file is read start to end (a larger readahead): reading a cold backup took
    about half the time in the shipping profile. No-op for stores without a file descriptor."""
    with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return handle


def read_into(handle: Any, view: memoryview) -> int:
    """Fill ``view`` from ``handle`` (``readinto`` when the store's file object has it); bytes read."""
    readinto = getattr(handle, "readinto", None)
    if readinto is not None:
        return readinto(view) or 0
    data = handle.read(len(view))  # a store's file object without readinto: read() allocates a chunk
    view[: len(data)] = data
    return len(data)


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
        for chunk in chunks(sequential(handle), buffer):
            digest.update(chunk)
            size += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return size, digest.hexdigest()


def hash_files(
    paths: list[ObjectStoragePath], *, chunk_size: int = CHUNK_SIZE, threads: int = VERIFY_THREADS
) -> Iterator[tuple[int, str]]:
    """Size and SHA-256 of each of ``paths``, in order, ``threads`` files at a time.

    The read-back of a staged copy is CPU-bound (SHA-256 of bytes mostly still in the page cache) and
    hashlib releases the GIL, so two files hash on two cores at once. One buffer per thread.
    """
    if threads <= 1 or len(paths) <= 1:
        buffer = memoryview(bytearray(chunk_size))
        for path in paths:
            yield hash_file(path, chunk_size=chunk_size, buffer=buffer)
        return
    local = threading.local()

    def one(path: ObjectStoragePath) -> tuple[int, str]:
        if not hasattr(local, "buffer"):
            local.buffer = memoryview(bytearray(chunk_size))
        return hash_file(path, chunk_size=chunk_size, buffer=local.buffer)

    with ThreadPoolExecutor(threads, thread_name_prefix="gir-verify") as pool:
        yield from pool.map(one, paths)


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


# --- the pipeline: read and hash here, write in one thread, fsync in others ----------------------------


@dataclass
class _Staging:
    """One file being written by the pipeline; the first failure of its write, flush, fsync or close."""

    path: ObjectStoragePath
    handle: Any
    error: BaseException | None = None
    step: str = "write"
    synced: Future[Future[None]] | None = None  # the writer's hand-over, then the fsync itself


class _Pipeline:
    """Overlaps reading (the caller's thread), hashing (one thread), writing (one thread) and fsync (a few).

    Why: done in turn, the CPU idled during every fsync and the disk idled while a chunk was hashed (see
    the shipping profile in docs/benchmarks.md). The hash and writer threads take the chunks in the
    order they were read; the writer then hands the finished file to the fsync threads. ``finish()``
    returns only when every file was flushed, fsynced (local stores) and closed, and raises for the first
    one that was not, after removing it (``WriteFailed``, as ``writing`` does). Memory stays at
    ``WRITE_AHEAD + 1`` chunks; at most ``FSYNC_AHEAD`` files wait for their fsync (their files stay open
    until then, so an error of the kernel's writeback reaches our fsync, never lost between a close and a
    reopen).
    """

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="gir-copy-hash")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="gir-copy-write")
        self._syncer = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="gir-copy-fsync")
        self._free = [memoryview(bytearray(chunk_size)) for _ in range(WRITE_AHEAD + 1)]
        self._writes: deque[tuple[Future[None], Future[None], memoryview]] = deque()
        self._files: deque[_Staging] = deque()

    # - the caller's thread

    def take(self) -> memoryview:
        """A free buffer; waits for the oldest chunk when every buffer is still being hashed or written."""
        while not self._free:
            written, hashed, buffer = self._writes.popleft()
            hashed.result()
            written.result()
            self._free.append(buffer)
        return self._free.pop()

    def give_back(self, buffer: memoryview) -> None:
        self._free.append(buffer)

    def open(self, path: ObjectStoragePath, mode: str) -> _Staging:
        self._raise_first_error(done_only=True)
        while len(self._files) >= FSYNC_AHEAD:
            oldest = self._files.popleft()
            self._wait(oldest)
            self._raise_if_failed(oldest)
        staging = _Staging(path, path.fs.open(path.path, mode, block_size=self.chunk_size))
        self._files.append(staging)
        return staging

    def write(self, staging: _Staging, buffer: memoryview, count: int, digest: Any) -> None:
        """Queue ``buffer[:count]`` for hashing into ``digest`` and for writing (each in its thread, in
        order); ``buffer`` comes back through ``take`` once both are done."""
        if staging.error is not None:  # an earlier write of this file failed: stop reading it
            self._raise_if_failed(staging)
        view = buffer[:count]
        hashed = self._hasher.submit(digest.update, view)
        self._writes.append((self._writer.submit(self._write, staging, view), hashed, buffer))

    def hashed(self) -> None:
        """Wait until every chunk queued so far is in its digest (the hash thread works in order)."""
        self._hasher.submit(int).result()

    def close(self, staging: _Staging) -> None:
        """Flush, fsync and close ``staging`` once its queued writes are done (in the background)."""
        staging.synced = self._writer.submit(self._finish, staging)

    def finish(self) -> None:
        """Wait for every write and fsync; raise for the first file (in copy order) that failed."""
        for written, hashed, buffer in self._writes:
            with contextlib.suppress(BaseException):
                hashed.result()
                written.result()
            self._free.append(buffer)
        self._writes.clear()
        self._hasher.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._syncer.shutdown(wait=True)
        self._raise_first_error(done_only=False)

    def abort(self) -> None:
        """After an error elsewhere: stop, close every file still open (nothing is fsynced any more)."""
        for staging in self._files:
            staging.error = staging.error or RuntimeError("copy aborted")
        self._hasher.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True, cancel_futures=True)
        self._syncer.shutdown(wait=True, cancel_futures=True)
        for staging in self._files:
            with contextlib.suppress(Exception):
                staging.handle.close()
        self._writes.clear()
        self._files.clear()

    @staticmethod
    def _wait(staging: _Staging) -> None:
        """Until its flush, fsync and close are over (they record their own errors, never raise)."""
        if staging.synced is not None:
            with contextlib.suppress(BaseException):
                staging.synced.result().result()

    def _raise_first_error(self, *, done_only: bool) -> None:
        """Raise for the oldest failed file; ``done_only``: look only at files already settled."""
        while self._files:
            oldest = self._files[0]
            if done_only and not _settled(oldest):
                return
            self._wait(oldest)
            self._files.popleft()
            self._raise_if_failed(oldest)

    def _raise_if_failed(self, staging: _Staging) -> None:
        error = staging.error
        if error is None:
            return
        if staging.step == "write":
            raise error
        raise WriteFailed(
            f"{staging.step} of {staging.path} failed ({error}): its bytes may not be on the destination's "
            "disk, so nothing is published; the staged file was removed and a retry copies it again"
        ) from error

    # - the writer thread

    @staticmethod
    def _write(staging: _Staging, view: memoryview) -> None:
        if staging.error is None:
            try:
                staging.handle.write(view)
            except BaseException as exc:
                staging.error = exc

    def _finish(self, staging: _Staging) -> Future[None]:
        if staging.error is None:
            try:
                staging.step = "flush"
                staging.handle.flush()
            except BaseException as exc:
                staging.error = exc
        return self._syncer.submit(self._sync, staging)

    # - the fsync thread

    @staticmethod
    def _sync(staging: _Staging) -> None:
        if staging.error is not None:
            with contextlib.suppress(Exception):
                staging.handle.close()
            if staging.step != "write":
                _discard(staging.path)
            return
        try:
            if is_local(staging.path):
                staging.step = "fsync"
                os.fsync(staging.handle.fileno())
            staging.step = "close"
            staging.handle.close()
        except BaseException as exc:
            staging.error = exc
            with contextlib.suppress(Exception):
                staging.handle.close()
            _discard(staging.path)


def _settled(staging: _Staging) -> bool:
    """Its flush, fsync and close are over (successfully or not)."""
    if staging.synced is None or not staging.synced.done():
        return False
    return staging.synced.result().done()


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
    throttle: Throttle | None = None,
) -> CopyResult:
    """Stream ``files`` from ``source`` into ``staging``, hashing the source bytes as they are read.

    Resumes a crashed run: a staged file of the same size whose SHA-256 equals the source's is kept; a
    shorter one whose bytes match the start of the source gets only its missing tail appended (stores in
    ``APPEND_PROTOCOLS``); anything else is copied again. Staged files that are not in ``files`` are
    removed. ``last`` (the ready marker) is copied last. Raises ``SourceChanged`` when a file's size or
    mtime moved while it was read. ``throttle`` caps the bytes read from the source (the WAN side).
    """
    ordered = sorted(files, key=lambda item: (item.path == last, item.path))
    total = sum(item.size for item in ordered)
    result = CopyResult(entries=[], bytes_total=total)
    progress = _Progress(
        f"copy {source.name} -> {staging}", total, len(ordered), every=progress_every, clock=clock
    )
    staged = _clear_extras(staging, {item.path for item in ordered}, result)
    can_append = (staging.protocol or "file") in APPEND_PROTOCOLS
    made_dirs: set[str] = set()
    pipeline = _Pipeline(chunk_size)
    try:
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
            copy = _FileCopy(src, dst, item, pipeline, progress, throttle)
            staged_size = staged.get(item.path)
            entry: ManifestEntry | None = None
            if staged_size is not None and staged_size == item.size:
                entry = copy.keep_if_same()
                if entry is not None:
                    _fsync_file(dst)
                    result.files_kept.append(item.path)
            elif staged_size is not None and 0 < staged_size < item.size and can_append:
                entry = copy.append_tail(staged_size)
                if entry is not None:
                    result.files_resumed.append(item.path)
                    result.bytes_copied += item.size - staged_size
            if entry is None:
                entry = copy.copy()
                result.files_copied.append(item.path)
                result.bytes_copied += item.size
            _check_unchanged(src, item)
            result.entries.append(entry)
        pipeline.finish()
    except BaseException:
        pipeline.abort()
        raise
    # The folders' entries must be durable too, or a crash can lose a whole verified file.
    if is_local(staging):
        for folder in sorted(made_dirs | {staging.path}, key=len, reverse=True):
            fsync_local_dir(folder)
    result.seconds = progress.finish()
    result.throttled_seconds = throttle.slept if throttle is not None else 0.0
    result.entries.sort(key=lambda e: e.path)
    return result


def _clear_extras(staging: ObjectStoragePath, wanted: set[str], result: CopyResult) -> dict[str, int]:
    """Remove what a staging folder holds that is not a file of the backup; the sizes of what stays."""
    refuse_link(staging, "staging folder")
    staged, junk = _staged_sizes(staging)
    for relative in sorted(junk) + sorted(set(staged) - wanted):
        log.warning("removing %s from staging %s: not a file of the source backup", relative, staging)
        refuse_links_on_the_way(staging, relative, "staging folder")
        (staging / relative).fs.rm((staging / relative).path)
        result.extras_removed.append(relative)
    staging.fs.makedirs(staging.path, exist_ok=True)
    return {relative: size for relative, size in staged.items() if relative in wanted}


@dataclass
class _FileCopy:
    """One file of the copy: a fresh copy, a resumed tail, or a staged file kept after comparing."""

    src: ObjectStoragePath
    dst: ObjectStoragePath
    item: SourceFile
    pipeline: _Pipeline
    progress: _Progress
    throttle: Throttle | None

    @property
    def piece(self) -> int:
        size = self.pipeline.chunk_size
        return size if self.throttle is None else self.throttle.piece(size)

    def _passed(self, count: int) -> None:
        if self.throttle is not None:
            self.throttle.passed(count)

    def copy(self) -> ManifestEntry:
        digest = hashlib.sha256()
        with self.src.fs.open(self.src.path, "rb", block_size=self.pipeline.chunk_size) as reader:
            size = self._pump(sequential(reader), self.pipeline.open(self.dst, "wb"), digest)
        _check_size(self.src, self.item, size)
        return ManifestEntry(self.item.path, size, digest.hexdigest())

    def _pump(self, reader: Any, staging: _Staging, digest: Any) -> int:
        """Copy the rest of ``reader`` into ``staging``, hashing what passes; bytes copied. Closes it."""
        copied = 0
        piece = self.piece
        while True:
            buffer = self.pipeline.take()
            count = read_into(reader, buffer[:piece])
            if not count:
                self.pipeline.give_back(buffer)
                break
            self.pipeline.write(staging, buffer, count, digest)
            copied += count
            self.progress.advance(count, written=True)
            self._passed(count)
        self.pipeline.close(staging)
        self.pipeline.hashed()
        return copied

    def keep_if_same(self) -> ManifestEntry | None:
        """A staged file of the right size is kept when its SHA-256 equals the source's (both read once)."""
        buffer = self.pipeline.take()
        try:
            _, staged_sha = hash_file(self.dst, chunk_size=self.pipeline.chunk_size, buffer=buffer)

            def passed(count: int) -> None:
                self.progress.advance(count, written=False)
                self._passed(count)

            size, source_sha = hash_file(
                self.src, chunk_size=self.pipeline.chunk_size, buffer=buffer[: self.piece], on_chunk=passed
            )
        finally:
            self.pipeline.give_back(buffer)
        _check_size(self.src, self.item, size)
        if source_sha == staged_sha:
            return ManifestEntry(self.item.path, size, staged_sha)
        log.info("staged %s differs from the source: copying it again", self.item.path)
        self.progress.done -= size
        return None

    def append_tail(self, staged_size: int) -> ManifestEntry | None:
        """A truncated staged file whose bytes equal the start of the source gets only the missing tail."""
        chunk_size = self.pipeline.chunk_size
        buffer = self.pipeline.take()
        try:
            _, staged_sha = hash_file(self.dst, chunk_size=chunk_size, buffer=buffer)
        finally:
            self.pipeline.give_back(buffer)
        digest = hashlib.sha256()
        with self.src.fs.open(self.src.path, "rb", block_size=chunk_size) as reader:
            prefix = 0
            buffer = self.pipeline.take()
            try:
                for chunk in chunks(reader, buffer[: self.piece], limit=staged_size):
                    digest.update(chunk)
                    prefix += len(chunk)
                    self._passed(len(chunk))
            finally:
                self.pipeline.give_back(buffer)
            if prefix != staged_size or digest.copy().hexdigest() != staged_sha:
                log.info("staged %s is not a prefix of the source: copying it again", self.item.path)
                return None
            self.progress.advance(prefix, written=False)
            size = prefix + self._pump(reader, self.pipeline.open(self.dst, "ab"), digest)
        _check_size(self.src, self.item, size)
        log.info(
            "resumed %s: kept %s staged, appended %s",
            self.item.path,
            format_size(prefix),
            format_size(size - prefix),
        )
        return ManifestEntry(self.item.path, size, digest.hexdigest())


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
