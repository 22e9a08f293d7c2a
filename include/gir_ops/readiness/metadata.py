"""What the other DAGs recorded, read from Airflow's metadata database in the API server's session.

Only what Airflow itself stores for every run: Asset events (the keystore check's and the backup's,
with their extras), the return values of tasks (XCom ``return_value``), DAG runs, and Human-in-the-loop
requests. Never a log file. Each query is bounded (latest row, or the last ``COVERAGE_DAYS``), so a year
of history costs an index lookup, not a scan of it (``benchmarks/readiness_status.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.orm import Session

RETURN_VALUE = "return_value"


def _value(raw: Any) -> Any:
    """An XCom value as stored (JSON text on some databases, already decoded on others)."""
    if isinstance(raw, str | bytes):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def latest_asset_event(session: Session, asset_name: str) -> dict[str, Any] | None:
    """The newest event of the Asset named ``asset_name``: its extra, when, and the run that emitted it."""
    from airflow.models.asset import AssetEvent, AssetModel

    row = session.execute(
        select(
            AssetEvent.extra,
            AssetEvent.timestamp,
            AssetEvent.source_dag_id,
            AssetEvent.source_run_id,
        )
        .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        .where(AssetModel.name == asset_name)
        .order_by(AssetEvent.timestamp.desc(), AssetEvent.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "extra": dict(row.extra or {}),
        "timestamp": row.timestamp,
        "dag_id": row.source_dag_id,
        "run_id": row.source_run_id,
    }


def latest_run(session: Session, dag_id: str) -> dict[str, Any] | None:
    """The DAG's newest run (by when it was due to run), whatever its state."""
    from airflow.models.dagrun import DagRun

    row = session.execute(
        select(DagRun.run_id, DagRun.state, DagRun.start_date, DagRun.end_date, DagRun.run_after)
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.run_after.desc(), DagRun.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "dag_id": dag_id,
        "run_id": row.run_id,
        "state": _state(row.state),
        "start_date": row.start_date,
        "end_date": row.end_date,
    }


# Decoded return values per run: (dag_id, task_id, run pk) -> (signature, values). An XCom row is never
# changed in place (a cleared task's row is deleted, its rerun writes a new one), so a run whose rows have
# the same count and newest write time as when they were decoded still has the same values: a page refresh
# reads one row per run and decodes only what is new.
_DECODED: dict[tuple[str, str, int], tuple[tuple[int, str], list[Any]]] = {}
_DECODED_MAX_RUNS = 20_000


