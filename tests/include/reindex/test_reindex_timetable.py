"""ManualAndBackfillOnlyTimetable: the cron intervals for backfills and manual runs, never a scheduled run.

Asked the way Airflow 3.3 asks it: the scheduler through ``SerializedDAG.next_dagrun_info`` (the DAG's own
restriction), a backfill through ``SerializedDAG.iter_dagrun_infos_between``, a manual run through
``infer_manual_data_interval``, all on the DAG after a serialization round trip (what the scheduler and
the API server hold).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable

from include.gir_ops.reindex.timetable import ManualAndBackfillOnlyTimetable


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def intervals(infos: Any) -> list[tuple[datetime, datetime]]:
    return [(info.data_interval.start, info.data_interval.end) for info in infos]


def round_trip(dag: Any) -> Any:
    """The DAG as the scheduler and the API server get it: serialized, then deserialized."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))


@pytest.fixture
def dc1_dag(airflow_db: Path, load_dag: Any) -> Any:
    """DC1 of the example topology: reindex.enabled false, reindex.schedule 0 2 * * * in UTC."""
    return load_dag("gir_es_reindex_dc1")


def test_the_unscheduled_dc_dag_survives_serialization_with_its_cron_and_time_zone(dc1_dag: Any) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    encoded = DagSerialization.serialize_dag(dc1_dag)
    assert encoded["timetable"] == {
        "__type": "include.gir_ops.reindex.timetable.ManualAndBackfillOnlyTimetable",
        "__var": {"expression": "0 2 * * *", "timezone": "UTC"},
    }
    timetable = DagSerialization.deserialize_dag(encoded).timetable
    assert type(timetable) is ManualAndBackfillOnlyTimetable
    assert timetable == ManualAndBackfillOnlyTimetable("0 2 * * *", "UTC")
    assert (timetable.periodic, timetable.can_be_scheduled) == (True, False)
    assert timetable.summary == "Backfill and manual only (0 2 * * *)"
    assert timetable.description.startswith("Backfill and manual only: the scheduler never starts a run.")
    assert "'0 2 * * *' (At 02:00, UTC)" in timetable.description


def test_an_unregistered_timetable_would_not_serialize() -> None:
    """Why plugins/gir_timetables.py exists: Airflow refuses custom timetables it cannot find again."""
    from airflow.serialization.encoders import encode_timetable
    from airflow.serialization.helpers import TimetableNotRegistered

    class Unregistered(ManualAndBackfillOnlyTimetable):
        pass

    with pytest.raises(TimetableNotRegistered):
        encode_timetable(Unregistered("0 2 * * *", "UTC"))
    assert encode_timetable(ManualAndBackfillOnlyTimetable("0 2 * * *", "UTC"))["__type"].endswith(
        "ManualAndBackfillOnlyTimetable"
    )


def test_the_scheduler_gets_no_next_run(dc1_dag: Any) -> None:
    """``DagModel.next_dagrun_create_after`` comes from this: None means the scheduler never creates a run."""
    dag = round_trip(dc1_dag)
    assert dag.catchup is False and dag.end_date is None  # the DAG's restriction the timetable relies on
    assert dag.next_dagrun_info(last_automated_run_info=None) is None
    assert dag.next_dagrun_info(last_automated_run_info=None, restricted=False) is None
    last = dag.timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(utc(2026, 11, 1), utc(2026, 11, 3), catchup=True),
    )
    assert last is not None  # a backfill's question is answered...
    assert dag.next_dagrun_info(last_automated_run_info=last) is None  # ...but never continued on its own


@pytest.mark.parametrize("catchup", [True, False])
def test_no_run_without_a_backfill_range_whatever_the_catchup(catchup: bool) -> None:
    timetable = ManualAndBackfillOnlyTimetable("0 2 * * *", "UTC")
    restriction = TimeRestriction(utc(2026, 1, 1), None, catchup=catchup)
    assert timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction) is None
    assert timetable.next_dagrun_info_v2(last_dagrun_info=None, restriction=restriction) is None


def test_a_backfill_gets_the_cron_intervals_of_the_range(dc1_dag: Any) -> None:
    dag = round_trip(dc1_dag)
    infos = list(dag.iter_dagrun_infos_between(utc(2026, 11, 1), utc(2026, 11, 4)))
    assert intervals(infos) == [
        (utc(2026, 11, 1, 2), utc(2026, 11, 2, 2)),
        (utc(2026, 11, 2, 2), utc(2026, 11, 3, 2)),
        (utc(2026, 11, 3, 2), utc(2026, 11, 4, 2)),
    ]
    assert [info.logical_date for info in infos] == [start for start, _ in intervals(infos)]


def test_backfill_intervals_equal_a_scheduled_dags_across_a_dst_change() -> None:
    """Same cron, same zone, same intervals as the core CronDataIntervalTimetable (Berlin, 25 Oct 2026)."""

    def backfill_intervals(timetable: Any) -> list[tuple[datetime, datetime]]:
        restriction = TimeRestriction(utc(2026, 10, 22), utc(2026, 10, 28), catchup=True)
        found, info = [], None
        while info := timetable.next_dagrun_info_v2(last_dagrun_info=info, restriction=restriction):
            found.append(info)
        return intervals(found)

    ours = backfill_intervals(ManualAndBackfillOnlyTimetable("0 2 * * *", "Europe/Berlin"))
    assert ours == backfill_intervals(CronDataIntervalTimetable("0 2 * * *", "Europe/Berlin"))
    assert (utc(2026, 10, 24, 0), utc(2026, 10, 25, 1)) in ours  # the 25-hour day
    assert len(ours) == 6


def test_a_manual_run_gets_the_cron_period_ending_at_or_before_its_logical_date(dc1_dag: Any) -> None:
    timetable = round_trip(dc1_dag).timetable
    assert timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 11, 20, 12)) == (
        DataInterval(pendulum.datetime(2026, 11, 19, 2), pendulum.datetime(2026, 11, 20, 2))
    )
    assert timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 11, 20, 2)) == (
        DataInterval(pendulum.datetime(2026, 11, 19, 2), pendulum.datetime(2026, 11, 20, 2))
    )
