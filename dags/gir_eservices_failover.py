"""eServices failover (and switch-back) with pre-flight, two-person approval, verification and audit.

Thin on purpose: ids, the trigger form and the operators come from the light modules
``include.gir_ops.failover.spec`` and ``.operators``; the steps' logic (RWS client, Airflow API client) is
imported inside each task, when it runs. Without a ``failover`` section in the topology the feature is
not configured: this file defines no DAG and logs one warning.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

# Named here so the dag-processor pre-imports them once instead of in every parse (it pre-imports the
# airflow modules a DAG file names; the project's own modules import these too).
from airflow.providers.standard.operators.hitl import ApprovalOperator  # noqa: F401
from airflow.sdk import chain, dag, task
from airflow.triggers.base import BaseTrigger  # noqa: F401

from include.gir_ops import notifications, shared
from include.gir_ops.failover import spec
from include.gir_ops.failover.operators import (
    ConfirmSwitchOperator,
    FailoverApprovalOperator,
    VerifyEServicesSiteOperator,
)
from include.gir_ops.pools import check_pools
from include.gir_ops.topology import load_topology

TOPOLOGY = load_topology()
PREFLIGHT_RECORD = f"ti.xcom_pull(task_ids='{spec.PREFLIGHT}', key='record')"

DOC_MD = f"""
# eServices failover: `gir_eservices_failover`

Switches the Interaction Server that RWS uses (the eServices site) to another data center, as the GIR
guide's manual procedure does (`POST .../genesys-environments/{{id}}/multimedia-switch`), but checked,
approved by a second person, verified and audited. **Switching back is the same DAG** with
`target_site` = `{TOPOLOGY.primary_site}` (the primary).

**To run it:** Trigger DAG → fill `target_site` ({", ".join(TOPOLOGY.sites)}), `reason` (10+ characters),
the `scenario` (`{spec.INTERACTION_SERVER_ONLY}`: only the Interaction Server is down, or `{spec.WHOLE_DC}`:
the whole DC is lost; SRS redirection, SpeechMiner promotion and moving the recording processing are
whole-DC follow-ups only), optionally `change_ticket` and `dry_run` → Trigger. Then **another** approver
(`failover.approvers`, listed on the `approve_failover` task) opens *Required Actions* (or this run's
`approve_failover` task) and chooses *Approve* or *Reject*. The user who triggered cannot approve
(two-person rule); no answer within `failover.response_timeout_minutes` counts as a rejection.
Only that answer, as Airflow records it for this run, authorizes the one POST (never XComs or task
states), and only once. Trigger from the UI or the REST API as yourself: a CLI-triggered run can do a
pre-flight or a dry run, never a switch.

