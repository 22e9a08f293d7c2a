"""DAG gir_doctor: does this deployment actually work? Checks run where the workers and the triggerer run.

Thin wiring only; the checks live in ``include/gir_ops/doctor/`` (the same ones ``python -m
include.gir_ops.doctor`` runs from a shell).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import TriggerRule, dag, task

# Named here so the dag-processor pre-imports it once (the doctor's trigger imports it too).
from airflow.triggers.base import BaseTrigger  # noqa: F401

from include.gir_ops import shared
from include.gir_ops.doctor import spec
from include.gir_ops.doctor.operators import TriggererChecksOperator

DOC_MD = f"""
# Deployment doctor: `{spec.DAG_ID}`

Trigger it (no params) after every deployment and after every change of topology, connections, pools,
users or mounts: it is the last step of `docs/deployment.md`. It runs on a worker and in the triggerer, so
it sees their mounts and network, and ends with a table (check, result, fix) in the log of `{spec.REPORT}`;
the run **fails when any check fails**.

Checks:

- **topology**: the file in use (path and a short hash); the bundled demo topology outside the demo is
  refused.
- **RWS <site>**: each DC's connection exists and answers `GET /api/v2/ops/genesys-environments` as the
  ops user; **genesys environment**: all DCs list the same one environment ID.
- **Airflow API connection**, **pool <name>** (every pool the DAGs use, with the slots the topology
  intends), **triggerer** (running: the approval wait, the backup wait and the switch verification need
  it).
- **approver <id>**: every `failover.approvers` id is a user of the auth manager (SimpleAuthManager and FAB;
  "cannot check" for others); **approvers (two-person rule)**: at least two exist.
- **audit log**: `failover.audit_log` is writable, and on shared storage when more than one worker exists.
- **<path> from the worker / from the triggerer**: the SpeechMiner source and destination and every RCS
  keystore are readable there ("file does not exist" vs "the share is not mounted on this worker").
- **notifications**: channels accept a test message (or "not configured").

Tasks: `{spec.WORKER_CHECKS}` (everything a worker can see) → `{spec.TRIGGERER_CHECKS}` (deferred: the
paths read inside the triggerer, at most {spec.TRIGGERER_TIMEOUT_SECONDS} s) → `{spec.REPORT}` (always: the
table, the run's verdict). The same checks from a shell: `python -m include.gir_ops.doctor` (`make doctor`
on the `make run` stack). Reads only; the one write is a probe file in the audit log folder, deleted again.
"""

NEVER_RETRIED = (
    " Never retried: the doctor reports what it finds at this moment, and a retry would hide a check that "
    "fails only sometimes; trigger the doctor again after a fix."
)


@dag(
    dag_id=spec.DAG_ID,
    schedule=None,
    start_date=shared.DAG_START_DATE,
    catchup=False,
    max_active_runs=1,
    # Manually triggered; unpaused so a trigger runs at once.
    is_paused_upon_creation=False,
    tags=["gir", "doctor"],
    default_args={"owner": "gir-ops", "retries": 0},
    doc_md=DOC_MD,
)
def gir_doctor() -> None:
    @task(
        task_id=spec.WORKER_CHECKS,
        execution_timeout=timedelta(minutes=5),
        doc_md="Every check a worker can make: topology, RWS, API, pools, approvers, audit log, paths."
        + NEVER_RETRIED,
    )
    def worker_checks() -> list[dict[str, Any]]:
        from include.gir_ops.doctor.checks import worker_rows

        return [row.to_dict() for row in worker_rows()]

    triggerer_checks = TriggererChecksOperator(
        task_id=spec.TRIGGERER_CHECKS,
        trigger_rule=TriggerRule.ALL_DONE,
        doc_md="Deferred: the triggerer reads the SpeechMiner folders and every keystore." + NEVER_RETRIED,
    )

    @task(
        task_id=spec.REPORT,
        trigger_rule=TriggerRule.ALL_DONE,
        doc_md="The table (check, result, fix); fails the run when a check failed." + NEVER_RETRIED,
    )
    def report(**context: Any) -> dict[str, Any]:
        from include.gir_ops.doctor.tasks import report_task

        return report_task(context["ti"])

    worker_checks() >> triggerer_checks >> report()


gir_doctor()
