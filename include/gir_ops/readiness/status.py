"""The readiness status: per DC side by side, and one verdict on the standby DC.

``collect`` reads Airflow's metadata (``metadata.py``) and the live RWS probes (``probe.py``);
``judge`` turns what was read into the status and the verdict without any I/O, so every rule is tested
on plain data, and the same dict feeds the page, ``api/status`` and ``metrics``.

The standby DC is the one the SpeechMiner backup is shipped to (``shipping.to_site``), or else the
first DC that is not the primary: the DC a failover would switch to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from include.gir_ops.backup.spec import DAG_ID as BACKUP_DAG_ID
from include.gir_ops.backup.spec import speechminer_backup_asset
from include.gir_ops.failover.spec import APPROVE_FAILOVER, AUDIT
from include.gir_ops.failover.spec import DAG_ID as FAILOVER_DAG_ID
from include.gir_ops.keystore.spec import DAG_ID as KEYSTORE_DAG_ID
from include.gir_ops.keystore.spec import RCS_KEYSTORE_CHECK_ASSET
from include.gir_ops.readiness import coverage as cov
from include.gir_ops.readiness.probe import RwsProbe
from include.gir_ops.readiness.spec import COVERAGE_DAYS, REQUIRED_ACTIONS_PATH, URL_PREFIX
from include.gir_ops.reindex.spec import SEND_TASK_ID
from include.gir_ops.reindex.spec import dag_id as reindex_dag_id
from include.gir_ops.shared import format_age, format_utc, iso_utc, parse_iso_utc
from include.gir_ops.topology import DataCenter, Topology

# Keystore states that mean "this instance holds the reference's keys".
GOOD_KEYSTORE_STATES = frozenset({"ok", "match", "identical", "reference"})


def standby_site(topology: Topology) -> str | None:
    """The DC a failover would switch to: the backup's destination, else the first non-primary DC."""
    if topology.shipping is not None:
        return topology.shipping.to_site
    others = [dc.site for dc in topology.data_centers if dc.site != topology.primary_site]
    return others[0] if others else None


def coverage_window(dc: DataCenter, now: datetime) -> tuple[datetime, datetime]:
    """The last ``COVERAGE_DAYS`` up to the end of the DC's last complete schedule period (whole hours)."""
    from include.gir_ops.reindex.windows import last_schedule_period

    _, period_end = last_schedule_period(dc.reindex.schedule, dc.timezone, now)
    end = cov.floor_hour(period_end)
    return end - timedelta(days=COVERAGE_DAYS), end


@dataclass
class Inputs:
    """Everything read for one status, before any judgement (plain data: tests and benchmarks build it)."""

    keystore_event: dict[str, Any] | None = None
    keystore_run: dict[str, Any] | None = None
    backup_event: dict[str, Any] | None = None
    backup_run: dict[str, Any] | None = None
    reindex_returns: dict[str, list[Any]] = field(default_factory=dict)  # site -> send return values
    # site -> what those values were read from (changes whenever they do); None: not from the database
    reindex_signatures: dict[str, Any] = field(default_factory=dict)
    reindex_runs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    failover_last: dict[str, Any] | None = None
    failover_audit: Any = None
    failover_answer: dict[str, Any] | None = None
    failover_active: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)


def collect(session: Any, topology: Topology, now: datetime) -> Inputs:
    """Read the inputs from Airflow's metadata: a handful of bounded queries."""
    from include.gir_ops.readiness import metadata as md

    inputs = Inputs()
    inputs.keystore_event = md.latest_asset_event(session, RCS_KEYSTORE_CHECK_ASSET.name)
    inputs.keystore_run = md.latest_run(session, KEYSTORE_DAG_ID)
    if topology.shipping is not None:
        inputs.backup_event = md.latest_asset_event(
            session, speechminer_backup_asset(topology.shipping.to_site).name
        )
        inputs.backup_run = md.latest_run(session, BACKUP_DAG_ID)
    for dc in topology.reindex_data_centers:
        start, _ = coverage_window(dc, now)
        dag_id = reindex_dag_id(dc)
        signature, values = md.task_returns(session, dag_id, SEND_TASK_ID, start, decode=cov.normalized)
        inputs.reindex_returns[dc.site] = values
        inputs.reindex_signatures[dc.site] = signature
        inputs.reindex_runs[dc.site] = md.latest_run(session, dag_id)
    if topology.failover is not None:
        last = md.last_finished_run(session, FAILOVER_DAG_ID)
        inputs.failover_last = last
        if last is not None:
            inputs.failover_audit = md.task_return(session, FAILOVER_DAG_ID, last["run_id"], AUDIT)
            inputs.failover_answer = md.answer(session, FAILOVER_DAG_ID, last["run_id"], APPROVE_FAILOVER)
        inputs.failover_active = md.active_runs(session, FAILOVER_DAG_ID)
    inputs.approvals = md.waiting_approvals(session, md.project_dag_ids(session))
    return inputs


