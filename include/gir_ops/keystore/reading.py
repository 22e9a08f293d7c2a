"""Reading the keystores: each file streamed through SHA-256, many at once, none allowed to hang the check.

Every keystore is read through ``ObjectStoragePath`` (or an injected ``opener``), ``parallel_reads`` at a
time, because reads wait on storage, not on the CPU. An open or read that does not answer within
``keystore_check.read_timeout_seconds`` (a FIFO, a hung NFS/SMB mount) makes that instance unreadable: a
thread blocked in open()/read() cannot be stopped, so each read runs in a daemon thread that nothing ever
joins. A read error is never drift: it ends as ``missing`` or an ``error`` on the reading.

The bytes of a keystore stay inside this module (and the opening in ``formats``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from include.gir_ops.keystore.formats import (
    FORMAT_JCEKS,
    FORMAT_JKS,
    FORMAT_PKCS12,
    FORMAT_UNKNOWN,
    der_length_problem,
    java_structure_problem,
    open_java_keystore,
    open_pkcs12,
    sniff_format,
)
from include.gir_ops.keystore.model import CertificateInfo, KeystoreReading, KeystoreTarget
from include.gir_ops.shared import missing_path_detail
from include.gir_ops.topology import DEFAULT_KEYSTORE_PARALLEL_READS, DEFAULT_KEYSTORE_READ_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024
# Keystores are kilobytes; a bigger file is still fingerprinted, but not held in memory to be opened.
MAX_OPEN_BYTES = 4 * 1024 * 1024


def open_keystore(url: str) -> BinaryIO:
    """Open a keystore URL for binary reading through Airflow's object storage layer."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url).open("rb")


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
        # "file does not exist" (the folder is there) vs "the share is not mounted on this worker"
        reading.error = missing_path_detail(url)
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
    """Decide whether the file is usable (structure first, no password needed), and open it when a password
    is available: PKCS12, JKS and JCEKS alike."""
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
    java = reading.format in (FORMAT_JKS, FORMAT_JCEKS)
    if java:
        problem = java_structure_problem(content.data)
        if problem:
            reading.error = problem
            return
    if reading.format == FORMAT_UNKNOWN:
        reading.not_opened_reason = "not PKCS12, JKS or JCEKS: compared by bytes only"
    elif password is None:
        reading.not_opened_reason = not_opened_reason or "no password_conn_id: compared by bytes only"
    else:
        data, conn_id = content.data, reading.target.password_conn_id
        opener = open_java_keystore if java else open_pkcs12
        certificates, error = (cache or OpenedKeystores()).open(
            (reading.sha256 or "", conn_id),
            lambda: opener(data, password, conn_id, now=now, expiry_warning_days=expiry_warning_days),
        )
        reading.certificates, reading.error, reading.opened = certificates, error, error is None


class OpenedKeystores:
    """Opened keystore contents by (file SHA-256, password connection), shared by the reading threads.

    Replicated keystores are the same bytes, so a hundred instances need one PKCS12 decryption (or one
    JKS/JCEKS digest), not a hundred. Opening holds the GIL anyway, so one lock costs no parallelism.
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


def preload(opener: Callable[[str], BinaryIO]) -> None:
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
    preload(opener)
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
