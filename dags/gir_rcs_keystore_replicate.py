"""DAG gir_rcs_keystore_replicate: copy the reference RCS keystore to the instances that drifted, approved.

Thin wiring only; the steps live in ``include/gir_ops/keystore/replicate.py`` (the copy itself in
``writing.py``, the two-person rule in ``include/gir_ops/approvals.py``, shared with the failover). Without
a ``keystore_replication`` section in the topology (or without RCS instances) no DAG is defined.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import chain, dag, task

from include.gir_ops import notifications, shared
from include.gir_ops.keystore import spec
from include.gir_ops.topology import load_topology

TOPOLOGY = load_topology()
PREFLIGHT_RECORD = f"ti.xcom_pull(task_ids='{spec.PREFLIGHT}', key='record')"

DOC_MD = f"""
# RCS keystore replication: `{spec.REPLICATE_DAG_ID}`

The GIR guide: the RCS keystore "must be replicated to all the RCS instances in all the data centers".
This DAG copies the reference keystore (**{TOPOLOGY.keystore_reference or "(none)"}**) to the instances
that differ, safely and approved by a second person.

**To run it:** Trigger DAG → `reason` (10+ characters), optionally `targets` (default: the instances the
latest `gir_rcs_keystore_check` found `drift` or `missing`) and `dry_run` → Trigger. Then **another**
approver (`keystore_replication.approvers`) answers `{spec.APPROVE_REPLICATION}` under *Required Actions*.

Steps: `{spec.PREFLIGHT}` (refuses when the reference is missing, unreadable, cannot be opened with its
password or holds no unexpired private key, or when the latest check is older than its schedule allows;
lists per target what will be replaced: digests, alias diff; never bytes) → `{spec.APPROVAL_NEEDED}`
(skips when nothing to do or a dry run) → `{spec.APPROVE_REPLICATION}` → `{spec.REPLICATE}` (the same
two-person rule as the failover, from Airflow's own record of the answer; per target: temp file beside
it, fsync, previous kept as `<name>.bak-<UTC time>`, atomic rename, read back; a target changed since
pre-flight is refused, not overwritten; a failing target never stops the others) → `{spec.VERIFY}` (the
keystore check's logic; updates its asset) → `{spec.AUDIT}` (one JSON file under
`keystore_replication.audit_log`) → `{spec.OUTCOME}` (green only when every target matches; lists the RCS
instances to restart). Full procedure: docs/gir_rcs_keystore_replicate.md.
"""


@dag(
    dag_id=spec.REPLICATE_DAG_ID,
    schedule=None,
    start_date=shared.DAG_START_DATE,
    max_active_runs=1,
    catchup=False,
    # Manual runs only, each guarded by pre-flight and a second person's approval: paused is only a trap.
    is_paused_upon_creation=False,
    tags=["gir", "rcs", "keystore", "hitl"],
    **notifications.dag_kwargs(
        TOPOLOGY,
        spec.REPLICATE_DAG_ID,
        default_args={"owner": "gir-ops", "retries": 2, "retry_delay": timedelta(seconds=15)},
        verdict_task=spec.OUTCOME,
    ),
    params=spec.replicate_params(TOPOLOGY),
    doc_md=DOC_MD,
)
def gir_rcs_keystore_replicate() -> None:
    settings = TOPOLOGY.keystore_replication
    assert settings is not None  # the DAG is defined only with the section

    @task(
        task_id=spec.PREFLIGHT,
        inlets=[spec.RCS_KEYSTORE_CHECK_ASSET],
        execution_timeout=timedelta(minutes=10),
        doc_md="Read-only: the request, the latest keystore check, the reference and every target; the "
        "approval text. Refusals fail at once; reads are retried.",
    )
    def preflight(**context: Any) -> None:
        from include.gir_ops import shared as shared_logic
        from include.gir_ops.keystore.replicate import ReplicationRefused, run_preflight

        with shared_logic.fail_without_retry(ReplicationRefused):
            run_preflight(context)

    @task.short_circuit(
        task_id=spec.APPROVAL_NEEDED,
        ignore_downstream_trigger_rules=False,
        doc_md="Skips the approval and the copy when nothing differs or the run is a dry run.",
    )
    def approval_needed(**context: Any) -> bool:
        from include.gir_ops.keystore.replicate import approval_needed as needed

        return needed(context)

    approve = ApprovalOperator(
        task_id=spec.APPROVE_REPLICATION,
        subject="{{ " + PREFLIGHT_RECORD + "['approval_subject'] }}",
        body="{{ " + PREFLIGHT_RECORD + "['approval_body'] }}",
        assigned_users=spec.replication_approvers(TOPOLOGY),
        response_timeout=timedelta(minutes=settings.response_timeout_minutes),
        defaults=spec.REJECT,
        fail_on_reject=False,
        notifiers=notifications.approval_notifiers(TOPOLOGY, record_task_id=spec.PREFLIGHT),
        retries=0,
        doc_md="The provider's ApprovalOperator. Never retried. What authorizes the copy is Airflow's own "
        f"record of the answer, checked by `{spec.REPLICATE}`. Approvers: "
        f"{', '.join(a.id for a in settings.approvers)}; no answer within "
        f"{settings.response_timeout_minutes} min counts as a rejection.",
    )

    @task(
        task_id=spec.REPLICATE,
        retries=0,
        execution_timeout=timedelta(minutes=15),
        doc_md="The two-person rule (shared with the failover), the approval spent once, then each target "
        "replaced atomically with its previous keystore kept as .bak-<UTC time>. Never retried.",
    )
    def replicate(**context: Any) -> None:
        from include.gir_ops import shared as shared_logic
        from include.gir_ops.keystore.replicate import ReplicationRefused, run_replicate

        with shared_logic.fail_without_retry(ReplicationRefused):
            run_replicate(context)

    @task(
        task_id=spec.VERIFY,
        outlets=[spec.RCS_KEYSTORE_CHECK_ASSET],
        execution_timeout=timedelta(minutes=15),
        doc_md="The keystore check's own logic after the copy; records its asset event, red or green.",
    )
    def verify(**context: Any) -> None:
        from include.gir_ops.keystore.replicate import run_verify

        run_verify(context)

    @task(
        task_id=spec.AUDIT,
        trigger_rule="all_done",
        doc_md="Always runs: one JSON record per run and try under keystore_replication.audit_log (a retry "
        "adds a file, never overwrites one).",
    )
    def audit(**context: Any) -> None:
        from include.gir_ops.keystore.replicate import run_audit

        run_audit(context)

    @task(
        task_id=spec.OUTCOME,
        trigger_rule="all_done",
        retries=0,
        doc_md="The verdict. Never retried: it only reads what the run recorded and fails the run unless "
        "every target matches, nothing was to do, or a dry run; names the RCS instances to restart.",
    )
    def outcome(**context: Any) -> None:
        from include.gir_ops.keystore.replicate import run_outcome

        run_outcome(context)

    chain(preflight(), approval_needed(), approve, replicate(), verify(), audit(), outcome())


if not TOPOLOGY.rcs_instances:
    shared.not_configured(
        spec.REPLICATE_DAG_ID, f"RCS instance ({spec.TOPOLOGY_SECTION})", "add some to replicate a keystore"
    )
elif TOPOLOGY.keystore_replication is None:
    shared.not_configured(
        spec.REPLICATE_DAG_ID,
        f"{spec.REPLICATE_SECTION} section",
        "add one to copy keystores behind an approval, see include/config/topology.yaml",
    )
else:
    gir_rcs_keystore_replicate()