# --- judging ---------------------------------------------------------------------------------------------


def run_url(base: str, dag_id: str | None, run_id: str | None) -> str | None:
    if not dag_id or not run_id:
        return None
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _event_time(event: Mapping[str, Any] | None, key: str) -> datetime | None:
    if event is None:
        return None
    return parse_iso_utc(event["extra"].get(key)) or event.get("timestamp")


def _hours(then: datetime | None, now: datetime) -> float | None:
    return None if then is None else round((now - then).total_seconds() / 3600, 3)


def judge_keystore(
    topology: Topology, inputs: Inputs, now: datetime, base: str
) -> tuple[dict[str, Any], list[str]]:
    """The latest keystore check (shared by every DC's column) and the reasons it blocks a failover."""
    from include.gir_ops.failover.findings import cron_interval

    event = inputs.keystore_event
    latest = inputs.keystore_run
    result: dict[str, Any] = {
        "dag_id": KEYSTORE_DAG_ID,
        "latest_run": _run_summary(latest, base),
    }
    if not topology.rcs_instances:
        result.update(state="n/a", checked_at=None, age_hours=None, ok=None, instances={}, run_url=None)
        return result, []
    if event is None:
        result.update(state="unknown", checked_at=None, age_hours=None, ok=None, instances={}, run_url=None)
        return result, ["no RCS keystore check has reported yet (gir_rcs_keystore_check)"]
    extra = event["extra"]
    checked_at = _event_time(event, "checked_at")
    states = {str(k): str(v) for k, v in (extra.get("states") or {}).items()}
    stale_after = 2 * cron_interval(topology.keystore_check.schedule)
    ok = extra.get("ok") is True
    stale = checked_at is None or now - checked_at > stale_after
    state = "failed" if not ok else ("stale" if stale else ("warning" if extra.get("warnings") else "ok"))
    result.update(
        state=state,
        ok=ok,
        checked_at=iso_utc(checked_at),
        age_hours=_hours(checked_at, now),
        stale_after_hours=stale_after.total_seconds() / 3600,
        reference=extra.get("reference"),
        instances=states,
        warnings=list(extra.get("warnings") or []),
        run_url=run_url(base, event.get("dag_id"), event.get("run_id")),
        run_id=event.get("run_id"),
    )
    reasons = []
    if not ok:
        bad = {k: v for k, v in states.items() if v not in GOOD_KEYSTORE_STATES}
        shown = ", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "see the run"
        reasons.append(f"RCS keystores not replicated ({shown}; check {format_age(checked_at, now)})")
    elif stale:
        reasons.append(
            f"RCS keystore check is stale: last {format_age(checked_at, now)}, expected at least every "
            f"{stale_after.total_seconds() / 3600:g} h"
        )
    return result, reasons


def _run_summary(run: Mapping[str, Any] | None, base: str) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "run_id": run["run_id"],
        "state": run["state"],
        "ended_at": iso_utc(run.get("end_date")),
        "url": run_url(base, run["dag_id"], run["run_id"]),
    }


def judge_backup(
    topology: Topology, inputs: Inputs, site: str, now: datetime, base: str
) -> tuple[dict[str, Any], list[str]]:
    """The SpeechMiner backup as it concerns ``site``; reasons only when ``site`` is where it is shipped."""
    shipping = topology.shipping
    if shipping is None:
        return {"applies": False, "state": "n/a", "text": "no shipping is configured"}, []
    if site == shipping.from_site:
        return {"applies": False, "state": "n/a", "text": "holds the primary SpeechMiner index"}, []
    if site != shipping.to_site:
        return {"applies": False, "state": "n/a", "text": f"backups are shipped to {shipping.to_site}"}, []
    event = inputs.backup_event
    base_result = {
        "applies": True,
        "max_age_hours": shipping.max_age_hours,
        "latest_run": _run_summary(inputs.backup_run, base),
    }
    if event is None:
        return (
            {**base_result, "state": "missing", "text": "no verified backup shipped yet"},
            [f"no verified SpeechMiner backup has been shipped to {site} yet"],
        )
    extra = event["extra"]
    shipped_at = _event_time(event, "shipped_at")
    age = _hours(shipped_at, now)
    stale = age is None or age > shipping.max_age_hours
    result = {
        **base_result,
        "state": "stale" if stale else "ok",
        "backup_name": extra.get("backup_name"),
        "shipped_at": iso_utc(shipped_at),
        "age_hours": age,
        "files": extra.get("files"),
        "bytes": extra.get("bytes"),
        "run_url": run_url(base, event.get("dag_id"), event.get("run_id")),
        "text": f"{extra.get('backup_name')} shipped {format_age(shipped_at, now)}",
    }
    reasons = []
    if stale:
        reasons.append(
            f"SpeechMiner backup at {site} is {age if age is not None else '?'} h old "
            f"(limit {shipping.max_age_hours:g} h)"
        )
    return result, reasons


