"""Wait for SpeechMiner's newest daily backup to be complete without holding a worker slot.

``SpeechMinerBackupSensor`` checks once on the worker; if the backup is not complete yet it defers to
``BackupReadyTrigger``, which polls the source through ``ObjectStoragePath`` in the triggerer until the
backup is complete or the absolute deadline (``shipping.wait_timeout_minutes`` after the first check)
passes. The deadline travels with the trigger, so a triggerer restart does not extend the wait.

Without a ready marker a backup is complete only when two scans ``quiet_minutes`` apart list the same
names, sizes and mtimes (see ``backup.backup_readiness``). The worker's first scan travels to the trigger
as ``baseline`` (a few plain fields), so the trigger compares its first poll with it; after a triggerer
restart the comparison simply starts again from that baseline.

The triggerer imports the trigger as ``include.gir_ops.backup_triggers.BackupReadyTrigger``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.gir_ops.backup import Readiness, ScanState

TRIGGER_CLASSPATH = "include.gir_ops.backup_triggers.BackupReadyTrigger"


def _timeout_message(
    root: str, readiness: Readiness | None, wait_minutes: float, last_error: str | None
) -> str:
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
            "Daily Index Backup, or set shipping.ready_marker to null to rely on the quiet period instead"
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
        from include.gir_ops import backup

        readiness: Readiness | None = None
        previous: Readiness | ScanState | None = (
            backup.ScanState.from_dict(self.baseline) if self.baseline else None
        )
        last_error: str | None = None
        polls = 0
        while True:
            polls += 1
            try:
                # The listing is blocking I/O: run it off the triggerer's event loop.
                readiness = await asyncio.to_thread(
                    backup.backup_readiness,
                    self.source_root,
                    ready_marker=self.ready_marker,
                    quiet_seconds=self.quiet_seconds,
                    previous=previous,
                    name_pattern=self.backup_name_pattern,
                )
                previous = readiness
                last_error = None
            except backup.BackupNotFound as exc:
                yield TriggerEvent({"status": "missing", "message": str(exc), "polls": polls})
                return
            except Exception as exc:  # storage briefly unreachable: keep polling until the deadline
                last_error = f"{type(exc).__name__}: {exc}"
                self.log.warning("cannot check %s yet: %s", self.source_root, last_error)
            if readiness is not None and readiness.complete and last_error is None:
                self.log.info("backup complete: %s", readiness.describe())
                yield TriggerEvent({"status": "ready", "polls": polls, **readiness.as_event()})
                return
            if time.time() >= self.deadline:
                message = _timeout_message(self.source_root, readiness, self.wait_minutes, last_error)
                yield TriggerEvent({"status": "timeout", "message": message, "polls": polls})
                return
            if readiness is not None:
                self.log.info("waiting: %s", readiness.describe())
            await asyncio.sleep(max(0.0, min(self.poll_seconds, self.deadline - time.time())))


class SpeechMinerBackupSensor(BaseSensorOperator):
    """Wait until SpeechMiner's newest daily backup is complete; returns its name and why it is complete.

    Deferrable: after one check on the worker it waits in the triggerer, holding no worker slot. Fails at
    once (no retry) when there is no backup folder at all, and with ``AirflowSensorTimeout`` naming the
    folder and what was missing when the wait times out.
    """

    ui_color = "#d8e9f3"

    def __init__(
        self,
        *,
        source_root: str,
        ready_marker: str | None,
        quiet_minutes: float,
        wait_timeout_minutes: float,
        poll_seconds: float,
        backup_name_pattern: str = DEFAULT_BACKUP_NAME_PATTERN,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poll_seconds, timeout=wait_timeout_minutes * 60, **kwargs)
        self.source_root = source_root
        self.ready_marker = ready_marker
        self.quiet_minutes = quiet_minutes
        self.wait_timeout_minutes = wait_timeout_minutes
        self.poll_seconds = poll_seconds
        self.backup_name_pattern = backup_name_pattern
        self._previous: Readiness | None = None

    def _check(self) -> Readiness:
        from airflow.sdk.exceptions import AirflowFailException

        from include.gir_ops import backup

        try:
            readiness = backup.backup_readiness(
                self.source_root,
                ready_marker=self.ready_marker,
                quiet_seconds=self.quiet_minutes * 60,
                previous=self._previous,
                name_pattern=self.backup_name_pattern,
            )
        except backup.BackupNotFound as exc:
            raise AirflowFailException(str(exc)) from exc
        self._previous = readiness
        return readiness

    def poke(self, context: Context) -> PokeReturnValue:
        """The non-deferred check (``mode="poke"``: the scans of one process are compared).

        Not for ``mode="reschedule"`` without a ready marker: every reschedule is a new process, so two
        scans could never be compared and the backup would never count as complete.
        """
        from airflow.sdk.exceptions import AirflowFailException

        if self.mode == "reschedule" and not self.ready_marker:
            raise AirflowFailException(
                "SpeechMinerBackupSensor in mode='reschedule' needs shipping.ready_marker: without it "
                "completeness compares two scans, which a rescheduled sensor cannot keep; use the "
                "deferrable execute (the default) or poke mode"
            )
        readiness = self._check()
        self.log.info("%s", readiness.describe())
        return PokeReturnValue(readiness.complete, {**readiness.as_event(), "deferred": False})

    def execute(self, context: Context) -> dict[str, Any]:
        readiness = self._check()
        if readiness.complete:
            self.log.info("backup complete: %s", readiness.describe())
            return {**readiness.as_event(), "deferred": False, "polls": 0}
        deadline = time.time() + self.timeout
        self.log.info(
            "backup not complete yet (%s); deferring: checked every %g s in the triggerer for up to %g min",
            readiness.describe(),
            self.poll_seconds,
            self.wait_timeout_minutes,
        )
        self.defer(
            trigger=BackupReadyTrigger(
                source_root=self.source_root,
                ready_marker=self.ready_marker,
                quiet_seconds=self.quiet_minutes * 60,
                poll_seconds=self.poll_seconds,
                deadline=deadline,
                wait_minutes=self.wait_timeout_minutes,
                backup_name_pattern=self.backup_name_pattern,
                baseline=readiness.scan_state().as_dict(),
            ),
            method_name="execute_complete",
            # Backstop only: the trigger reports its own, more helpful, timeout first.
            timeout=timedelta(seconds=self.timeout + max(60.0, 3 * self.poll_seconds)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

        status = event.get("status")
        if status == "ready":
            self.log.info(
                "backup %s complete after %s poll(s): %s",
                event.get("backup_name"),
                event.get("polls"),
                event.get("reason"),
            )
            return {**{k: v for k, v in event.items() if k != "status"}, "deferred": True}
        if status == "missing":
            raise AirflowFailException(event["message"])
        if status == "timeout":
            raise AirflowSensorTimeout(event["message"])
        raise AirflowFailException(f"unexpected event from BackupReadyTrigger: {event!r}")
