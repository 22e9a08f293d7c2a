"""The catch-up re-index after a switch-back: the primary's index learns what was indexed elsewhere.

The guide asks that "the indexes are up-to-date in all data centers". While eServices ran in another DC,
recordings were indexed there; after the switch back the primary's Elasticsearch index lacks them. So a
switch back to the primary that ends ``verified`` or ``confirmed`` triggers ONE run of the primary's
re-index DAG (``gir_es_reindex_<site>``) for the outage window: from when the failover away from the
primary was switched (the newest such switch in the audit log, ``failover.audit_log``) to this switch-back,
widened to whole hours, as the manual ``from``/``to`` the re-index DAG accepts.

Exactly one per switch-back: the run id is derived from this failover run's id and created through
Airflow's REST API, which answers 409 for an id that exists (a retried or cleared task then reports
"already triggered" and triggers nothing).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from include.gir_ops.airflow_api import AirflowApiClient, AirflowApiError
from include.gir_ops.failover.audit import gather
from include.gir_ops.failover.authorization import safe_name
from include.gir_ops.failover.outcome import decide_outcome
from include.gir_ops.failover.spec import DAG_ID, Outcome, failover_settings
from include.gir_ops.failover.survey import scrub
from include.gir_ops.reindex import spec as reindex_spec
from include.gir_ops.shared import format_utc, iso_utc, parse_iso_utc
from include.gir_ops.topology import Topology, load_topology

log = logging.getLogger(__name__)

RUN_ID_PREFIX = "gir_failover_catch_up__"
HOUR = timedelta(hours=1)


def catch_up_run_id(failover_run_id: str) -> str:
    """One re-index run per switch-back run: its id is derived from the failover run's id."""
    return f"{RUN_ID_PREFIX}{safe_name(failover_run_id)}"


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment.astimezone(UTC) else floored + HOUR


def outage_start(audit_log: str, primary_site: str, before: datetime) -> tuple[datetime, str] | None:
    """When the newest failover away from ``primary_site`` before ``before`` was switched, and its run id.

    Read from the audit records under ``audit_log``: a run whose target was another site and whose POST
    reached RWS (``switch.posted``). Its ``switch.switched_at``; a record written before that field
    existed gives its run start instead (earlier than the switch: the window only gets wider).
    """
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(audit_log)
    if not folder.exists():
        return None
    found: tuple[datetime, str] | None = None
    for path in folder.iterdir():
        if not path.name.endswith(".json") or not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            log.warning("audit record %s unreadable, skipped: %s", path, exc)
            continue
        if not isinstance(record, dict) or record.get("target_site") in (None, primary_site):
            continue
        switch = record.get("switch") or {}
        if not switch.get("posted"):
            continue
        moment = parse_iso_utc(switch.get("switched_at")) or parse_iso_utc(record.get("run_started_at"))
        if moment is None or moment >= before:
            continue
        if found is None or moment > found[0]:
            found = (moment, str(record.get("run_id")))
    return found


def manual_trigger_text(dag_id: str, start: datetime | None, end: datetime) -> str:
    """How to trigger the catch-up by hand (UI or REST API), for every status that did not trigger it."""
    conf = {"from": iso_utc(start) if start else "<when eServices left the primary>", "to": iso_utc(end)}
    return (
        f"trigger {dag_id} by hand with from/to covering the outage (UI: Trigger DAG with params from/to; "
        f'REST: curl -X POST "$AIRFLOW_URL/api/v2/dags/{dag_id}/dagRuns" -H "Authorization: Bearer '
        f"$MY_TOKEN\" -H 'Content-Type: application/json' "
        f"-d '{json.dumps({'logical_date': None, 'conf': conf})}')"
    )