def trigger_link(base: str, dc: DataCenter, pair: tuple[str, str], gap: tuple[datetime, datetime]) -> str:
    """The page that opens a re-index of exactly this contact center, kind and range."""
    (cc, kind), (start, end) = pair, gap
    query = urlencode(
        {
            "site": dc.site,
            "contact_center_id": cc,
            "kind": kind,
            "from": format_utc(start),
            "to": format_utc(end),
        }
    )
    return f"{base}{URL_PREFIX}/reindex?{query}"


# Coverage of unchanged inputs over an unchanged window is the same: (site, window, signature, contact
# centers, kinds) -> pairs. Only inputs read from the database (with a signature) are remembered.
_COVERAGE: dict[tuple[Any, ...], list[cov.PairCoverage]] = {}


def _pairs(dc: DataCenter, inputs: Inputs, start: datetime, end: datetime) -> list[cov.PairCoverage]:
    signature = inputs.reindex_signatures.get(dc.site)
    key = (dc.site, start, end, signature, tuple(dc.rws.contact_centers), dc.reindex_kinds)
    if signature is not None and key in _COVERAGE:
        return _COVERAGE[key]
    pairs = cov.coverage(
        inputs.reindex_returns.get(dc.site, []),
        contact_centers=dc.rws.contact_centers,
        kinds=dc.reindex_kinds,
        start=start,
        end=end,
    )
    if signature is not None:
        if len(_COVERAGE) >= 16:
            _COVERAGE.clear()
        _COVERAGE[key] = pairs
    return pairs


def judge_reindex(
    dc: DataCenter, inputs: Inputs, now: datetime, base: str
) -> tuple[dict[str, Any], list[str]]:
    """Hours covered of hours expected per contact center and kind over the last 30 days."""
    if not dc.reindex.enabled:
        return {"enabled": False}, []
    start, end = coverage_window(dc, now)
    pairs = _pairs(dc, inputs, start, end)
    expected = sum(p.expected_hours for p in pairs)
    covered = sum(p.covered_hours for p in pairs)
    rows = []
    for pair in pairs:
        row = pair.to_dict()
        for gap, (a, b) in zip(row["missing"], pair.missing, strict=True):
            gap["hours"] = int((b - a) / cov.HOUR)
            gap["trigger_url"] = trigger_link(base, dc, (pair.contact_center_id, pair.kind), (a, b))
        rows.append(row)
    result = {
        "enabled": True,
        "dag_id": reindex_dag_id(dc),
        "from": format_utc(start),
        "to": format_utc(end),
        "expected_hours": expected,
        "covered_hours": covered,
        "ratio": round(covered / expected, 6) if expected else None,
        "pairs": rows,
        "latest_run": _run_summary(inputs.reindex_runs.get(dc.site), base),
    }
    reasons = []
    incomplete = [p for p in pairs if not p.complete]
    if not pairs:
        reasons.append(
            f"Elasticsearch re-index at {dc.site}: no contact center known (none in the topology and no "
            f"run reported any)"
        )
    elif incomplete:
        missing = sum(p.expected_hours - p.covered_hours for p in incomplete)
        reasons.append(
            f"Elasticsearch index at {dc.site} misses {missing} h of the last {COVERAGE_DAYS} days "
            f"({len(incomplete)} of {len(pairs)} contact center/kind pairs incomplete)"
        )
    return result, reasons


