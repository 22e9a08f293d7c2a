"""The eServices failover procedure of the GIR guide, as steps that cannot be skipped or repeated by accident.

The guide's manual procedure: find the genesys-environment ID, POST ``multimedia-switch`` with
``{"eServicesSite": "<site>"}`` to RWS, let RWS apply it within ``drMonitoringDelay`` seconds, point the
agent desktops at the same site, and switch back the same way once the primary is repaired.
``dags/gir_eservices_failover.py`` wires these steps; everything that decides lives here, so it is
testable without a scheduler:

1. :func:`run_preflight` reads, never writes: which RWS nodes answer (the target's first), the site they
   report, the genesys-environment ID, the latest RCS keystore check and SpeechMiner backup Asset events.
   Its Markdown findings become the body of the approval request.
2. The HITL ``approve_failover`` task asks a configured approver. :func:`authorize` enforces the
   two-person rule (the approver is not the user who triggered the run) and that an approval exists at
   all, so marking the approval task "success" by hand cannot authorize a switch.
3. :func:`run_recheck` re-reads the site after the wait: a change means the approval was given for a
   situation that no longer exists.
4. :func:`run_switch` sends ONE ``multimedia-switch`` POST (``RwsClient.multimedia_switch`` resends only
   when the request provably never reached RWS, or RWS answered 5xx/statusCode 4 = nothing changed).
5. The deferred ``verify_switch`` task (``failover_triggers``) polls with GETs only.
6. :func:`run_audit` writes one JSON record per run whatever happened; :func:`run_outcome` turns it into
   the run's verdict and prints the manual follow-ups and the switch-back command.

Every task records what it saw in XCom key ``record`` before it succeeds or fails, so the audit can say
what happened even when a step failed. No record ever holds a credential.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from include.gir_ops.airflow_api import AirflowApiClient
from include.gir_ops.failover_spec import (
    APPROVE,
    APPROVE_FAILOVER,
    AUDIT,
    DAG_ID,
    MIN_REASON_LENGTH,
    PARAM_KEYS,
    PREFLIGHT,
    RECHECK,
    SWITCH,
    VERIFY,
    iso_utc,
)
from include.gir_ops.rws import (
    OPS_API,
    RetryPolicy,
    RwsAnswer,
    RwsAuthError,
    RwsClient,
    RwsError,
    RwsUnreachable,
    not_processed,
)
from include.gir_ops.topology import Approver, DataCenter, Topology

log = logging.getLogger(__name__)

AUDIT_SCHEMA = "gir-ops/eservices-failover-audit/1"

# Reading the site is cheap and safe to repeat, but a dead DC must not stall pre-flight for long.
PROBE = RetryPolicy(attempts=2, initial_backoff_seconds=0.5, max_backoff_seconds=1.0)
PROBE_TIMEOUT = (3.0, 15.0)

# Outcomes in the audit record. The run succeeds only for the first three.
OK_OUTCOMES = ("verified", "already-current", "dry-run")
OUTCOMES = (
    *OK_OUTCOMES,
    "site-changed",
    "unverified",
    "rejected",
    "timed-out",
    "self-approval-refused",
    "not-authorized",
    "preflight-failed",
    "switch-failed",
    "switch-unknown",
    "verify-failed",
    "error",
)


class FailoverRefused(Exception):
    """A step refuses to go on for a reason a retry cannot change; ``outcome`` names it in the audit."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


def _now() -> datetime:
    return datetime.now(UTC)


_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def _scrub(text: str) -> str:
    """Drop any user:password@ from URLs in error text before it is stored anywhere."""
    return _USERINFO.sub("***@", text)


def _failover(topology: Topology) -> Any:
    if topology.failover is None:
        raise FailoverRefused(
            "preflight-failed",
            "the topology has no failover section; add failover.approvers and failover.audit_log",
        )
    return topology.failover


@dataclass(frozen=True)
class FailoverRequest:
    target_site: str
    reason: str
    change_ticket: str | None
    dry_run: bool
    triggered_by: str | None


def read_request(
    conf: Mapping[str, Any] | None,
    params: Mapping[str, Any],
    triggered_by: str | None,
    topology: Topology,
) -> FailoverRequest:
    """The validated request. Unknown conf keys are refused: a typo such as ``dryrun`` must not switch."""
    unknown = sorted(set(conf or {}) - set(PARAM_KEYS))
    if unknown:
        raise FailoverRefused(
            "preflight-failed",
            f"unknown trigger conf key(s) {unknown}; the only keys are {list(PARAM_KEYS)} "
            "(check the spelling, e.g. dry_run); nothing was asked or switched",
        )
    target = params.get("target_site")
    if target not in topology.sites:
        raise FailoverRefused(
            "preflight-failed",
            f"target_site {target!r} is not a site of the topology ({', '.join(topology.sites)})",
        )
    reason = str(params.get("reason") or "").strip()
    if len(reason) < MIN_REASON_LENGTH:
        raise FailoverRefused(
            "preflight-failed", f"reason must say why in at least {MIN_REASON_LENGTH} characters"
        )
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise FailoverRefused("preflight-failed", f"dry_run must be true or false, not {dry_run!r}")
    ticket = str(params.get("change_ticket") or "").strip() or None
    return FailoverRequest(target, reason, ticket, dry_run, (triggered_by or "").strip() or None)


# --- reading RWS -------------------------------------------------------------------------------------


def ordered_sites(topology: Topology, target_site: str) -> list[DataCenter]:
    """The target's RWS first (it must work after the switch), then the others in topology order."""
    return sorted(topology.data_centers, key=lambda dc: dc.site != target_site)


def _answer_entry(phase: str, site: str, answer: RwsAnswer) -> dict[str, Any]:
    return {
        "phase": phase,
        "site": site,
        **answer.summary(),
        "tries": [dict(h) for h in answer.history],
        "at": iso_utc(_now()),
    }


def _error_entry(phase: str, site: str, method: str, path: str, exc: RwsError) -> dict[str, Any]:
    return {
        "phase": phase,
        "site": site,
        "method": method,
        "path": path,
        "http_status": exc.http_status,
        "statusCode": exc.status_code,
        "error": _scrub(str(exc)),
        "request_sent": exc.request_sent,
        "tries": [
            {**h, "error": _scrub(str(h["error"]))} if h.get("error") else dict(h) for h in exc.history
        ],
        "at": iso_utc(_now()),
    }


