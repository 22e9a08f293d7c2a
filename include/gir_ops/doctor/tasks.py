"""The doctor DAG's report task: both views in one table, and the run's verdict."""

from __future__ import annotations

import logging
from typing import Any

from include.gir_ops.doctor import spec
from include.gir_ops.doctor.report import to_dict, triggerer_paths_missing
from include.gir_ops.doctor.spec import Row, Status

log = logging.getLogger(__name__)


def report_task(ti: Any) -> dict[str, Any]:
    """Log the table; fail (no retry) when a check failed. Reads both tasks' rows from XCom."""
    from airflow.sdk.exceptions import AirflowFailException

    worker = ti.xcom_pull(task_ids=spec.WORKER_CHECKS)
    triggerer = ti.xcom_pull(task_ids=spec.TRIGGERER_CHECKS)
    rows: list[Row] = []
    if worker is None:
        rows.append(
            Row(
                "worker checks",
                Status.FAIL,
                f"task {spec.WORKER_CHECKS} returned nothing (it failed or timed out): see its log",
                "fix what its log names, then trigger the doctor again",
            )
        )
    else:
        rows += [Row.from_dict(item) for item in worker]
    if triggerer is None:
        rows.append(triggerer_paths_missing(spec.TRIGGERER_TIMEOUT_SECONDS))
    else:
        rows += [Row.from_dict(item) for item in triggerer]
    result = to_dict(rows)
    # Also under its own key: a failed task pushes no return value, and `make doctor` reads the table.
    ti.xcom_push(key=spec.REPORT_XCOM_KEY, value=result)
    level = logging.INFO if result["ok"] else logging.ERROR
    log.log(level, "gir-ops doctor: %s\n%s", result["summary"], result["table"])
    if not result["ok"]:
        raise AirflowFailException(f"gir-ops doctor: {result['summary']}\n{result['table']}")
    return result
