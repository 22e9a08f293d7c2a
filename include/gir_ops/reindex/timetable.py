"""The timetable of a re-index DAG that must never run on its own, yet can be backfilled.

A DC without ``reindex.enabled`` (it indexes as it goes) still gets its re-index DAG, for the catch-up after
an outage and for past ranges. ``schedule=None`` would keep the scheduler away, but Airflow 3.3 then
refuses every backfill (``airflow/models/backfill.py``: ``if not dag.timetable.periodic: raise
DagNonPeriodicScheduleException``) and the UI greys out its Backfill option (``is_backfillable`` of
``GET /api/v2/dags/{dag_id}`` is ``timetable_periodic``). ``ManualAndBackfillOnlyTimetable`` is the DC's
``CronDataIntervalTimetable`` (same cron, same time zone, so backfill runs get exactly the intervals a
scheduled DAG would) that never offers the scheduler a run:

- ``periodic`` stays True: backfills are allowed and iterate the cron intervals
  (``SerializedDAG.iter_dagrun_infos_between`` asks ``next_dagrun_info`` with
  ``TimeRestriction(from, to, catchup=True)``).
- ``next_dagrun_info`` answers None to the scheduler. The scheduler does not look at ``can_be_scheduled``
  before creating runs: it creates one whenever ``DagModel.next_dagrun_create_after`` has passed, and that
  comes from ``next_dagrun_info`` with the DAG's own restriction (``earliest=start_date``,
  ``latest=end_date``, ``catchup``). A backfill's restriction always has a ``latest`` (its to-date) and
  ``catchup=True``; the DAG's own has neither (no ``end_date``, ``catchup=False``, which ``__init__``'s
  caller must keep: the DAG integrity tests check it). So: None unless both are there.
- ``can_be_scheduled`` is False too: the DAG processor then skips the latest-run queries
  (``dag_processing/collection.py``), and the SDK treats the DAG like an unscheduled one where that matters
  (param validation, ``allowed_run_types``).
- Manual runs keep ``CronDataIntervalTimetable.infer_manual_data_interval``: a run triggered with a logical
  date re-indexes the cron period ending at or before it.

Custom timetables must be registered through a plugin to be (de)serialized: ``plugins/gir_timetables.py``
registers this class; the DAG processor, scheduler and API server all load it from the plugins folder.
This module is imported on every parse of the re-index DAG file: it imports Airflow core's timetable only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Custom timetables subclass the core classes (the SDK ones cannot be registered through a plugin).
from airflow.timetables.interval import CronDataIntervalTimetable

if TYPE_CHECKING:
    from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction

SUMMARY_PREFIX = "Backfill and manual only"


class ManualAndBackfillOnlyTimetable(CronDataIntervalTimetable):
    """The intervals of ``cron`` in ``timezone``, for backfills and manual runs; never a scheduled run."""

    can_be_scheduled = False
    periodic = True

    def __init__(self, cron: str, timezone: str | object) -> None:
        super().__init__(cron, timezone)  # type: ignore[arg-type]
        cron_words = self.description or self._expression
        self.description = (
            f"{SUMMARY_PREFIX}: the scheduler never starts a run. Trigger it, or backfill a range; each "
            f"backfill run covers one period of '{self._expression}' ({cron_words}, {self._timezone})."
        )

    @property
    def summary(self) -> str:
        """What the UI shows as the DAG's schedule: no schedule, backfill intervals of the cron."""
        return f"{SUMMARY_PREFIX} ({self._expression})"

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        """The next cron interval inside a backfill's range; None for the scheduler's own question."""
        if restriction.latest is None or not restriction.catchup:
            return None
        return super().next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, restriction=restriction
        )