Steps: `check_pools` (the switch's pool exists, or the run stops before anyone is asked) → `preflight`
(which RWS answer, target's first; the site they report; last keystore check and
SpeechMiner backup, as warnings) → `approval_needed` (skips everything when the target is already
current) → `approve_failover` → `recheck` (two-person rule, site unchanged?) →
`switch_eservices_site` (ONE POST, never retried) → `verify_switch` (deferred, GETs only, up to
`failover.dr_monitoring_delay_seconds` + `verify_margin_seconds`; the site is read at
`failover.site_field`, else at the top level or inside the nested resource) → `confirm_switch` (a person
confirms under *Required Actions* that agents reach the target, and answers the scenario's follow-ups
checklist; no worker slot while waiting, `failover.confirm_timeout_minutes`) → `catch_up_reindex` (after a
switch back to the primary: ONE run of the primary's re-index DAG for the outage window) → `audit`
(always; one JSON file under `failover.audit_log`) → `outcome` (the verdict, the checklist with its
answers, the catch-up run and the switch-back command).

**Read the `outcome` task:** it fails the run unless the outcome is verified (RWS reports the target),
confirmed (RWS did not report it, a person confirmed it), already-current (also when the target became
current while waiting) or dry-run. `unverified` means RWS accepted the switch but neither RWS nor a person
confirmed it in time: check by hand (the outcome says how), do not trigger again blindly.
Full procedure: docs/gir_eservices_failover.md.
**During an incident: follow the one-page runbook docs/runbook-failover.md.**
"""


@dag(
    dag_id=spec.DAG_ID,
    schedule=None,
    start_date=shared.DAG_START_DATE,
    max_active_runs=1,
    catchup=False,
    # A failover DAG that is paused when it is needed is a trap; the approval gate guards every run.
    is_paused_upon_creation=False,
    tags=["gir", "eservices", "failover", "hitl"],
    **notifications.dag_kwargs(
        TOPOLOGY,
        spec.DAG_ID,
        default_args={"owner": "gir-ops", "retries": 2, "retry_delay": timedelta(seconds=15)},
    ),
    params=spec.trigger_params(TOPOLOGY),
    doc_md=DOC_MD,
)
def gir_eservices_failover() -> None:
    settings = spec.failover_settings(TOPOLOGY)

    @task(
        task_id=spec.PREFLIGHT,
        inlets=spec.preflight_inlets(TOPOLOGY),
        execution_timeout=timedelta(minutes=5),
        doc_md="Read-only: RWS reachability (target's first), the site RWS reports, the environment ID, "
        "the last keystore check and SpeechMiner backup. Retried: it only reads.",
    )
    def preflight(**context: Any) -> None:
        from include.gir_ops.failover.steps import run_preflight

        run_preflight(context)

    @task.short_circuit(
        task_id=spec.APPROVAL_NEEDED,
        ignore_downstream_trigger_rules=False,
        doc_md="Skips the approval and the switch when RWS already reports the target site.",
    )
    def approval_needed(**context: Any) -> bool:
        from include.gir_ops.failover import steps

        return steps.approval_needed(context)

    approve = FailoverApprovalOperator(
        task_id=spec.APPROVE_FAILOVER,
        subject="{{ " + PREFLIGHT_RECORD + "['approval_subject'] }}",
        body="{{ " + PREFLIGHT_RECORD + "['approval_body'] }}",
        assigned_users=spec.assigned_approvers(TOPOLOGY),
        response_timeout=timedelta(minutes=settings.response_timeout_minutes),
        # No answer in time = Reject (recorded with no responding user), so the audit can tell a
        # timeout from a rejection; a Reject skips the downstream steps instead of failing this task.
        defaults=spec.REJECT,
        fail_on_reject=False,
        notifiers=notifications.approval_notifiers(TOPOLOGY, record_task_id=spec.PREFLIGHT),
        retries=0,
        doc_md="The provider's ApprovalOperator, recording the answer. Never retried: a retry would ask "
        "the approvers again after they answered. Waits in awaiting_input without a worker slot; the "
        "answer is checked by `recheck` (two-person rule). Approvers: "
        f"{', '.join(a.id for a in settings.approvers)}; no answer within "
        f"{settings.response_timeout_minutes} min counts as a rejection.",
    )

    @task(
        task_id=spec.RECHECK,
        retry_delay=timedelta(seconds=10),
        doc_md="Two-person rule from Airflow's own record of this run's approval (never XCom): approver "
        "!= triggering user, approver in failover.approvers, triggered from the UI/REST API; then the site "
        "again: any change while waiting stops the run. Refusals fail at once; reads are retried.",
    )
    def recheck(**context: Any) -> None:
        from include.gir_ops.failover.steps import run_recheck

        run_recheck(context)

    @task(
        task_id=spec.SWITCH,
        retries=0,
        pool=shared.RWS_SWITCH_POOL,
        pool_slots=1,
        execution_timeout=timedelta(minutes=10),
        doc_md="ONE synchronous multimedia-switch POST to the first RWS that answers (target's first). "
        "Never retried by Airflow: a second POST after an unknown outcome (timeout, dropped connection) "
        "could switch again after someone switched back. The RWS client resends only when the request "
        "never left or RWS answered 5xx/statusCode 4 (nothing changed). Pool gir_rws_switch (1 slot).",
    )
    def switch_eservices_site(**context: Any) -> None:
        from include.gir_ops.failover.steps import run_switch

        run_switch(context)

    verify = VerifyEServicesSiteOperator(
        task_id=spec.VERIFY,
        switch_task_id=spec.SWITCH,
        rws_nodes=spec.rws_nodes(TOPOLOGY),
        dr_monitoring_delay_seconds=settings.dr_monitoring_delay_seconds,
        verify_margin_seconds=settings.verify_margin_seconds,
        site_field=settings.site_field,
        retry_delay=timedelta(seconds=10),
        doc_md="Deferred: the triggerer polls GET genesys-environments/{id} on every RWS (no POST, safe to "
        "repeat) until all that answer report the target, or the delay plus margin "
        f"({settings.dr_monitoring_delay_seconds + settings.verify_margin_seconds}s) has passed.",
    )

    confirm = ConfirmSwitchOperator(
        task_id=spec.CONFIRM,
        switch_task_id=spec.SWITCH,
        verify_task_id=spec.VERIFY,
        assigned_users=spec.assigned_approvers(TOPOLOGY),
        response_timeout=timedelta(minutes=settings.confirm_timeout_minutes),
        trigger_rule="all_done",
        retries=0,
        doc_md="Step 4 of the guide, by a person: asked whenever a switch POST reached RWS (skipped "
        "otherwise). The on-call checks WDE (and RWS where it reports the site) and answers Confirmed or "
        "Not confirmed, with done / not done / not applicable per follow-up of the run's scenario. Waits "
        "in awaiting_input without a worker slot; no answer within "
        f"{settings.confirm_timeout_minutes} min = Not confirmed. Never retried: a retry would ask again "
        "after someone answered. The answer counts as Airflow records it (read via the REST API), never "
        "from XCom.",
    )

    @task(
        task_id=spec.CATCH_UP,
        trigger_rule="all_done",
        retry_delay=timedelta(seconds=10),
        doc_md="After a switch back to the primary that ended verified or confirmed: ONE run of the "
        "primary's re-index DAG for the outage (from the failover's switch in the audit log to the "
        "switch-back, whole hours), with a run id derived from this run's, so a retry or a clear gets "
        "HTTP 409 and triggers nothing more. Otherwise it does nothing.",
    )
    def catch_up_reindex(**context: Any) -> dict[str, Any]:
        from include.gir_ops.failover.catchup import run_catch_up

        return run_catch_up(context)

    @task(
        task_id=spec.AUDIT,
        trigger_rule="all_done",
        retry_delay=timedelta(seconds=10),
        doc_md="Always runs: one JSON record per run under failover.audit_log (who, why, approval, every "
        "RWS answer, outcome). A retry adds a file, never overwrites one.",
    )
    def audit(**context: Any) -> dict[str, Any]:
        from include.gir_ops.failover.audit import run_audit

        return run_audit(context)

    @task(
        task_id=spec.OUTCOME,
        trigger_rule="all_done",
        retries=0,
        doc_md="The verdict. Never retried: it only reads what the run recorded and fails the run unless "
        "the outcome is verified, confirmed, already-current or dry-run (or a due catch-up re-index was "
        "not triggered); lists the scenario's follow-ups with their answers and the catch-up run.",
    )
    def outcome(**context: Any) -> None:
        from include.gir_ops.failover.audit import run_outcome

        run_outcome(context)

    chain(
        check_pools(),
        preflight(),
        approval_needed(),
        approve,
        recheck(),
        switch_eservices_site(),
        verify,
        confirm,
        catch_up_reindex(),
        audit(),
        outcome(),
    )


if TOPOLOGY.failover is None:
    shared.not_configured(
        spec.DAG_ID,
        "failover section (failover.approvers, failover.audit_log, ...)",
        "add one to enable eServices failover, see include/config/topology.yaml",
    )
else:
    gir_eservices_failover()