def observe_node(
    dc: DataCenter, *, target_site: str, phase: str, answers: list[dict[str, Any]]
) -> dict[str, Any]:
    """Ask one DC's RWS which genesys environments exist and which eServices site it reports."""
    observation: dict[str, Any] = {
        "site": dc.site,
        "role": "target" if dc.site == target_site else "other",
        "answered": False,
        "environment_ids": [],
        "eServicesSite": None,
        "error": None,
    }
    list_path = f"{OPS_API}/genesys-environments"
    with RwsClient(dc.site, dc.rws_conn_id, timeout=PROBE_TIMEOUT) as client:
        try:
            listing, listed = client.genesys_environments(policy=PROBE)
        except RwsError as exc:  # including an ID unfit for a URL path (RwsInvalidId)
            answers.append(_error_entry(phase, dc.site, "GET", list_path, exc))
            observation["error"] = _scrub(str(exc))
            return observation
        answers.append(_answer_entry(phase, dc.site, listing))
        ids = sorted(set(listed))
        observation.update(answered=True, environment_ids=ids)
        if len(ids) != 1:
            return observation
        env_path = f"{list_path}/{ids[0]}"
        try:
            environment = client.genesys_environment(ids[0], policy=PROBE)
        except RwsError as exc:
            answers.append(_error_entry(phase, dc.site, "GET", env_path, exc))
            observation.update(answered=False, error=_scrub(str(exc)))
            return observation
        answers.append(_answer_entry(phase, dc.site, environment))
        reported = environment.body.get("eServicesSite")
        observation["eServicesSite"] = reported if isinstance(reported, str) and reported else None
    return observation


def survey_rws(
    topology: Topology, target_site: str, *, phase: str, answers: list[dict[str, Any]]
) -> dict[str, Any]:
    """Every DC's RWS (target first): reachability, the environment ID and the eServices site reported."""
    nodes = [
        observe_node(dc, target_site=target_site, phase=phase, answers=answers)
        for dc in ordered_sites(topology, target_site)
    ]
    answering = [n for n in nodes if n["answered"]]
    if not answering:
        raise RwsSurveyError(
            "no RWS answered ("
            + "; ".join(f"{n['site']}: {n['error']}" for n in nodes)
            + "); nothing can be switched. Check the RWS nodes and the gir_rws_* connections"
        )
    environment_ids = sorted({i for n in answering for i in n["environment_ids"]})
    if len(environment_ids) != 1:
        raise FailoverRefused(
            "preflight-failed",
            f"RWS lists {len(environment_ids)} genesys environments ({environment_ids}); the guide's "
            "procedure needs exactly one. Switch by hand and fix this DAG's assumption",
        )
    reported = {n["site"]: n["eServicesSite"] for n in answering if n["eServicesSite"] is not None}
    distinct = sorted(set(reported.values()))
    return {
        "environment_id": environment_ids[0],
        "nodes": nodes,
        "reported": reported,
        "current_site": distinct[0] if len(distinct) == 1 else None,
        "consistent": len(distinct) <= 1,
        "site_reported": bool(reported),
    }


class RwsSurveyError(RuntimeError):
    """No RWS answered at all: possibly transient, so the task may be retried."""


# --- what the other DAGs last said -------------------------------------------------------------------


def _event_time(event: Any, key: str) -> datetime | None:
    extra = getattr(event, "extra", None) or {}
    value = extra.get(key)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    stamp = getattr(event, "timestamp", None)
    return stamp if isinstance(stamp, datetime) else None


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "at an unknown time"
    hours = (now - then).total_seconds() / 3600
    return f"{hours * 60:.0f} min ago" if hours < 1 else f"{hours:.1f} h ago"


def _cron_interval(cron: str) -> timedelta:
    from croniter import croniter

    it = croniter(cron, datetime(2026, 1, 1, tzinfo=UTC))
    first = it.get_next(datetime)
    return it.get_next(datetime) - first


def keystore_finding(
    event: Any | None, topology: Topology, now: datetime, read_error: str | None = None
) -> dict[str, Any]:
    """The last RCS keystore replication check, as a warning when it failed, warned or is stale."""
    if read_error:
        return {"level": "unknown", "text": f"RCS keystore check: could not be read ({read_error})"}
    if event is None:
        return {
            "level": "unknown",
            "text": "RCS keystore check: no information yet (gir_rcs_keystore_check has not reported)",
        }
    extra = dict(getattr(event, "extra", None) or {})
    checked_at = _event_time(event, "checked_at")
    stale_after = 2 * _cron_interval(topology.keystore_check.schedule)
    data = {
        "checked_at": iso_utc(checked_at),
        "ok": extra.get("ok"),
        "reference": extra.get("reference"),
        "states": extra.get("states"),
        "warnings": list(extra.get("warnings") or []),
    }
    when = _age(checked_at, now)
    if extra.get("ok") is not True:
        bad = {k: v for k, v in (extra.get("states") or {}).items() if v not in ("ok", "match", "identical")}
        return {
            "level": "warning",
            "text": f"RCS keystore check {when} found problems: {bad or extra.get('states')} — recordings "
            "encrypted at the target may not play back",
            **data,
        }
    if checked_at is not None and now - checked_at > stale_after:
        return {"level": "warning", "text": f"RCS keystore check is stale: last run {when}", **data}
    if data["warnings"]:
        return {
            "level": "warning",
            "text": f"RCS keystore check {when}: replicated, with warnings: {'; '.join(data['warnings'])}",
            **data,
        }
    return {"level": "ok", "text": f"RCS keystore check {when}: keystores replicated", **data}


def backup_finding(  # noqa: PLR0911 - one return per situation the approver must read
    event: Any | None,
    topology: Topology,
    target_site: str,
    now: datetime,
    read_error: str | None = None,
) -> dict[str, Any]:
    """Age of the newest verified SpeechMiner backup at the target, or why none applies."""
    shipping = topology.shipping
    if shipping is None:
        return {"level": "unknown", "text": "SpeechMiner backup: no shipping is configured in the topology"}
    if target_site == shipping.from_site:
        return {
            "level": "ok",
            "text": f"SpeechMiner backup: {target_site} holds the primary SpeechMiner index; no shipped "
            "backup is needed there",
        }
    if target_site != shipping.to_site:
        return {
            "level": "warning",
            "text": f"SpeechMiner backup: none is shipped to {target_site} (shipping.to_site is "
            f"{shipping.to_site}); SpeechMiner cannot be promoted at {target_site}",
        }
    if read_error:
        return {
            "level": "unknown",
            "text": f"SpeechMiner backup at {target_site}: could not be read ({read_error})",
        }
    if event is None:
        return {
            "level": "unknown",
            "text": f"SpeechMiner backup at {target_site}: no information yet (no verified backup has been "
            "shipped by gir_speechminer_backup_ship)",
        }
    extra = dict(getattr(event, "extra", None) or {})
    shipped_at = _event_time(event, "shipped_at")
    data = {
        "backup_name": extra.get("backup_name"),
        "shipped_at": iso_utc(shipped_at),
        "files": extra.get("files"),
        "bytes": extra.get("bytes"),
    }
    when = _age(shipped_at, now)
    age_hours = (now - shipped_at).total_seconds() / 3600 if shipped_at else None
    if age_hours is None or age_hours > shipping.max_age_hours:
        return {
            "level": "warning",
            "text": f"SpeechMiner backup at {target_site} is stale: newest verified backup "
            f"{data['backup_name']} shipped {when} (limit {shipping.max_age_hours:g} h)",
            "age_hours": age_hours,
            **data,
        }
    return {
        "level": "ok",
        "text": f"SpeechMiner backup at {target_site}: newest verified backup {data['backup_name']} "
        f"shipped {when}",
        "age_hours": age_hours,
        **data,
    }


