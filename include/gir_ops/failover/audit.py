"""The audit record and the run's verdict: one JSON document per run, whatever happened.

The ``audit`` task (trigger rule all_done) gathers what each step recorded, Airflow's own record of the
approval (never an XCom) and the task states, and adds one file under ``failover.audit_log``; the
``outcome`` task prints the verdict and the follow-ups and fails the run unless the outcome is ok.
No record ever holds a credential.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

from include.gir_ops.airflow_api import AirflowApiClient
from include.gir_ops.failover.authorization import approval_of_run, safe_name
from include.gir_ops.failover.checklist import checklist
from include.gir_ops.failover.outcome import decide_outcome
from include.gir_ops.failover.spec import (
    AUDIT,
    CATCH_UP,
    CONFIRM,
    DAG_ID,
    INTERACTION_SERVER_ONLY,
    PREFLIGHT,
    RECHECK,
    SWITCH,
    VERIFY,
    Outcome,
    failover_settings,
)
from include.gir_ops.failover.survey import scrub
from include.gir_ops.shared import iso_utc
from include.gir_ops.topology import Topology, load_topology

log = logging.getLogger(__name__)

AUDIT_SCHEMA = "gir-ops/eservices-failover-audit/1"
# catch_up_reindex statuses after which the indexes of the primary are not being brought up to date.
CATCH_UP_FAILED = ("failed", "no-failover-found")

# Outcomes after which a POST may have applied: the audit lists the follow-ups by hand.
SWITCHED_OUTCOMES = (
    Outcome.VERIFIED,
    Outcome.CONFIRMED,
    Outcome.UNVERIFIED,
    Outcome.SWITCH_UNKNOWN,
    Outcome.VERIFY_FAILED,
)


def task_states(ti: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """Each task's state in this run, for the steps that died without a record; {} if unreadable."""
    try:
        by_run = ti.get_task_states(dag_id=dag_id, run_ids=[run_id]) or {}
    except Exception as exc:  # the audit must still be written
        log.warning("could not read task states: %s", exc)
        return {}
    return dict(by_run.get(run_id) or {})


def recorded_answer(dag_run: Any) -> dict[str, Any] | None:
    """The approval as Airflow recorded it (None when nobody answered); the audit never trusts XCom for it."""
    try:
        with AirflowApiClient() as api:
            approval = approval_of_run(dag_run, api)
    except Exception as exc:  # the audit must still be written
        log.warning("could not read this run's approval from Airflow: %s", scrub(str(exc)))
        return {"unreadable": scrub(f"{type(exc).__name__}: {exc}")}
    if not approval or not approval["response_received"]:
        return None
    return {**approval, "timed_out": approval.get("responded_by_user") is None}


def recorded_confirmation(dag_run: Any) -> dict[str, Any] | None:
    """The person's answer to ``confirm_switch`` as Airflow recorded it (HITL detail via the REST API, never
    XCom): None when the step asked nobody or nobody answered yet."""
    try:
        with AirflowApiClient() as api:
            detail = api.hitl_detail(dag_run.dag_id, dag_run.run_id, CONFIRM)
    except Exception as exc:  # the audit must still be written
        log.warning("could not read this run's confirmation from Airflow: %s", scrub(str(exc)))
        return {"unreadable": scrub(f"{type(exc).__name__}: {exc}")}
    if not detail or not detail.get("response_received"):
        return None
    return {
        "response_received": True,
        "chosen_options": list(detail.get("chosen_options") or []),
        "params_input": dict(detail.get("params_input") or {}),
        "responded_by_user": detail.get("responded_by_user"),
        "responded_at": detail.get("responded_at"),
        "timed_out": detail.get("responded_by_user") is None,
    }


