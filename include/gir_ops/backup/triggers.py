"""Wait for SpeechMiner's newest daily backup to be complete in the triggerer, holding no worker slot.

``BackupReadyTrigger`` polls the source through ``ObjectStoragePath`` until the backup is complete or the
absolute deadline (``shipping.wait_timeout_minutes`` after the sensor's first check) passes. The deadline
travels with the trigger, so a triggerer restart does not extend the wait.

Without a ready marker a backup is complete only when two scans ``quiet_minutes`` apart list the same
names, sizes and mtimes (``readiness.backup_readiness``). The worker's first scan travels to the trigger
as ``baseline`` (a few plain fields), so the trigger compares its first poll with it; after a triggerer
restart the comparison simply starts again from that baseline.

Imported while the DAG file is parsed (through ``sensors``): the readiness logic is imported when the
trigger runs. The triggerer imports the trigger by :data:`TRIGGER_CLASSPATH`; triggers stored under the
old path ``include.gir_ops.backup_triggers.BackupReadyTrigger`` still load (a re-export there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN

if TYPE_CHECKING:
    from include.gir_ops.backup.readiness import Readiness, ScanState

TRIGGER_CLASSPATH = "include.gir_ops.backup.triggers.BackupReadyTrigger"


def timeout_message(
    root: str, readiness: Readiness | None, wait_minutes: float, last_error: str | None
) -> str:
    """Why the wait gave up: the folder, what is missing, the last change, and what to check."""
    if readiness is None:
        detail = f"the source could not be read: {last_error}" if last_error else "nothing could be checked"
        return (
            f"no complete SpeechMiner backup under {root} after {wait_minutes:g} min "
            f"(shipping.wait_timeout_minutes): {detail}"
        )
    message = (
        f"SpeechMiner backup {readiness.backup_name} is not complete after waiting {wait_minutes:g} min "
        f"(shipping.wait_timeout_minutes): {readiness.describe()}"
    )
    if "marker" in readiness.reason:
        message += (
            "; SpeechMiner (or the job that marks its backup complete) did not write the marker: check its "
            "Daily Index Backup and that job; do not remove the marker from the topology to get past this "
            "(it is what proves the backup complete)"
        )
    else:
        message += "; SpeechMiner is still writing it or was stopped mid-backup: check the SpeechMiner server"
    if last_error:
        message += f"; last read error: {last_error}"
    return message


class BackupReadyTrigger(BaseTrigger):
    """Poll the newest backup under ``source_root`` until it is complete, missing, or ``deadline`` passes.

    Emits one event: ``{"status": "ready", ...readiness}``, ``{"status": "missing", "message"}`` or
    ``{"status": "timeout", "message"}``. Storage errors (a share that is briefly unreachable) are logged
    and polled through until the deadline.
    """

    def __init__(
        self,
        *,
        source_root: str,
        ready_marker: str | None,
        quiet_seconds: float,
        poll_seconds: float,
        deadline: float,
        wait_minutes: float,
        backup_name_pattern: str = DEFAULT_BACKUP_NAME_PATTERN,
        baseline: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.source_root = source_root
        self.ready_marker = ready_marker
        self.quiet_seconds = quiet_seconds
        self.poll_seconds = poll_seconds
        self.deadline = deadline
        self.wait_minutes = wait_minutes
        self.backup_name_pattern = backup_name_pattern
        self.baseline = baseline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            TRIGGER_CLASSPATH,
            {
                "source_root": self.source_root,
                "ready_marker": self.ready_marker,
                "quiet_seconds": self.quiet_seconds,
                "poll_seconds": self.poll_seconds,
                "deadline": self.deadline,
                "wait_minutes": self.wait_minutes,
                "backup_name_pattern": self.backup_name_pattern,
                "baseline": self.baseline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from include.gir_ops.backup import readiness as checks
        from include.gir_ops.backup.errors import BackupNotFound, SourceUnreachable

        readiness: Readiness | None = None
        previous: Readiness | ScanState | None = (
            checks.ScanState.from_dict(self.baseline) if self.baseline else None
        )
        last_error: str | None = None
        polls = 0
        while True:
            polls += 1
            try:
                # The listing is blocking I/O: run it off the triggerer's event loop.
                readiness = await asyncio.to_thread(
                    checks.backup_readiness,
                    self.source_root,
                    ready_marker=self.ready_marker,
                    quiet_seconds=self.quiet_seconds,
                    previous=previous,
                    name_pattern=self.backup_name_pattern,
                )
                previous = readiness
                last_error = None
            except BackupNotFound as exc:
                unreachable = isinstance(exc, SourceUnreachable)
                event = {"status": "missing", "message": str(exc), "polls": polls, "unreachable": unreachable}
                yield TriggerEvent(event)
                return
            except Exception as exc:  # storage briefly unreachable: keep polling until the deadline
                last_error = f"{type(exc).__name__}: {exc}"
                self.log.warning("cannot check %s yet: %s", self.source_root, last_error)
            if readiness is not None and readiness.complete and last_error is None:
                self.log.info("backup complete: %s", readiness.describe())
                yield TriggerEvent({"status": "ready", "polls": polls, **readiness.as_event()})
                return
            if time.time() >= self.deadline:
                message = timeout_message(self.source_root, readiness, self.wait_minutes, last_error)
                yield TriggerEvent({"status": "timeout", "message": message, "polls": polls})
                return
            if readiness is not None:
                self.log.info("waiting: %s", readiness.describe())
            await asyncio.sleep(max(0.0, min(self.poll_seconds, self.deadline - time.time())))