def latest_event(inlet_events: Any, asset: Any) -> tuple[Any | None, str | None]:
    """The newest event of ``asset`` through the task's ``inlet_events``, or why it could not be read."""
    try:
        events = list(inlet_events[asset].ascending(False).limit(1))
    except Exception as exc:  # a missing Asset row must not stop a failover; it is a finding
        return None, f"{type(exc).__name__}: {exc}"
    return (events[0] if events else None), None


# --- the approval request ----------------------------------------------------------------------------


def _fence(text: str) -> str:
    """User text inside a code block, so it cannot pose as findings in the approval request."""
    return "```text\n" + text.replace("```", "'''") + "\n```"


_SUBJECT_TARGET = re.compile(
    r"→ (?P<site>[^\s:()→]+)(?P<dry> \(DRY RUN\))?: approve the multimedia-switch\?$"
)


def approval_subject_target(subject: str) -> tuple[str, bool] | None:
    """(target site, dry run) as the approval request's subject named them to the approver."""
    match = _SUBJECT_TARGET.search(subject or "")
    return (match["site"], bool(match["dry"])) if match else None


def approval_text(record: Mapping[str, Any], topology: Topology) -> tuple[str, str]:
    """Subject and Markdown body of the approval request: what will happen, why, and what pre-flight saw."""
    request = record["request"]
    target = request["target_site"]
    current = str(record.get("current_site") or "unknown").replace("→", "-")
    dry = " (DRY RUN)" if request["dry_run"] else ""
    subject = f"eServices failover {current} → {target}{dry}: approve the multimedia-switch?"
    ticket = request.get("change_ticket")
    lines = [
        f"## eServices failover: {current} → {target}{dry}",
        "",
        f"**Triggered by:** `{(request.get('triggered_by') or 'unknown').replace('`', '')}`  ",
        f"**Change ticket:** {('`' + ticket.replace('`', '') + '`') if ticket else 'none'}  ",
        f"**Genesys environment:** `{record.get('environment_id')}`",
        "",
        "**Reason given:**",
        "",
        _fence(request["reason"]),
        "",
        "### What approving does",
        "",
        (
            "Nothing is sent: this is a dry run. Approving only records the decision in the audit."
            if request["dry_run"]
            else f"One `POST .../genesys-environments/{record.get('environment_id')}/multimedia-switch` "
            f'with `{{"eServicesSite": "{target}"}}` to the first RWS that answers ({target} first). '
            "RWS then moves to the Interaction Server of "
            f"{target} within drMonitoringDelay ({_failover(topology).dr_monitoring_delay_seconds}s)."
        ),
        "",
        "The user who triggered this run cannot approve it (two-person rule). Reject, or no answer within "
        f"{_failover(topology).response_timeout_minutes} min, switches nothing.",
        "",
        "### Pre-flight findings",
        "",
        "| RWS | answers | reports eServicesSite |",
        "|---|---|---|",
    ]
    for node in record["nodes"]:
        role = " (target)" if node["role"] == "target" else ""
        answered = "yes" if node["answered"] else f"**no**: {str(node['error']).replace('|', '/')}"
        site = node["eServicesSite"] or ("not reported" if node["answered"] else "—")
        lines.append(f"| {node['site']}{role} | {answered} | {site} |")
    lines += ["", *(f"- {f['text']}" for f in (record["keystore"], record["backup"]))]
    if record["warnings"]:
        lines += ["", "### Warnings", "", *(f"- ⚠ {w}" for w in record["warnings"])]
    return subject, "\n".join(lines)


# --- what Airflow itself recorded about this run ------------------------------------------------------


def approval_of_run(dag_run: Any, api: AirflowApiClient) -> dict[str, Any] | None:
    """Airflow's own record of the answer to THIS run's approval request, or None when there is none.

    Read from the HITL detail through Airflow's public API (the row only the Required Actions page / HITL
    response endpoint writes, after checking the assigned users), addressed by this run's own dag_id and
    run_id from the task's context, so an answer given to another run cannot be replayed into this one.
    """
    detail = api.hitl_detail(dag_run.dag_id, dag_run.run_id, APPROVE_FAILOVER)
    if detail is None:
        return None
    return {
        "response_received": bool(detail.get("response_received")),
        "chosen_options": list(detail.get("chosen_options") or []),
        "responded_by_user": detail.get("responded_by_user"),
        "responded_at": detail.get("responded_at"),
        "subject": detail.get("subject"),
    }


def trigger_path(dag_run: Any, api: AirflowApiClient) -> str | None:
    """How Airflow recorded this run was created (``triggered_by``: ui, rest_api, cli, test, ...)."""
    return api.dag_run(dag_run.dag_id, dag_run.run_id).get("triggered_by")


# --- the steps ----------------------------------------------------------------------------------------


def _push(ti: Any, record: Mapping[str, Any]) -> None:
    ti.xcom_push(key="record", value=json.loads(json.dumps(record, default=iso_utc)))


def _fail(exc: FailoverRefused) -> Exception:
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"{exc.outcome}: {exc.message}")


