"""Deadline Alerts: the scheduler's own code creates and misses each DAG's deadline, the triggerer's own
``CallbackTrigger`` runs the callback, and the message reaches a real receiver.

The DAG is parsed and serialized as the dag-processor does; a scheduled run is created queued, as the
scheduler creates it (which is when Airflow computes the deadline from ``queued_at``); the deadline is
then handed to ``Deadline.handle_miss`` (what the scheduler calls once it has passed) and the queued
callback is run through ``CallbackTrigger.run`` (what the triggerer does).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from include.gir_sim.notify_receiver import NotificationReceiver
from tests.conftest import REPO_ROOT, SimulatedGir
from tests.include.notifications import notification_support
from tests.include.notifications.notification_support import full_text, wait_for_messages

receiver = notification_support.receiver  # the fixture


def _serialize(dag_file: Path) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()  # the bundle row the DAG belongs to, as dag.test() makes it

    bag = DagBag(dag_folder=str(dag_file))
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)


def _queue_scheduled_run(dag_id: str) -> tuple[str, datetime, datetime, dict[str, Any]]:
    """A scheduled run created queued; its deadline missed. Returns run_id, queued_at, deadline, callback."""
    from airflow.models.deadline import Deadline
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    end = start + timedelta(hours=1)
    with create_session() as session:
        dag = SerializedDagModel.get_dag(dag_id, session=session)
        run = dag.create_dagrun(
            run_id=f"scheduled__{end.isoformat()}",
            logical_date=start,
            data_interval=(start, end),
            run_after=end,
            run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TIMETABLE,
            state=DagRunState.QUEUED,
            session=session,
        )
        session.flush()
        (deadline,) = session.scalars(select(Deadline).where(Deadline.dagrun_id == run.id)).all()
        deadline.handle_miss(session)  # the scheduler, once deadline_time has passed
        session.flush()
        result = (run.run_id, run.queued_at, deadline.deadline_time, dict(deadline.callback.data))
    return result


def _delete_run(dag_id: str, run_id: str) -> None:
    """The run, and with it (ON DELETE CASCADE) its deadline and that deadline's callback."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))


def _run_callback_as_the_triggerer(data: dict[str, Any]) -> list[dict[str, Any]]:
    from airflow.triggers.callback import CallbackTrigger

    async def collect() -> list[dict[str, Any]]:
        trigger = CallbackTrigger(callback_path=data["path"], callback_kwargs=dict(data["kwargs"]))
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


@pytest.mark.parametrize(
    "case",
    [
        (
            "gir_rcs_keystore_check.py",
            "gir_rcs_keystore_check",
            timedelta(hours=2),
            "did not run for 2 periods",
        ),
        (
            "gir_es_reindex.py",
            "gir_es_reindex_dc2",
            timedelta(hours=6),
            "re-index of DC2 has not finished 6 h",
        ),
        ("gir_speechminer_backup_ship.py", "gir_speechminer_backup_ship", timedelta(hours=8), "not shipped"),
    ],
)
def test_a_late_run_is_reported_by_its_deadline_alert(
    case: tuple[str, str, timedelta, str], gir: SimulatedGir, receiver: NotificationReceiver, airflow_db: Path
) -> None:
    dag_file, dag_id, late_after, says = case
    _serialize(REPO_ROOT / "dags" / dag_file)
    run_id, queued_at, deadline_time, callback = _queue_scheduled_run(dag_id)
    try:
        assert deadline_time == queued_at + late_after
        events = _run_callback_as_the_triggerer(callback)
    finally:
        _delete_run(dag_id, run_id)  # a queued run left behind would hold the DAG's max_active_runs
    assert events[-1]["state"] == "success", events

    (message,) = wait_for_messages(receiver, 1, title_contains="DEADLINE MISSED")
    text = full_text(message)
    assert message["title"] == f"[gir-ops] DEADLINE MISSED: {dag_id}"
    assert message["type"] == "warning"
    assert says in text
    assert f"Run: {run_id} (state queued)" in text
    assert f"/dags/{dag_id}/runs/" in text
    for secret in (gir.ops_password, gir.keystore_password):
        assert secret not in text


def test_a_run_that_already_failed_is_not_reported_late_again(receiver: NotificationReceiver) -> None:
    """Airflow keeps the deadline of a failed run; its failure was already notified."""
    from include.gir_ops.notifications.notifiers import deadline_missed

    context = {
        "dag_run": {
            "dag_id": "gir_x",
            "dag_run_id": "r1",
            "state": "failed",
            "end_date": "2026-11-30T01:00Z",
        },
        "deadline": {"deadline_time": "2026-11-30T02:00Z"},
    }
    asyncio.run(deadline_missed(conn_id="gir_apprise", tag=None, what="late", context=context))
    assert receiver.received() == []