def gather(context: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the steps recorded, for the audit and the outcome."""
    ti, dag_run = context["ti"], context["dag_run"]
    return {
        "preflight": ti.xcom_pull(task_ids=PREFLIGHT, key="record"),
        "approval": recorded_answer(dag_run),
        "confirmation": recorded_confirmation(dag_run),
        "catch_up": ti.xcom_pull(task_ids=CATCH_UP, key="record"),
        "recheck": ti.xcom_pull(task_ids=RECHECK, key="record"),
        "switch": ti.xcom_pull(task_ids=SWITCH, key="record"),
        "verification": ti.xcom_pull(task_ids=VERIFY, key="record"),
        "states": task_states(ti, dag_run.dag_id, dag_run.run_id),
    }


def build_audit_record(
    steps: Mapping[str, Any], *, topology: Topology, dag_run: Any, written_at: datetime
) -> dict[str, Any]:
    """One self-contained JSON document: who, why, what RWS answered, and the outcome."""
    preflight = steps.get("preflight") or {}
    approval = steps.get("approval") or None
    verification = steps.get("verification") or {}
    request = preflight.get("request") or {}
    conf = dict(getattr(dag_run, "conf", None) or {})
    target = request.get("target_site") or conf.get("target_site")
    verdict = decide_outcome(
        preflight=steps.get("preflight"),
        approval=approval,
        recheck=steps.get("recheck"),
        switch=steps.get("switch"),
        verification=steps.get("verification"),
        states=steps.get("states") or {},
        confirmation=_readable(steps.get("confirmation")),
    )
    site_before = preflight.get("current_site")
    scenario = request.get("scenario") or conf.get("scenario") or INTERACTION_SERVER_ONLY
    items = (
        checklist(
            topology,
            target,
            scenario,
            backup=preflight.get("backup"),
            change_ticket=request.get("change_ticket"),
        )
        if target in topology.sites
        else []
    )
    switched_at = (steps.get("switch") or {}).get("switched_at")

    answers: list[dict[str, Any]] = []
    for step in ("preflight", "recheck", "switch"):
        answers += (steps.get(step) or {}).get("rws_answers") or []
    answers += [{"phase": "verify", **a} for a in verification.get("answers") or []]
    decision = None
    if approval and approval.get("unreadable"):
        decision = {"unreadable": approval["unreadable"]}
    elif approval:
        decision = {
            "chosen": (approval.get("chosen_options") or [None])[0],
            "by": approval.get("responded_by_user"),
            "at": iso_utc(approval.get("responded_at")),
            "timed_out": bool(approval.get("timed_out")),
        }
    switched = verdict.outcome in SWITCHED_OUTCOMES
    confirmation = steps.get("confirmation") or None
    return {
        "schema": AUDIT_SCHEMA,
        "dag_id": getattr(dag_run, "dag_id", DAG_ID),
        "run_id": getattr(dag_run, "run_id", None),
        "outcome": verdict.outcome.value,
        "outcome_ok": verdict.ok,
        "detail": verdict.detail,
        "triggered_by": getattr(dag_run, "triggering_user_name", None),
        "run_started_at": iso_utc(
            getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None)
        ),
        "decision": decision,
        "reason": request.get("reason") or conf.get("reason"),
        "change_ticket": request.get("change_ticket") or conf.get("change_ticket"),
        "dry_run": request.get("dry_run", conf.get("dry_run")),
        "scenario": scenario,
        "target_site": target,
        "site_before": site_before,
        "site_after": site_after(verdict.outcome, preflight, steps),
        "environment_id": preflight.get("environment_id"),
        "switch": {
            **{
                k: (steps.get("switch") or {}).get(k)
                for k in ("posted", "answer", "via_site", "http_status", "statusCode", "attempts", "detail")
            },
            # When the POST reached RWS: the start (failover) or end (switch-back) of an outage window.
            "switched_at": iso_utc(datetime.fromtimestamp(switched_at, UTC)) if switched_at else None,
        },
        "confirmation": confirmation_section(confirmation, items),
        "catch_up": steps.get("catch_up"),
        "verification": {k: verification.get(k) for k in ("outcome", "detail", "elapsed_seconds", "polls")},
        "preflight": {
            "warnings": preflight.get("warnings"),
            "keystore": preflight.get("keystore"),
            "backup": preflight.get("backup"),
            "readiness": preflight.get("readiness"),
            "refused": preflight.get("refused"),
            "error": preflight.get("error"),
        },
        "rws_answers": answers,
        "task_states": steps.get("states") or {},
        "follow_ups": (
            [item.text for item in items]
            if target and (switched or verdict.outcome == Outcome.DRY_RUN)
            else []
        ),
        "written_at": iso_utc(written_at),
    }


def _readable(answer: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """An answer that could not be read counts as no answer (a confirmation never authorizes a POST)."""
    return None if not answer or answer.get("unreadable") else answer


def confirmation_section(confirmation: Mapping[str, Any] | None, items: list[Any]) -> dict[str, Any] | None:
    """The person's confirmation for the audit: the choice, who and when, and each follow-up's answer."""
    if not confirmation:
        return None
    if confirmation.get("unreadable"):
        return {"unreadable": confirmation["unreadable"]}
    answers = confirmation.get("params_input") or {}
    return {
        "chosen": (confirmation.get("chosen_options") or [None])[0],
        "by": confirmation.get("responded_by_user"),
        "at": iso_utc(confirmation.get("responded_at")),
        "timed_out": bool(confirmation.get("timed_out")),
        "items": [{**item.to_dict(), "answer": answers.get(item.key)} for item in items],
    }


def site_after(outcome: Outcome, preflight: Mapping[str, Any], steps: Mapping[str, Any]) -> str | None:
    """The site RWS reported last: verification, else the re-check, else pre-flight; None if unknown."""
    verification = steps.get("verification") or {}
    observed = sorted(
        {
            o["eServicesSite"]
            for o in verification.get("last_observations") or []
            if o.get("ok") and o.get("eServicesSite")
        }
    )
    if observed:
        return observed[0] if len(observed) == 1 else f"inconsistent: {', '.join(observed)}"
    if outcome in (Outcome.UNVERIFIED, Outcome.SWITCH_UNKNOWN):
        return None
    if outcome == Outcome.ALREADY_CURRENT and preflight.get("already_current") is False:
        return (preflight.get("request") or {}).get("target_site")
    recheck = steps.get("recheck") or {}
    if "current_site" in recheck:
        return recheck["current_site"]
    return preflight.get("current_site")


def write_audit_record(
    audit_log: str, record: Mapping[str, Any], *, started_at: datetime, try_number: int
) -> str:
    """Add one file under ``audit_log`` (never overwrite): the safe "append" on any object store.

    Named by the run's start time and run_id (and the try), so records sort by time and a retry of the
    audit task adds a file instead of replacing one. Read back and compared before it counts as written.
    """
    base = ObjectStoragePath(audit_log)
    if base.protocol in ("file", "local"):
        base.mkdir(parents=True, exist_ok=True)
    stem = f"{started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}_{safe_name(str(record['run_id']))}"
    stem += f"_try{try_number}"
    path, n = base / f"{stem}.json", 2
    while path.exists():
        path, n = base / f"{stem}-{n}.json", n + 1
    payload = json.dumps(record, indent=2, sort_keys=True, default=iso_utc)
    with path.open("w") as handle:
        handle.write(payload)
    if json.loads(path.read_text()) != json.loads(payload):
        raise RuntimeError(f"audit record {path} reads back differently; the store did not keep it")
    return str(path)


def run_audit(context: Mapping[str, Any]) -> dict[str, Any]:
    """The audit task: always runs (trigger rule all_done) and writes what upstream recorded."""
    ti, dag_run = context["ti"], context["dag_run"]
    topology = load_topology()
    steps = gather(context)
    record = build_audit_record(steps, topology=topology, dag_run=dag_run, written_at=datetime.now(UTC))
    started = getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None) or datetime.now(UTC)
    location = write_audit_record(
        failover_settings(topology).audit_log, record, started_at=started, try_number=ti.try_number
    )
    log.info("Audit record written to %s: outcome %s", location, record["outcome"])
    summary = {"location": location, "outcome": record["outcome"], "detail": record["detail"]}
    ti.xcom_push(key="record", value=summary)
    return summary


def run_outcome(context: Mapping[str, Any]) -> None:
    """The outcome task: fails the run unless the outcome is ok and the audit was written."""
    ti, dag_run = context["ti"], context["dag_run"]
    topology = load_topology()
    steps = gather(context)
    record = build_audit_record(steps, topology=topology, dag_run=dag_run, written_at=datetime.now(UTC))
    audit = ti.xcom_pull(task_ids=AUDIT, key="record")
    lines = [f"OUTCOME: {record['outcome']}", record["detail"], f"Scenario: {record['scenario']}"]
    answered = {i["text"]: i["answer"] for i in (record.get("confirmation") or {}).get("items") or []}
    if record["follow_ups"]:
        lines += [
            "",
            f"Follow-ups by hand ({record['scenario']}):",
            *(
                f"  {i}. [{answered.get(item) or 'not answered'}] {item}"
                for i, item in enumerate(record["follow_ups"], 1)
            ),
        ]
    confirmation = record.get("confirmation") or {}
    if confirmation.get("chosen"):
        who = (confirmation.get("by") or {}).get("id") or "nobody (timed out)"
        lines.append(f"Confirmation: {confirmation['chosen']} by {who} at {confirmation.get('at')}")
    catch_up = record.get("catch_up") or {}
    if catch_up:
        lines += ["", f"Catch-up re-index: {catch_up.get('status')}: {catch_up.get('detail')}"]
    lines.append("")
    lines.append(
        f"Audit record: {audit['location']}" if audit else "AUDIT RECORD NOT WRITTEN (see the audit task)"
    )
    message = "\n".join(lines)
    (log.info if record["outcome_ok"] else log.error)("%s", message)
    if not audit:
        raise AirflowFailException(
            f"the audit record was not written; outcome {record['outcome']}: {record['detail']}"
        )
    if not record["outcome_ok"]:
        raise AirflowFailException(f"{record['outcome']}: {record['detail']}")
    due = (
        record["outcome"] in (Outcome.VERIFIED, Outcome.CONFIRMED)
        and record.get("target_site") == topology.primary_site
        and not record.get("dry_run")
    )
    if due and not catch_up:
        raise AirflowFailException(
            f"{record['outcome']}, but {CATCH_UP} left no record (it ended "
            f"{(steps.get('states') or {}).get(CATCH_UP) or 'without running'}): the catch-up re-index of "
            f"{topology.primary_site} may not have been triggered; see its log, and trigger "
            f"gir_es_reindex_<{topology.primary_site}> by hand with from/to covering the outage"
        )
    if catch_up.get("status") in CATCH_UP_FAILED:
        raise AirflowFailException(
            f"{record['outcome']}, but the catch-up re-index of {catch_up.get('dag_id')} was not triggered: "
            f"{catch_up.get('detail')}"
        )