def run_preflight(context: Mapping[str, Any]) -> None:
    """Step 1: read-only checks; the findings (XCom ``record``) feed the approval request and the audit."""
    from include.gir_ops.assets import RCS_KEYSTORE_CHECK_ASSET, speechminer_backup_asset
    from include.gir_ops.topology import load_topology

    ti, dag_run = context["ti"], context["dag_run"]
    answers: list[dict[str, Any]] = []
    record: dict[str, Any] = {"started_at": iso_utc(_now())}
    try:
        topology = load_topology()
        _failover(topology)
        request = read_request(dag_run.conf, context["params"], dag_run.triggering_user_name, topology)
        record["request"] = asdict(request)
        survey = survey_rws(topology, request.target_site, phase="preflight", answers=answers)
        record.update(survey)
        now = _now()
        keystore_event, keystore_error = latest_event(context["inlet_events"], RCS_KEYSTORE_CHECK_ASSET)
        record["keystore"] = keystore_finding(keystore_event, topology, now, keystore_error)
        backup_event, backup_error = (None, None)
        if topology.shipping is not None and request.target_site == topology.shipping.to_site:
            asset = speechminer_backup_asset(topology.shipping.to_site)
            backup_event, backup_error = latest_event(context["inlet_events"], asset)
        record["backup"] = backup_finding(backup_event, topology, request.target_site, now, backup_error)
        record["warnings"] = _preflight_warnings(record, request)
        record["already_current"] = survey["current_site"] == request.target_site
        record["approval_subject"], record["approval_body"] = approval_text(record, topology)
        if not request.dry_run and not record["already_current"]:
            with AirflowApiClient() as api:
                via = trigger_path(dag_run, api)
            if (via or "").casefold() not in TRUSTED_TRIGGERS:
                raise FailoverRefused(
                    "not-authorized",
                    f"this run was triggered via {via or 'an unknown path'}, not by a person signed in to "
                    "Airflow, so the two-person rule cannot be checked (a CLI trigger records the OS user). "
                    "Pre-flight ran (see its findings) and nobody was asked. Trigger the switch from the UI "
                    "or the REST API as yourself, or run this one with dry_run: true",
                )
        if record["already_current"]:
            log.warning(
                "RWS already reports eServicesSite %s: no approval asked, nothing will be switched",
                request.target_site,
            )
        log.info("Pre-flight findings:\n%s", record["approval_body"])
    except FailoverRefused as exc:
        if exc.outcome == "preflight-failed":
            record["error"] = exc.message
        else:
            record["refused"] = {"outcome": exc.outcome, "message": exc.message}
        raise _fail(exc) from None
    except Exception as exc:
        record["error"] = _scrub(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        record["rws_answers"] = answers
        _push(ti, record)


def _preflight_warnings(record: Mapping[str, Any], request: FailoverRequest) -> list[str]:
    warnings = []
    for node in record["nodes"]:
        if not node["answered"]:
            role = "the target's RWS" if node["role"] == "target" else "RWS"
            warnings.append(f"{role} {node['site']} does not answer: {node['error']}")
    if not record["consistent"]:
        warnings.append(f"RWS nodes disagree on the eServices site: {record['reported']}")
    elif not record["site_reported"]:
        warnings.append(
            "RWS does not report eServicesSite: pre-flight cannot tell whether "
            f"{request.target_site} is already current, and the switch will be recorded as unverified"
        )
    for finding in (record["keystore"], record["backup"]):
        if finding["level"] != "ok":
            warnings.append(finding["text"])
    if request.dry_run:
        warnings.append("dry run: nothing will be POSTed")
    return warnings


def approval_needed(context: Mapping[str, Any]) -> bool:
    """Short-circuit: no approval is asked (and nothing switched) when the target is already current."""
    record = context["ti"].xcom_pull(task_ids=PREFLIGHT, key="record") or {}
    if record.get("already_current"):
        log.warning(
            "RWS already reports %s: nothing to switch, no approval asked",
            record["request"]["target_site"],
        )
        return False
    return True


# How a run may have been created for its switch to count: by a person signed in to Airflow. A CLI
# trigger records the OS user, a test or a DAG (TriggerDagRunOperator) records no person at all.
TRUSTED_TRIGGERS = ("ui", "rest_api")


def authorize(
    approval: Mapping[str, Any] | None,
    triggered_by: str | None,
    approvers: Sequence[Approver],
    *,
    triggered_via: str | None,
    target_site: str,
    dry_run: bool,
) -> dict[str, Any]:
    """The rule that lets a switch go out, decided here and nowhere else.

    ``approval`` must be Airflow's own record of the answer to THIS run's approval request (the HITL
    detail, read by :func:`approval_of_run`), never an XCom or a task state: both are writable through the
    REST API by anyone who may edit DAG runs. The answer must be an Approve, by a configured approver who
    is not the person who triggered the run, given to a request that named this run's target site.
    """
    if not approval or not approval.get("response_received"):
        raise FailoverRefused(
            "not-authorized",
            "Airflow holds no answer to this run's approval request (was approve_failover marked success "
            "by hand, or its XComs written through the API?); only an answer given under Required Actions "
            "counts. Nothing was switched",
        )
    responder = approval.get("responded_by_user")
    if list(approval.get("chosen_options") or []) != [APPROVE]:
        if responder is None:
            raise FailoverRefused(
                "timed-out", "nobody answered the approval request in time; nothing was switched"
            )
        raise FailoverRefused(
            "rejected",
            f"rejected by {_user(responder)} at {iso_utc(approval.get('responded_at'))}; "
            "nothing was switched",
        )
    if not responder:
        raise FailoverRefused("not-authorized", "an approval without an approving user; nothing was switched")
    if not dry_run and (triggered_via or "").casefold() not in TRUSTED_TRIGGERS:
        raise FailoverRefused(
            "not-authorized",
            f"this run was triggered via {triggered_via or 'an unknown path'}, not by a person signed in to "
            "Airflow, so the two-person rule cannot be checked (a CLI trigger records the OS user). A "
            "pre-flight or dry run may come from anywhere; a switch must be triggered from the UI or the "
            "REST API as yourself. Nothing was switched",
        )
    if not triggered_by:
        raise FailoverRefused(
            "not-authorized",
            "who triggered this run is unknown, so the two-person rule cannot be checked; trigger the "
            "run from the UI or the REST API as yourself; nothing was switched",
        )
    identities = {str(responder.get(k) or "").strip().casefold() for k in ("id", "name")} - {""}
    if triggered_by.strip().casefold() in identities:
        others = [a.id for a in approvers if a.id.casefold() not in identities]
        raise FailoverRefused(
            "self-approval-refused",
            f"two-person rule: {_user(responder)} approved a failover they triggered themselves; that "
            "approval does not count and nothing was switched. Trigger the DAG again and have another "
            f"approver ({', '.join(others) or 'add one to failover.approvers'}) approve it",
        )
    if str(responder.get("id")) not in {a.id for a in approvers}:
        raise FailoverRefused(
            "not-authorized",
            f"{_user(responder)} is not in failover.approvers ({', '.join(a.id for a in approvers)}); "
            "nothing was switched",
        )
    shown = approval.get("subject") or ""
    if approval_subject_target(shown) != (target_site, dry_run):
        raise FailoverRefused(
            "not-authorized",
            f"the approver was asked {shown!r}, which is not a {'dry run' if dry_run else 'switch'} to "
            f"{target_site} as this run requests; nothing was switched",
        )
    return {"approved_by": dict(responder), "approved_at": iso_utc(approval.get("responded_at"))}


def _user(user: Mapping[str, Any] | None) -> str:
    if not user:
        return "nobody"
    uid, name = user.get("id"), user.get("name")
    return f"{name} ({uid})" if name and name != uid else str(uid or name)


def site_decision(
    preflight: Mapping[str, Any], survey: Mapping[str, Any], target_site: str
) -> dict[str, Any]:
    """Compare the site now with what the approver was shown; any definite change stops the switch."""
    before, now = preflight.get("current_site"), survey.get("current_site")
    if now == target_site:
        return {
            "decision": "nothing-to-do",
            "detail": f"the site changed while waiting: RWS already reports {target_site} (pre-flight saw "
            f"{before or 'no site'}); nothing to switch",
        }
    if not survey.get("consistent") and preflight.get("consistent", True):
        raise FailoverRefused(
            "site-changed",
            f"RWS nodes now disagree on the eServices site ({survey.get('reported')}) although they agreed "
            "at pre-flight; something changed while waiting. Nothing was switched: trigger again",
        )
    if before is not None and now is not None and now != before:
        raise FailoverRefused(
            "site-changed",
            f"the eServices site changed while waiting for approval: pre-flight saw {before}, RWS now "
            f"reports {now}. The approval was for another situation; nothing was switched. Trigger again",
        )
    return {"decision": "switch", "detail": f"site still {now or 'not reported'}; switching to {target_site}"}


def _authorize_run(context: Mapping[str, Any], topology: Topology) -> tuple[FailoverRequest, dict[str, Any]]:
    """This run's request (from its trigger conf, which nobody can edit) and its authorization."""
    dag_run = context["dag_run"]
    request = read_request(dag_run.conf, context["params"], dag_run.triggering_user_name, topology)
    with AirflowApiClient() as api:
        authorization = authorize(
            approval_of_run(dag_run, api),
            dag_run.triggering_user_name,
            _failover(topology).approvers,
            triggered_via=trigger_path(dag_run, api),
            target_site=request.target_site,
            dry_run=request.dry_run,
        )
    return request, authorization


def run_recheck(context: Mapping[str, Any]) -> None:
    """Step 3: the two-person rule, then the site again after the (possibly long) wait for approval."""
    from include.gir_ops.topology import load_topology

    ti = context["ti"]
    answers: list[dict[str, Any]] = []
    record: dict[str, Any] = {"started_at": iso_utc(_now())}
    try:
        topology = load_topology()
        request, record["authorization"] = _authorize_run(context, topology)
        preflight = ti.xcom_pull(task_ids=PREFLIGHT, key="record") or {}
        survey = survey_rws(topology, request.target_site, phase="recheck", answers=answers)
        record.update(current_site=survey["current_site"], nodes=survey["nodes"])
        record.update(site_decision(preflight, survey, request.target_site))
        log.info("Re-check: %s", record["detail"])
    except FailoverRefused as exc:
        record["refused"] = {"outcome": exc.outcome, "message": exc.message}
        log.error("Refused: %s", exc.message)
        raise _fail(exc) from None
    except Exception as exc:
        record["error"] = _scrub(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        record["rws_answers"] = answers
        _push(ti, record)


def run_switch(context: Mapping[str, Any]) -> None:
    """Step 4: ONE multimedia-switch POST, never retried by Airflow, only by the client when safe.

    Everything that decides comes from this run's trigger conf, Airflow's record of the approval and RWS
    itself, read here again: never from another task's XCom, which a user may have rewritten.
    """
    from include.gir_ops.topology import load_topology

    ti, dag_run = context["ti"], context["dag_run"]
    answers: list[dict[str, Any]] = []
    record: dict[str, Any] = {"posted": False, "started_at": iso_utc(_now())}
    try:
        refuse_repeated_switch(ti.try_number)
        topology = load_topology()
        request, authorization = _authorize_run(context, topology)
        preflight = ti.xcom_pull(task_ids=PREFLIGHT, key="record") or {}
        recheck = ti.xcom_pull(task_ids=RECHECK, key="record") or {}
        if recheck.get("decision") not in ("switch", "nothing-to-do"):
            raise FailoverRefused(
                "not-authorized", "the re-check after approval did not pass; nothing was sent"
            )
        target = request.target_site
        record.update(target_site=target, dry_run=request.dry_run)
        if recheck["decision"] == "nothing-to-do":
            record.update(decision="nothing-to-do", detail=recheck["detail"])
            return
        _switch_through_first_rws(
            topology,
            preflight=preflight,
            target=target,
            dry_run=request.dry_run,
            record=record,
            answers=answers,
            claim=lambda: claim_approval(
                _failover(topology).audit_log, dag_run.run_id, authorization, ti.try_number
            ),
            checkpoint=lambda: _push(ti, {**record, "rws_answers": answers}),
        )
    except FailoverRefused as exc:
        record["refused"] = {"outcome": exc.outcome, "message": exc.message}
        log.error("Refused: %s", exc.message)
        raise _fail(exc) from None
    finally:
        record["rws_answers"] = answers
        _push(ti, record)


def refuse_repeated_switch(try_number: int) -> None:
    """The switch step runs once per run. It has retries=0, so a second try means someone cleared it:
    an old approval (possibly for a situation long gone, e.g. before a switch-back) must not be reused."""
    if try_number > 1:
        raise FailoverRefused(
            "not-authorized",
            f"this run's approval was already used: its switch step already ran (this is try {try_number}). "
            "One approval authorizes one POST; a cleared switch is never sent again. Trigger a new run for "
            "a fresh pre-flight and approval; nothing was sent",
        )


APPROVALS_USED = "approvals-used"


def claim_approval(audit_log: str, run_id: str, authorization: Mapping[str, Any], try_number: int) -> str:
    """Spend this run's approval: one marker per run under ``<audit_log>/approvals-used/``, made before the
    POST and never removed. A second claim for the same run (the run or the switch cleared and run again,
    whatever the try numbers say) is refused, so one approval authorizes at most one POST.
    """
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(audit_log) / APPROVALS_USED
    marker = folder / f"{_UNSAFE_NAME.sub('_', run_id)}.json"
    payload = json.dumps(
        {"run_id": run_id, "try_number": try_number, "claimed_at": iso_utc(_now()), **authorization},
        default=iso_utc,
    )
    if folder.protocol in ("file", "local"):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            # "x": created only if absent, atomically on a local or NFS file system.
            with open(marker.path, "x", encoding="utf-8") as handle:
                handle.write(payload)
                return str(marker)
        except FileExistsError:
            pass
    elif not marker.exists():
        marker.write_text(payload)
        return str(marker)
    used = marker.read_text()
    raise FailoverRefused(
        "not-authorized",
        f"this run's approval was already used ({used}); one approval authorizes one POST. Trigger a new "
        "run for a fresh pre-flight and approval; nothing was sent",
    )


def _switch_through_first_rws(
    topology: Topology,
    *,
    preflight: Mapping[str, Any],
    target: str,
    dry_run: bool,
    record: dict[str, Any],
    answers: list[dict[str, Any]],
    claim: Callable[[], str],
    checkpoint: Callable[[], None],
) -> None:
    """POST through the first RWS that answers (target's first); move on only if the POST never left.

    The genesys-environment ID is the one this RWS reports now (checked against pre-flight's), not a value
    carried in XCom. ``claim`` spends the approval just before the POST; ``checkpoint`` stores the record,
    so if the worker dies or the task times out while the POST is in flight, the audit says "unknown"
    instead of "nothing sent".
    """
    skipped: list[str] = []
    for dc in ordered_sites(topology, target):
        node = observe_node(dc, target_site=target, phase="switch", answers=answers)
        if not node["answered"]:
            skipped.append(f"{dc.site}: {node['error']}")
            continue
        environment_id = _one_environment_id(dc.site, node, preflight)
        record["environment_id"] = environment_id
        if node["eServicesSite"] == target:
            record.update(decision="nothing-to-do", detail=f"RWS {dc.site} already reports {target}")
            return
        before = preflight.get("current_site")
        if node["eServicesSite"] and before and node["eServicesSite"] != before:
            raise FailoverRefused(
                "site-changed",
                f"just before the POST RWS {dc.site} reports {node['eServicesSite']}, not {before} as at "
                "pre-flight; nothing was switched. Trigger again",
            )
        if dry_run:
            record.update(
                decision="dry-run",
                via_site=dc.site,
                detail=f"DRY RUN: would POST multimedia-switch {{'eServicesSite': '{target}'}} for "
                f"environment {environment_id} to RWS {dc.site}; nothing was sent",
            )
            log.warning("%s", record["detail"])
            return
        if "approval_used" not in record:
            record["approval_used"] = claim()
        record.update(post_attempted=True, answer="pending", via_site=dc.site)
        checkpoint()
        path = f"{OPS_API}/genesys-environments/{environment_id}/multimedia-switch"
        log.warning("POST %s {'eServicesSite': %r} to RWS %s (sent once)", path, target, dc.site)
        # A fresh session: a pooled keep-alive connection closed by RWS would look like "sent, no answer".
        with RwsClient(dc.site, dc.rws_conn_id) as client:
            try:
                answer = client.multimedia_switch(environment_id, target)
            except RwsError as exc:
                answers.append(_error_entry("switch", dc.site, "POST", path, exc))
                if isinstance(exc, RwsUnreachable) and not exc.request_sent:
                    record["answer"] = "not-sent"
                    skipped.append(f"{dc.site}: {exc} (the POST never left; trying the next RWS)")
                    continue
                if not_processed(exc) or isinstance(exc, RwsAuthError) or _refused_by_rws(exc):
                    record.update(answer="refused", detail=_scrub(str(exc)))
                    raise FailoverRefused(
                        "switch-failed",
                        f"RWS {dc.site} refused the switch: {_scrub(str(exc))}. Nothing was switched; "
                        "it is not retried",
                    ) from None
                # Sent, and RWS did not prove it changed nothing (a 5xx such as statusCode 9 "processing
                # incomplete", a timeout, a dropped connection): it may have applied. Never resend.
                record.update(
                    posted=True,
                    answer="lost" if exc.http_status is None else "unknown",
                    switched_at=time.time(),
                    detail=f"the POST reached RWS {dc.site} but "
                    + (
                        "no usable answer came back"
                        if exc.http_status is None
                        else "RWS did not confirm it (and did not prove it changed nothing)"
                    )
                    + f" ({_scrub(str(exc))}); it is NOT resent. Verification will tell whether it applied",
                )
                log.error("%s", record["detail"])
                return
        answers.append(_answer_entry("switch", dc.site, answer))
        record.update(
            posted=True,
            answer="accepted",
            switched_at=time.time(),
            http_status=answer.http_status,
            statusCode=answer.status_code,
            attempts=answer.attempts,
            detail=f"RWS {dc.site} accepted multimedia-switch to {target} (HTTP {answer.http_status}, "
            f"statusCode {answer.status_code}, {answer.attempts} attempt(s))",
        )
        log.warning("%s", record["detail"])
        return
    record["detail"] = "no RWS answered: " + "; ".join(skipped)
    raise FailoverRefused("switch-failed", f"{record['detail']}. Nothing was switched")


def _refused_by_rws(exc: RwsError) -> bool:
    """A 4xx answer: RWS turned the request down before acting on it (bad input, forbidden, not found)."""
    return exc.http_status is not None and 400 <= exc.http_status < 500


def _one_environment_id(site: str, node: Mapping[str, Any], preflight: Mapping[str, Any]) -> str:
    """The one genesys-environment ID this RWS lists now: the one pre-flight saw, shown to the approver."""
    ids = node["environment_ids"]
    if len(ids) != 1:
        raise FailoverRefused(
            "site-changed",
            f"RWS {site} now lists {len(ids)} genesys environments ({ids}); the procedure needs exactly one. "
            "Nothing was switched",
        )
    shown = preflight.get("environment_id")
    if shown is not None and shown != ids[0]:
        raise FailoverRefused(
            "site-changed",
            f"RWS {site} lists genesys environment {ids[0]}, not {shown} as at pre-flight; nothing was "
            "switched. Trigger again",
        )
    return ids[0]


# --- outcome, follow-ups and audit --------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    name: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.name in OK_OUTCOMES


def decide_outcome(  # noqa: PLR0911, PLR0912 - a decision table, read top to bottom
    *,
    preflight: Mapping[str, Any] | None,
    approval: Mapping[str, Any] | None,
    recheck: Mapping[str, Any] | None,
    switch: Mapping[str, Any] | None,
    verification: Mapping[str, Any] | None,
    states: Mapping[str, Any],
) -> Outcome:
    """What happened, from what each step recorded (and the task states where a step left no record)."""
    preflight, recheck, switch = preflight or {}, recheck or {}, switch or {}
    if preflight.get("refused"):
        return Outcome(preflight["refused"]["outcome"], preflight["refused"]["message"])
    if "request" not in preflight or "environment_id" not in preflight or preflight.get("error"):
        why = (
            preflight.get("error")
            or f"the preflight task ended {states.get(PREFLIGHT) or 'without a record'}"
        )
        return Outcome("preflight-failed", f"pre-flight failed: {why}; nothing was asked or switched")
    target = preflight["request"]["target_site"]
    if preflight.get("already_current"):
        return Outcome(
            "already-current", f"RWS already reports {target}: no approval was asked and nothing was switched"
        )
    if approval is None:
        if states.get(APPROVE_FAILOVER) == "success":
            return Outcome(
                "not-authorized",
                "approve_failover succeeded without an answer (marked success by hand?); "
                "nothing was switched",
            )
        return Outcome(
            "error",
            f"the approval step ended {states.get(APPROVE_FAILOVER) or 'without running'} without an answer; "
            "nothing was switched",
        )
    if approval.get("unreadable"):
        pass  # judged by what the re-check and the switch (which read it themselves) recorded
    elif list(approval.get("chosen_options") or []) != [APPROVE]:
        if approval.get("timed_out") or approval.get("responded_by_user") is None:
            return Outcome("timed-out", "nobody answered the approval request in time; nothing was switched")
        return Outcome(
            "rejected",
            f"rejected by {_user(approval.get('responded_by_user'))} at "
            f"{iso_utc(approval.get('responded_at'))}; nothing was switched",
        )
    for refusal in (recheck.get("refused"), switch.get("refused")):
        if refusal:
            return Outcome(refusal["outcome"], refusal["message"])
    if recheck.get("decision") is None:
        return Outcome(
            "error", f"the re-check ended {states.get(RECHECK) or 'without running'}; nothing was switched"
        )
    if recheck["decision"] == "nothing-to-do":
        return Outcome("already-current", recheck["detail"])
    if switch.get("decision") == "nothing-to-do":
        return Outcome("already-current", switch["detail"])
    if switch.get("decision") == "dry-run":
        return Outcome("dry-run", switch["detail"])
    if not switch.get("posted"):
        if switch.get("answer") == "pending":
            return Outcome(
                "switch-unknown",
                f"the switch task ended {states.get(SWITCH) or 'abruptly'} while its POST to RWS "
                f"{switch.get('via_site')} was in flight: whether it applied is unknown. Check the eServices "
                "site by hand before triggering again",
            )
        if switch.get("post_attempted"):
            return Outcome("switch-failed", switch.get("detail") or "the POST failed; nothing was switched")
        if not switch and states.get(SWITCH) not in (None, "skipped", "upstream_failed", "removed"):
            return Outcome(
                "switch-unknown",
                f"the switch task ended {states.get(SWITCH)} without recording anything (killed?): whether "
                "a POST was sent is unknown. Check the eServices site by hand before triggering again",
            )
        return Outcome(
            "error",
            f"the switch task ended {states.get(SWITCH) or 'without running'} before sending anything",
        )
    if not verification:
        return Outcome(
            "unverified",
            f"{switch.get('detail')}; verification did not complete (verify_switch "
            f"{states.get(VERIFY) or 'did not run'}): check the site by hand",
        )
    result = verification.get("outcome")
    if result == "verified":
        lost = (
            " (the POST's answer was lost, but RWS now reports the target)"
            if switch.get("answer") == "lost"
            else ""
        )
        return Outcome("verified", f"{switch.get('detail')}; {verification.get('detail')}{lost}")
    if switch.get("answer") == "lost":
        return Outcome(
            "switch-unknown",
            f"{switch.get('detail')}; verification: {verification.get('detail')}. Whether the switch applied "
            "is unknown: check RWS by hand before triggering again",
        )
    if result == "unverified" or switch.get("answer") == "unknown":
        return Outcome(
            "unverified",
            f"{switch.get('detail')}; NOT verified: {verification.get('detail')}. Check the eServices site "
            "by hand",
        )
    return Outcome(
        "verify-failed",
        f"{switch.get('detail')}; but {verification.get('detail')}. The switch did not take effect",
    )


def switch_back_command(topology: Topology, change_ticket: str | None = None) -> str:
    """The REST API call that triggers the switch-back as the signed-in user (a CLI trigger cannot switch:
    it records the OS user, which proves nobody)."""
    conf = {
        "target_site": topology.primary_site,
        "reason": f"{topology.primary_site} repaired: switching eServices back",
        "change_ticket": change_ticket or "<ticket>",
    }
    body = json.dumps({"logical_date": None, "conf": conf})
    return (
        f'curl -X POST "$AIRFLOW_URL/api/v2/dags/{DAG_ID}/dagRuns" -H "Authorization: Bearer $MY_TOKEN" '
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


def follow_ups(
    topology: Topology, target_site: str, *, backup_name: str | None = None, change_ticket: str | None = None
) -> list[str]:
    """What the guide says must follow by hand once RWS uses ``target_site``, and how to switch back."""
    items = [
        "Workspace Desktop Edition: set [interaction-workspace] disaster-recovery.eservices-site = "
        f"{target_site} in the WDE application object, so agent desktops use the same eServices site as RWS.",
    ]
    if any(dc.rws.screen_recording for dc in topology.data_centers):
        items.append(
            f"Screen Recording Service: make SRS connect to the RWS nodes of {target_site}. With WDE >= "
            "8.5.118.10 and SRS >= 8.5.340.97, check [interaction-workspace] screen-recording.htcc.peer_uri; "
            "with older versions re-submit the data center address from the agent desktop, update the RWS "
            "DNS name, or redirect the HTTP load balancer."
        )
    shipping = topology.shipping
    if shipping is not None and target_site == shipping.to_site:
        items.append(
            f"SpeechMiner: promote the backup index in {target_site} to the primary instance (SMConfig > "
            f"Index), from the newest verified backup {backup_name or '(see the pre-flight findings)'} under "
            f"{shipping.destination}."
        )
    elif shipping is not None and target_site == shipping.from_site:
        items.append(
            f"SpeechMiner: make the index in {target_site} the primary instance again (SMConfig > Index) and "
            f"check that the Daily Index Backup to {shipping.to_site} resumes."
        )
    elif shipping is not None:
        items.append(
            f"SpeechMiner: no index backup is shipped to {target_site}; SpeechMiner stays where it runs "
            f"({shipping.from_site}, backup in {shipping.to_site})."
        )
    if target_site != topology.primary_site:
        items.append(
            f"Switch back when {topology.primary_site} is repaired, with the same DAG: in the UI, Trigger "
            f"gir_eservices_failover with target_site={topology.primary_site} and a reason, then have "
            "another approver approve it under Required Actions; or through the REST API as yourself "
            "(token from POST /auth/token): "
            f"{switch_back_command(topology, change_ticket)}"
        )
    else:
        items.append(f"This run switched back to the primary {target_site}: no further switch is needed.")
    return items


def _states(ti: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    try:
        by_run = ti.get_task_states(dag_id=dag_id, run_ids=[run_id]) or {}
    except Exception as exc:  # the audit must still be written
        log.warning("could not read task states: %s", exc)
        return {}
    return dict(by_run.get(run_id) or {})


def _recorded_answer(dag_run: Any) -> dict[str, Any] | None:
    """The approval as Airflow recorded it (None when nobody answered); the audit never trusts XCom for it."""
    try:
        with AirflowApiClient() as api:
            approval = approval_of_run(dag_run, api)
    except Exception as exc:  # the audit must still be written
        log.warning("could not read this run's approval from Airflow: %s", _scrub(str(exc)))
        return {"unreadable": _scrub(f"{type(exc).__name__}: {exc}")}
    if not approval or not approval["response_received"]:
        return None
    return {**approval, "timed_out": approval.get("responded_by_user") is None}


def gather(context: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the steps recorded, for the audit and the outcome."""
    ti, dag_run = context["ti"], context["dag_run"]
    return {
        "preflight": ti.xcom_pull(task_ids=PREFLIGHT, key="record"),
        "approval": _recorded_answer(dag_run),
        "recheck": ti.xcom_pull(task_ids=RECHECK, key="record"),
        "switch": ti.xcom_pull(task_ids=SWITCH, key="record"),
        "verification": ti.xcom_pull(task_ids=VERIFY, key="record"),
        "states": _states(ti, dag_run.dag_id, dag_run.run_id),
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
    outcome = decide_outcome(
        preflight=steps.get("preflight"),
        approval=approval,
        recheck=steps.get("recheck"),
        switch=steps.get("switch"),
        verification=steps.get("verification"),
        states=steps.get("states") or {},
    )
    site_before = preflight.get("current_site")
    site_after = _site_after(outcome, preflight, steps)
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
    switched = outcome.name in ("verified", "unverified", "switch-unknown", "verify-failed")
    return {
        "schema": AUDIT_SCHEMA,
        "dag_id": getattr(dag_run, "dag_id", DAG_ID),
        "run_id": getattr(dag_run, "run_id", None),
        "outcome": outcome.name,
        "outcome_ok": outcome.ok,
        "detail": outcome.detail,
        "triggered_by": getattr(dag_run, "triggering_user_name", None),
        "run_started_at": iso_utc(
            getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None)
        ),
        "decision": decision,
        "reason": request.get("reason") or conf.get("reason"),
        "change_ticket": request.get("change_ticket") or conf.get("change_ticket"),
        "dry_run": request.get("dry_run", conf.get("dry_run")),
        "target_site": target,
        "site_before": site_before,
        "site_after": site_after,
        "environment_id": preflight.get("environment_id"),
        "switch": {
            k: (steps.get("switch") or {}).get(k)
            for k in ("posted", "answer", "via_site", "http_status", "statusCode", "attempts", "detail")
        },
        "verification": {k: verification.get(k) for k in ("outcome", "detail", "elapsed_seconds", "polls")},
        "preflight": {
            "warnings": preflight.get("warnings"),
            "keystore": preflight.get("keystore"),
            "backup": preflight.get("backup"),
            "error": preflight.get("error"),
        },
        "rws_answers": answers,
        "task_states": steps.get("states") or {},
        "follow_ups": (
            follow_ups(
                topology,
                target,
                backup_name=(preflight.get("backup") or {}).get("backup_name"),
                change_ticket=request.get("change_ticket"),
            )
            if target and (switched or outcome.name == "dry-run")
            else []
        ),
        "written_at": iso_utc(written_at),
    }


def _site_after(outcome: Outcome, preflight: Mapping[str, Any], steps: Mapping[str, Any]) -> str | None:
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
    if outcome.name in ("unverified", "switch-unknown"):
        return None
    if outcome.name == "already-current" and preflight.get("already_current") is False:
        return (preflight.get("request") or {}).get("target_site")
    recheck = steps.get("recheck") or {}
    if "current_site" in recheck:
        return recheck["current_site"]
    return preflight.get("current_site")


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def write_audit_record(
    audit_log: str, record: Mapping[str, Any], *, started_at: datetime, try_number: int
) -> str:
    """Add one file under ``audit_log`` (never overwrite): the safe "append" on any object store.

    Named by the run's start time and run_id (and the try), so records sort by time and a retry of the
    audit task adds a file instead of replacing one. Read back and compared before it counts as written.
    """
    from airflow.sdk import ObjectStoragePath

    base = ObjectStoragePath(audit_log)
    if base.protocol in ("file", "local"):
        base.mkdir(parents=True, exist_ok=True)
    stem = f"{started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}_{_UNSAFE_NAME.sub('_', str(record['run_id']))}"
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
    """Step 7: always runs (trigger rule all_done) and writes what upstream recorded."""
    from include.gir_ops.topology import load_topology

    ti, dag_run = context["ti"], context["dag_run"]
    topology = load_topology()
    steps = gather(context)
    record = build_audit_record(steps, topology=topology, dag_run=dag_run, written_at=_now())
    started = getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None) or _now()
    location = write_audit_record(
        _failover(topology).audit_log, record, started_at=started, try_number=ti.try_number
    )
    log.info("Audit record written to %s: outcome %s", location, record["outcome"])
    summary = {"location": location, "outcome": record["outcome"], "detail": record["detail"]}
    ti.xcom_push(key="record", value=summary)
    return summary


def run_outcome(context: Mapping[str, Any]) -> None:
    """The run's verdict: fails unless the outcome is one of OK_OUTCOMES and the audit was written."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.gir_ops.topology import load_topology

    ti, dag_run = context["ti"], context["dag_run"]
    topology = load_topology()
    steps = gather(context)
    record = build_audit_record(steps, topology=topology, dag_run=dag_run, written_at=_now())
    audit = ti.xcom_pull(task_ids=AUDIT, key="record")
    lines = [f"OUTCOME: {record['outcome']}", record["detail"]]
    if record["follow_ups"]:
        lines += [
            "",
            "Follow-ups by hand:",
            *(f"  {i}. {item}" for i, item in enumerate(record["follow_ups"], 1)),
        ]
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
