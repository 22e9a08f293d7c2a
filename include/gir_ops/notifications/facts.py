"""What a notification says about a run, read where the callback runs.

A DAG's ``on_failure_callback`` runs in the dag-processor (or in the test process under ``dag.test()``),
not in the task that failed, so the failed tasks and their error lines are read through Airflow's public
REST API (connection ``gir_airflow_api``, the project's read-only service user): the failed task
instances of the run, and the error line each one recorded when it failed (XCom ``gir_failure``, written
by :func:`notifiers.record_failure`, scrubbed there). When the API cannot be asked, the message still
goes out with what the callback's context holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from include.gir_ops.notifications.scrub import one_line

log = logging.getLogger(__name__)

FAILURE_XCOM_KEY = "gir_failure"
# The failed task writes its error line just after Airflow marked it failed; the run's callback may start
# a moment before that: wait this long for it.
ERROR_LINE_WAIT_SECONDS = 10.0


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"


def failed_tasks(
    dag_id: str, run_id: str, context: Mapping[str, Any], wait_seconds: float = ERROR_LINE_WAIT_SECONDS
) -> list[dict[str, Any]]:
    """``[{"task_id", "map_index", "error"}]`` of the run's failed task instances (never raises)."""
    try:
        from include.gir_ops.airflow_api import AirflowApiClient

        with AirflowApiClient() as api:
            body = api.get(
                f"{_run_path(dag_id, run_id)}/taskInstances?state=failed&limit=100",
                what=f"the failed tasks of {dag_id} {run_id}",
                reads="DAG runs",
            )
            failed = [
                {"task_id": ti["task_id"], "map_index": ti.get("map_index", -1), "error": None}
                for ti in (body or {}).get("task_instances") or []
            ]
            deadline = time.monotonic() + wait_seconds
            for ti in failed:
                while True:
                    ti["error"] = _error_line(api, dag_id, run_id, ti["task_id"], ti["map_index"])
                    if ti["error"] or time.monotonic() >= deadline:
                        break
                    time.sleep(0.5)
            return failed
    except Exception as exc:
        log.warning(
            "could not read the failed tasks of %s %s through the Airflow API (%s); the message names the "
            "task the callback was given",
            dag_id,
            run_id,
            one_line(exc),
        )
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        return []
    return [{"task_id": ti.task_id, "map_index": getattr(ti, "map_index", -1), "error": None}]


def _error_line(api: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> str | None:
    body = api.get(
        f"{_run_path(dag_id, run_id)}/taskInstances/{quote(task_id, safe='')}/xcomEntries/"
        f"{FAILURE_XCOM_KEY}?map_index={map_index}&deserialize=true",
        what=f"the error line of {task_id}",
        reads="DAG runs",
    )
    value = (body or {}).get("value")
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return value
    return (value or {}).get("error") if isinstance(value, dict) else None


def xcom(dag_id: str, run_id: str, task_id: str, key: str, context: Mapping[str, Any]) -> Any:
    """One XCom of this run: through the callback's task instance where it can ask, else the REST API."""
    ti = context.get("ti")
    if ti is not None:
        try:
            return ti.xcom_pull(task_ids=task_id, key=key, dag_id=dag_id, run_id=run_id)
        except Exception:  # noqa: S110 - no Execution API here (dag.test()): the REST API below
            pass
    try:
        from include.gir_ops.airflow_api import AirflowApiClient

        with AirflowApiClient() as api:
            body = api.get(
                f"{_run_path(dag_id, run_id)}/taskInstances/{quote(task_id, safe='')}/xcomEntries/"
                f"{quote(key, safe='')}?deserialize=true",
                what=f"XCom {key} of {task_id}",
                reads="DAG runs",
            )
    except Exception as exc:
        log.warning("could not read XCom %s of %s in %s %s: %s", key, task_id, dag_id, run_id, one_line(exc))
        return None
    value = (body or {}).get("value")
    if isinstance(value, str):
        import json

        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