def judge_failover(topology: Topology, inputs: Inputs, base: str) -> tuple[dict[str, Any], list[str]]:
    """Approvals waiting, a failover running now, and how the last one ended (outcome, who, when)."""
    if topology.failover is None:
        return {"configured": False}, []
    approvals = [
        {
            **a,
            "created_at": iso_utc(a.get("created_at")),
            "run_url": run_url(base, a["dag_id"], a["run_id"]),
        }
        for a in inputs.approvals
    ]
    last = inputs.failover_last
    last_summary = None
    if last is not None:
        audit = inputs.failover_audit if isinstance(inputs.failover_audit, Mapping) else {}
        answer = inputs.failover_answer or {}
        responder = answer.get("responded_by") or {}
        conf = last.get("conf") or {}
        last_summary = {
            "run_id": last["run_id"],
            "state": last["state"],
            "outcome": audit.get("outcome") or ("unknown (no audit record)" if last["state"] else None),
            "detail": audit.get("detail"),
            "target_site": conf.get("target_site"),
            "requested_by": last.get("triggered_by"),
            "approved_by": responder.get("name") or responder.get("id"),
            "answer": (answer.get("chosen_options") or [None])[0],
            "ended_at": iso_utc(last.get("end_date")),
            "url": run_url(base, FAILOVER_DAG_ID, last["run_id"]),
        }
    active = [
        {
            "run_id": r["run_id"],
            "state": r["state"],
            "target_site": (r.get("conf") or {}).get("target_site"),
            "requested_by": r.get("triggered_by"),
            "url": run_url(base, FAILOVER_DAG_ID, r["run_id"]),
        }
        for r in inputs.failover_active
    ]
    reasons = [
        f"a failover is already in progress (run {r['run_id']}, to {r['target_site'] or '?'})" for r in active
    ]
    return {
        "configured": True,
        "approvals_waiting": approvals,
        "required_actions_url": f"{base}/{REQUIRED_ACTIONS_PATH}",
        "active": active,
        "last": last_summary,
    }, reasons


def judge_rws(probes: Mapping[str, RwsProbe], standby: str | None) -> tuple[dict[str, Any], list[str]]:
    """Reachability per DC, the site RWS reports, and whether the nodes agree."""
    reported = {s: p.eservices_site for s, p in probes.items() if p.reachable and p.eservices_site}
    distinct = sorted(set(reported.values()))
    reasons = []
    probe = probes.get(standby) if standby else None
    if probe is not None and not probe.reachable:
        reasons.append(f"RWS {standby} does not answer ({probe.error})")
    if len(distinct) > 1:
        reasons.append(f"RWS nodes disagree on the eServices site: {reported}")
    return {
        "current_site": distinct[0] if len(distinct) == 1 else None,
        "consistent": len(distinct) <= 1,
        "reported": reported,
    }, reasons


def _role(topology: Topology, site: str, standby: str | None) -> str:
    if site == topology.primary_site:
        return "primary"
    return "standby" if site == standby else "other"


def judge(
    topology: Topology,
    inputs: Inputs,
    probes: Mapping[str, RwsProbe],
    *,
    now: datetime | None = None,
    base: str = "",
) -> dict[str, Any]:
    """The whole status: per DC side by side, the shared findings, and the verdict on the standby DC."""
    now = now or datetime.now(UTC)
    standby = standby_site(topology)
    rws, reasons = judge_rws(probes, standby)
    keystore, keystore_reasons = judge_keystore(topology, inputs, now, base)
    reasons += keystore_reasons
    failover, failover_reasons = judge_failover(topology, inputs, base)
    data_centers = []
    for dc in topology.data_centers:
        probe = probes.get(dc.site)
        backup, backup_reasons = judge_backup(topology, inputs, dc.site, now, base)
        reindex, reindex_reasons = judge_reindex(dc, inputs, now, base)
        if dc.site == standby:
            reasons += backup_reasons + reindex_reasons
        instance_names = [rcs.name for rcs in dc.rcs]
        data_centers.append(
            {
                "site": dc.site,
                "role": _role(topology, dc.site, standby),
                "rws": probe.to_dict() if probe else None,
                "keystore": {
                    "state": keystore["state"],
                    "instances": {n: keystore["instances"].get(n, "not reported") for n in instance_names},
                },
                "backup": backup,
                "reindex": reindex,
            }
        )
    reasons += failover_reasons
    if standby is None:
        verdict_text, ready, reasons = "no standby DC: the topology has one data center", False, []
    elif reasons:
        verdict_text, ready = f"{standby} not ready: " + "; ".join(reasons), False
    else:
        verdict_text, ready = f"{standby} ready to take over", True
    # What no probe can see (WDE/SRS options set in advance): the failover pre-flight's own readiness items
    # for a whole-DC loss, listed beside the verdict for the on-call to confirm, never counted as "ready".
    from include.gir_ops.failover.checklist import readiness_items
    from include.gir_ops.failover.spec import WHOLE_DC

    manual_checks = readiness_items(topology, standby, WHOLE_DC) if standby else []
    return {
        "generated_at": now.isoformat(),
        "primary_site": topology.primary_site,
        "standby_site": standby,
        "verdict": {"ready": ready, "text": verdict_text, "reasons": reasons, "manual_checks": manual_checks},
        "rws": rws,
        "keystore": keystore,
        "failover": failover,
        "data_centers": data_centers,
    }