def task_returns(
    session: Session, dag_id: str, task_id: str, since: datetime, decode: Any = None
) -> tuple[tuple[tuple[int, int, str], ...], list[Any]]:
    """Return values of ``task_id`` (every map index) in runs of ``dag_id`` that ended after ``since`` (or
    have not ended), written after ``since``, each decoded once per process (``decode`` shapes it).

    Also returns the runs' signature (run pk, rows, newest write), which changes whenever the values do.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel

    recent_runs = select(DagRun.id).where(
        DagRun.dag_id == dag_id, or_(DagRun.end_date >= since, DagRun.end_date.is_(None))
    )
    # The key is compared in Python, not in SQL: with it in the WHERE clause SQLite walks the index on
    # ``key`` (every return value of every task ever) instead of the primary key (run, task, map index, key).
    where = (
        XComModel.dag_run_id.in_(recent_runs),
        XComModel.task_id == task_id,
        XComModel.timestamp >= since,
    )
    written = func.max(cast(XComModel.timestamp, String))  # as stored: a signature, never converted
    signature = tuple(
        (row[0], row[1], row[2])
        for row in session.execute(
            select(XComModel.dag_run_id, func.count(), written)
            .where(*where)
            .group_by(XComModel.dag_run_id)
            .order_by(XComModel.dag_run_id)
        )
    )
    stale = [
        pk
        for pk, count, newest in signature
        if _DECODED.get((dag_id, task_id, pk), ((),))[0] != (count, newest)
    ]
    if stale:
        if len(_DECODED) + len(stale) > _DECODED_MAX_RUNS:
            _DECODED.clear()
            stale = [pk for pk, _, _ in signature]
        fresh: dict[int, list[Any]] = {pk: [] for pk in stale}
        rows = session.execute(
            select(XComModel.dag_run_id, XComModel.key, XComModel.value).where(
                *where, XComModel.dag_run_id.in_(stale)
            )
        )
        for row in rows:
            if row.key == RETURN_VALUE:
                value = _value(row.value)
                fresh[row.dag_run_id].append(decode(value) if decode else value)
        wanted = {pk: (count, newest) for pk, count, newest in signature}
        for pk, values in fresh.items():
            _DECODED[(dag_id, task_id, pk)] = (wanted[pk], values)
    values = [v for pk, _, _ in signature for v in _DECODED[(dag_id, task_id, pk)][1]]
    return signature, values


def task_return(session: Session, dag_id: str, run_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel

    raw = session.scalar(
        select(XComModel.value)
        .where(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            XComModel.task_id == task_id,
            XComModel.key == RETURN_VALUE,
        )
        .limit(1)
    )
    return None if raw is None else _value(raw)


def last_finished_run(session: Session, dag_id: str) -> dict[str, Any] | None:
    """The newest run of ``dag_id`` that ended (success or failed), with who triggered it."""
    from airflow.models.dagrun import DagRun

    row = session.execute(
        select(
            DagRun.run_id,
            DagRun.state,
            DagRun.start_date,
            DagRun.end_date,
            DagRun.triggering_user_name,
            DagRun.conf,
        )
        .where(DagRun.dag_id == dag_id, DagRun.end_date.is_not(None))
        .order_by(DagRun.end_date.desc(), DagRun.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "dag_id": dag_id,
        "run_id": row.run_id,
        "state": _state(row.state),
        "start_date": row.start_date,
        "end_date": row.end_date,
        "triggered_by": row.triggering_user_name,
        "conf": dict(row.conf or {}),
    }


def active_runs(session: Session, dag_id: str) -> list[dict[str, Any]]:
    """Runs of ``dag_id`` that are queued or running now."""
    from airflow.models.dagrun import DagRun

    rows = session.execute(
        select(DagRun.run_id, DagRun.state, DagRun.start_date, DagRun.triggering_user_name, DagRun.conf)
        .where(DagRun.dag_id == dag_id, DagRun.state.in_(("queued", "running")))
        .order_by(DagRun.id)
    ).all()
    return [
        {
            "dag_id": dag_id,
            "run_id": r.run_id,
            "state": _state(r.state),
            "start_date": r.start_date,
            "triggered_by": r.triggering_user_name,
            "conf": dict(r.conf or {}),
        }
        for r in rows
    ]


def answer(session: Session, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
    """Airflow's record of the Human-in-the-loop answer of one task instance (who, when, what)."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance

    row = session.execute(
        select(HITLDetail.responded_by, HITLDetail.responded_at, HITLDetail.chosen_options)
        .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id)
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "responded_by": dict(row.responded_by or {}) or None,
        "responded_at": row.responded_at,
        "chosen_options": list(row.chosen_options or []),
    }


def waiting_approvals(session: Session, dag_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Human-in-the-loop requests of these DAGs that nobody has answered yet and that still wait."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance

    rows = session.execute(
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            HITLDetail.subject,
            HITLDetail.created_at,
        )
        .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
        .where(
            and_(
                TaskInstance.dag_id.in_(list(dag_ids)),
                HITLDetail.responded_at.is_(None),
                TaskInstance.state == "awaiting_input",
            )
        )
        .order_by(HITLDetail.created_at)
    ).all()
    return [
        {
            "dag_id": r.dag_id,
            "run_id": r.run_id,
            "task_id": r.task_id,
            "map_index": r.map_index,
            "subject": r.subject,
            "created_at": r.created_at,
        }
        for r in rows
    ]


def project_dag_ids(session: Session, prefix: str = "gir_") -> list[str]:
    """The project's DAGs known to Airflow (their ids start with ``gir_``)."""
    from airflow.models.dag import DagModel

    return list(session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.startswith(prefix))))
