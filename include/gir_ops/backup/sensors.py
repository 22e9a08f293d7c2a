"""``SpeechMinerBackupSensor``: wait until SpeechMiner's newest daily backup is complete.

Checks once on the worker; if the backup is not complete yet it defers to ``BackupReadyTrigger``.
Imported while the DAG file is parsed: the readiness logic is imported when the sensor runs.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from include.gir_ops.backup.triggers import BackupReadyTrigger
from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.gir_ops.backup.readiness import Readiness


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
        source_site: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poll_seconds, timeout=wait_timeout_minutes * 60, **kwargs)
        self.source_root = source_root
        self.ready_marker = ready_marker
        self.quiet_minutes = quiet_minutes
        self.wait_timeout_minutes = wait_timeout_minutes
        self.poll_seconds = poll_seconds
        self.backup_name_pattern = backup_name_pattern
        self.source_site = source_site
        self._previous: Readiness | None = None

    def _check(self) -> Readiness:
        from include.gir_ops.backup import readiness as checks
        from include.gir_ops.backup.errors import BackupNotFound, SourceUnreachable

        try:
            readiness = checks.backup_readiness(
                self.source_root,
                ready_marker=self.ready_marker,
                quiet_seconds=self.quiet_minutes * 60,
                previous=self._previous,
                name_pattern=self.backup_name_pattern,
            )
        except SourceUnreachable as exc:
            raise AirflowFailException(self.unreachable_message(str(exc))) from exc
        except BackupNotFound as exc:
            raise AirflowFailException(str(exc)) from exc
        self._previous = readiness
        return readiness

    def unreachable_message(self, detail: str) -> str:
        """The source DC (the primary, during its loss) cannot be reached: say so, and that nothing
        was shipped; not retried, so a lost DC costs one clear failure per run, not a retry storm."""
        site = self.source_site or "the source DC"
        return (
            f"primary unreachable: the SpeechMiner backup source of {site} cannot be reached from this "
            f"worker; tried to list {self.source_root}: {detail}. Nothing was shipped; the backup DC keeps "
            f"its newest verified copy (task freshness says how old). Not retried: during a failover away "
            f"from {site} this is expected; once its share is back, trigger this DAG again"
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """The non-deferred check (``mode="poke"``: the scans of one process are compared).

        Not for ``mode="reschedule"`` without a ready marker: every reschedule is a new process, so two
        scans could never be compared and the backup would never count as complete.
        """
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
            if event.get("unreachable"):
                raise AirflowFailException(self.unreachable_message(event["message"]))
            raise AirflowFailException(event["message"])
        if status == "timeout":
            raise AirflowSensorTimeout(event["message"])
        raise AirflowFailException(f"unexpected event from BackupReadyTrigger: {event!r}")
