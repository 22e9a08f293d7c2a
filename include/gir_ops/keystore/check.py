"""The whole check, as the DAG's task runs it: passwords looked up once, every keystore read and compared.

Never raises for a keystore problem: the report says what is wrong, and the caller decides to fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO

from include.gir_ops.keystore.compare import compare_keystores
from include.gir_ops.keystore.model import KeystoreTarget, targets_from_topology
from include.gir_ops.keystore.reading import open_keystore, preload, read_keystores
from include.gir_ops.keystore.report import KeystoreReport, log_report
from include.gir_ops.topology import DEFAULT_KEYSTORE_PARALLEL_READS

if TYPE_CHECKING:
    from include.gir_ops.topology import Topology

log = logging.getLogger(__name__)

PasswordGetter = Callable[[str], str | None]


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


def check_replication(
    topology: Topology,
    *,
    parallel_reads: int = DEFAULT_KEYSTORE_PARALLEL_READS,
    read_timeout_seconds: float | None = None,
    reference: str | None = None,
    get_password: PasswordGetter = connection_password,
    now: datetime | None = None,
    opener: Callable[[str], BinaryIO] = open_keystore,
    logger: logging.Logger = log,
) -> KeystoreReport:
    """Read, fingerprint and compare every RCS keystore of the topology; log and return the report.

    Never raises for a keystore problem: the report says what is wrong, and the caller decides to fail.
    A keystore that does not answer within ``read_timeout_seconds`` (default: the topology's
    ``keystore_check.read_timeout_seconds``) is unreadable; the report still comes out. ``reference``
    (default: the topology's) is the instance every other is compared with.
    """
    now = now or datetime.now(UTC)
    reference = reference or topology.keystore_reference
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
        reference or "(none)",
    )
    preload(opener)
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
        reference,
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