def plan_catch_up(
    topology: Topology,
    *,
    target_site: str | None,
    outcome: Outcome,
    switched_at: float | None,
    failover_run_id: str,
    now: datetime,
) -> dict[str, Any]:
    """What to trigger (``status`` "trigger"), or why nothing is (``not-needed``, ``no-failover-found``)."""
    primary = topology.primary
    dag_id = reindex_spec.dag_id(primary)
    record: dict[str, Any] = {"dag_id": dag_id, "dag_run_id": None, "from": None, "to": None}
    if target_site != topology.primary_site or outcome not in (Outcome.VERIFIED, Outcome.CONFIRMED):
        why = (
            f"not a switch back to the primary {topology.primary_site}"
            if target_site != topology.primary_site
            else f"the switch-back ended {outcome.value}, not verified or confirmed"
        )
        return {**record, "status": "not-needed", "detail": f"no catch-up re-index: {why}"}
    if switched_at is None:
        return {**record, "status": "not-needed", "detail": "no catch-up re-index: no switch was sent"}
    end = datetime.fromtimestamp(switched_at, UTC)
    settings = failover_settings(topology)
    away = outage_start(settings.audit_log, topology.primary_site, end)
    if away is None:
        return {
            **record,
            "status": "no-failover-found",
            "detail": f"the audit log ({settings.audit_log}) holds no failover away from "
            f"{topology.primary_site} before this switch-back, so the outage window is unknown; "
            + manual_trigger_text(dag_id, None, ceil_hour(end)),
        }
    start, away_run = away
    window_start, window_end = floor_hour(start), ceil_hour(end)
    # The re-index DAG refuses a 'to' in the future; the switch-back time itself widens to the same hour.
    to_value = window_end if window_end <= now else end
    # It also wants 'from' and 'to' at least an hour apart (before it widens them): an outage inside the
    # hour still running starts its window an hour earlier (re-indexing an hour twice is harmless).
    if to_value - window_start < HOUR:
        window_start = floor_hour(to_value - HOUR)
    return {
        **record,
        "status": "trigger",
        "dag_run_id": catch_up_run_id(failover_run_id),
        "from": iso_utc(window_start),
        "to": iso_utc(to_value),
        "window": [iso_utc(window_start), iso_utc(window_end)],
        "outage": {"failover_run_id": away_run, "left_at": iso_utc(start), "back_at": iso_utc(end)},
        "detail": f"re-index of {topology.primary_site} for the outage {format_utc(start)} to "
        f"{format_utc(end)}, widened to [{format_utc(window_start)}, {format_utc(window_end)})",
    }


def trigger_catch_up(plan: Mapping[str, Any], api: AirflowApiClient, failover_run_id: str) -> dict[str, Any]:
    """Create the planned re-index run (409: it exists already, nothing more is triggered)."""
    record = dict(plan)
    conf = {"from": plan["from"], "to": plan["to"]}
    note = f"catch-up after switch-back {failover_run_id} ({DAG_ID})"
    created, run = api.trigger_dag_run(plan["dag_id"], plan["dag_run_id"], conf, note=note)
    record["status"] = "triggered" if created else "already-triggered"
    record["run_state"] = run.get("state")
    record["detail"] = (
        f"{'triggered' if created else 'already triggered earlier (409), not again'}: {plan['dag_id']} run "
        f"{plan['dag_run_id']}: {plan['detail']}"
    )
    try:  # only a hint: the run exists either way, so a failed read must not make it look failed
        dag = api.dag(plan["dag_id"]) or {}
    except AirflowApiError as exc:
        record["detail"] += f"; could not read whether {plan['dag_id']} is paused ({scrub(str(exc))})"
        return record
    if dag.get("is_paused"):
        record["detail"] += f"; {plan['dag_id']} is PAUSED: unpause it or the run stays queued"
    return record


def run_catch_up(context: Mapping[str, Any]) -> dict[str, Any]:
    """The catch_up_reindex task: decide from what the run recorded, trigger at most one re-index run."""
    ti, dag_run = context["ti"], context["dag_run"]
    topology = load_topology()
    steps = gather(context)
    verdict = decide_outcome(
        preflight=steps.get("preflight"),
        approval=steps.get("approval"),
        recheck=steps.get("recheck"),
        switch=steps.get("switch"),
        verification=steps.get("verification"),
        states=steps.get("states") or {},
        confirmation=None
        if (steps.get("confirmation") or {}).get("unreadable")
        else steps.get("confirmation"),
    )
    request = (steps.get("preflight") or {}).get("request") or {}
    switch = steps.get("switch") or {}
    plan = plan_catch_up(
        topology,
        target_site=request.get("target_site"),
        outcome=verdict.outcome,
        switched_at=switch.get("switched_at") if switch.get("posted") else None,
        failover_run_id=dag_run.run_id,
        now=datetime.now(UTC),
    )
    record = plan
    if plan["status"] == "trigger":
        try:
            with AirflowApiClient() as api:
                record = trigger_catch_up(plan, api, dag_run.run_id)
        except AirflowApiError as exc:
            record = {
                **plan,
                "status": "failed",
                "detail": f"could not trigger {plan['dag_id']}: {scrub(str(exc))}; "
                + manual_trigger_text(
                    plan["dag_id"],
                    parse_iso_utc(plan["from"]),
                    parse_iso_utc(plan["to"]) or datetime.now(UTC),
                ),
            }
            ti.xcom_push(key="record", value=record)
            if exc.retryable:
                raise
            log.error("%s", record["detail"])
            return record
    (log.warning if record["status"] in ("no-failover-found",) else log.info)(
        "Catch-up: %s", record["detail"]
    )
    ti.xcom_push(key="record", value=record)
    return record
