"""Registers gir-ops' custom timetables: the DAG processor, scheduler and API server must (de)serialize them.

Thin on purpose: the logic lives in ``include/gir_ops/reindex/timetable.py``.
"""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from include.gir_ops.reindex.timetable import ManualAndBackfillOnlyTimetable


class GirTimetablesPlugin(AirflowPlugin):
    """The re-index DAG of a DC without ``reindex.enabled``: backfill and manual runs, never scheduled."""

    name = "gir_timetables"
    timetables: ClassVar[list[type]] = [ManualAndBackfillOnlyTimetable]
