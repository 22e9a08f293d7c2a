"""The failover steps that read RWS and may switch: pre-flight, the re-check after approval, the one POST.

The GIR guide's manual procedure: find the genesys-environment ID, POST ``multimedia-switch`` with
``{"eServicesSite": "<site>"}`` to RWS, let RWS apply it within ``drMonitoringDelay`` seconds, point the
agent desktops at the same site, and switch back the same way once the primary is repaired.
``dags/gir_eservices_failover.py`` wires the steps; they decide here, testable without a scheduler:

1. :func:`run_preflight` reads, never writes: which RWS nodes answer (the target's first), the site they
   report, the genesys-environment ID, the latest RCS keystore check and SpeechMiner backup Asset events.
   Its Markdown findings become the body of the approval request.
2. The HITL ``approve_failover`` task asks a configured approver (``operators.FailoverApprovalOperator``).
3. :func:`run_recheck` applies the approval rule (``authorization.authorize``) and re-reads the site: a
   change means the approval was given for a situation that no longer exists.
4. :func:`run_switch` applies the rule again, spends the approval and sends ONE ``multimedia-switch`` POST
   (``RwsClient.multimedia_switch`` resends only when the request provably never reached RWS, or RWS
   proved it changed nothing).

Every step runs inside :func:`step_record`, which owns its record (one shape for all), the RWS answers,
the refusal and the XCom push, so the audit can say what happened even when a step failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from include.gir_ops.airflow_api import AirflowApiClient
from include.gir_ops.backup.spec import speechminer_backup_asset
from include.gir_ops.failover.authorization import (
    approval_of_run,
    authorize,
    claim_approval,
    refuse_repeated_switch,
    refuse_untrusted_trigger,
    trigger_path,
)
from include.gir_ops.failover.checklist import readiness_items
from include.gir_ops.failover.findings import (
    approval_text,
    backup_finding,
    keystore_finding,
    latest_event,
    preflight_warnings,
)
from include.gir_ops.failover.spec import (
    INTERACTION_SERVER_ONLY,
    MIN_REASON_LENGTH,
    PARAM_KEYS,
    PREFLIGHT,
    RECHECK,
    SCENARIOS,
    FailoverRefused,
    Outcome,
    failover_settings,
)
from include.gir_ops.failover.survey import (
    answer_entry,
    error_entry,
    observe_node,
    one_environment_id,
    ordered_sites,
    scrub,
    site_decision,
    site_field_of,
    survey_rws,
)
from include.gir_ops.keystore.spec import RCS_KEYSTORE_CHECK_ASSET
from include.gir_ops.rws import RwsAuthError, RwsClient, RwsError, RwsUnreachable, not_processed
from include.gir_ops.shared import OPS_API, fail_without_retry, iso_utc
from include.gir_ops.topology import Topology, load_topology

log = logging.getLogger(__name__)


# --- one scaffold for every step ------------------------------------------------------------------------


class Step:
    """One step's record, in the shape every step shares, and its push to XCom key ``record``.

    ``{"started_at", "rws_answers", "refused": {"outcome", "message"} | None, "error": str | None, ...}``
    plus the step's own fields. ``answers`` is the list the RWS readers append to.
    """

    def __init__(self, ti: Any, fields: Mapping[str, Any]) -> None:
        self.ti = ti
        self.answers: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {
            "started_at": iso_utc(datetime.now(UTC)),
            "rws_answers": self.answers,
            "refused": None,
            "error": None,
            **fields,
        }

    def push(self) -> None:
        """Store the record as it is now (also mid-step, before a POST whose answer may never come)."""
        self.ti.xcom_push(key="record", value=json.loads(json.dumps(self.record, default=iso_utc)))


@contextlib.contextmanager
def step_record(ti: Any, **fields: Any) -> Iterator[Step]:
    """Run one step: record a refusal or an error, push the record whatever happens.

    A :class:`FailoverRefused` fails the task at once (no retry can change it), its text "outcome:
    message"; any other error is recorded (without credentials) and raised as it is for Airflow's retries.
    """
    step = Step(ti, fields)
    with fail_without_retry(FailoverRefused):
        try:
            yield step
        except FailoverRefused as exc:
            step.record["refused"] = {"outcome": exc.outcome.value, "message": exc.message}
            log.error("Refused: %s", exc.message)
            raise
        except Exception as exc:
            step.record["error"] = scrub(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            step.push()


# --- the request ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailoverRequest:
    target_site: str
    reason: str
    change_ticket: str | None
    dry_run: bool
    triggered_by: str | None
    scenario: str = INTERACTION_SERVER_ONLY


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
            Outcome.PREFLIGHT_FAILED,
            f"unknown trigger conf key(s) {unknown}; the only keys are {list(PARAM_KEYS)} "
            "(check the spelling, e.g. dry_run); nothing was asked or switched",
        )
    target = params.get("target_site")
    if target not in topology.sites:
        raise FailoverRefused(
            Outcome.PREFLIGHT_FAILED,
            f"target_site {target!r} is not a site of the topology ({', '.join(topology.sites)})",
        )
    reason = str(params.get("reason") or "").strip()
    if len(reason) < MIN_REASON_LENGTH:
        raise FailoverRefused(
            Outcome.PREFLIGHT_FAILED, f"reason must say why in at least {MIN_REASON_LENGTH} characters"
        )
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise FailoverRefused(Outcome.PREFLIGHT_FAILED, f"dry_run must be true or false, not {dry_run!r}")
    ticket = str(params.get("change_ticket") or "").strip() or None
    scenario = params.get("scenario", INTERACTION_SERVER_ONLY)
    if scenario not in SCENARIOS:
        raise FailoverRefused(
            Outcome.PREFLIGHT_FAILED,
            f"scenario {scenario!r} is not one of {list(SCENARIOS)}: choose whether only the Interaction "
            "Server is down or the whole data center is lost",
        )
    return FailoverRequest(target, reason, ticket, dry_run, (triggered_by or "").strip() or None, scenario)


# --- 1. pre-flight ----------------------------------------------------------------------------------------


def run_preflight(context: Mapping[str, Any]) -> None:
    """Read-only checks; the findings (XCom ``record``) feed the approval request and the audit."""
    ti, dag_run = context["ti"], context["dag_run"]
    with step_record(ti) as step:
        record = step.record
        topology = load_topology()
        failover_settings(topology)
        request = read_request(dag_run.conf, context["params"], dag_run.triggering_user_name, topology)
        record["request"] = asdict(request)
        survey = survey_rws(topology, request.target_site, phase="preflight", answers=step.answers)
        record.update(survey)
        now = datetime.now(UTC)
        keystore_event, keystore_error = latest_event(context["inlet_events"], RCS_KEYSTORE_CHECK_ASSET)
        record["keystore"] = keystore_finding(keystore_event, topology, now, keystore_error)
        backup_event, backup_error = (None, None)
        if topology.shipping is not None and request.target_site == topology.shipping.to_site:
            asset = speechminer_backup_asset(topology.shipping.to_site)
            backup_event, backup_error = latest_event(context["inlet_events"], asset)
        record["backup"] = backup_finding(backup_event, topology, request.target_site, now, backup_error)
        record["readiness"] = readiness_items(topology, request.target_site, request.scenario)
        record["warnings"] = preflight_warnings(record)
        record["already_current"] = survey["current_site"] == request.target_site
        record["approval_subject"], record["approval_body"] = approval_text(record, topology)
        if not request.dry_run and not record["already_current"]:
            with AirflowApiClient() as api:
                via = trigger_path(dag_run, api)
            refuse_untrusted_trigger(
                via,
                "Pre-flight ran (see its findings) and nobody was asked. Trigger the switch from the UI "
                "or the REST API as yourself, or run this one with dry_run: true",
            )
        if record["already_current"]:
            log.warning(
                "RWS already reports eServicesSite %s: no approval asked, nothing will be switched",
                request.target_site,
            )
        log.info("Pre-flight findings:\n%s", record["approval_body"])


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


# --- 3. the re-check after the approval -------------------------------------------------------------------


def authorize_run(context: Mapping[str, Any], topology: Topology) -> tuple[FailoverRequest, dict[str, Any]]:
    """This run's request (from its trigger conf, which nobody can edit) and its authorization."""
    dag_run = context["dag_run"]
    request = read_request(dag_run.conf, context["params"], dag_run.triggering_user_name, topology)
    with AirflowApiClient() as api:
        authorization = authorize(
            approval_of_run(dag_run, api),
            dag_run.triggering_user_name,
            failover_settings(topology).approvers,
            triggered_via=trigger_path(dag_run, api),
            target_site=request.target_site,
            dry_run=request.dry_run,
        )
    return request, authorization


def run_recheck(context: Mapping[str, Any]) -> None:
    """The approval rule, then the site again after the (possibly long) wait for approval."""
    ti = context["ti"]
    with step_record(ti) as step:
        topology = load_topology()
        request, step.record["authorization"] = authorize_run(context, topology)
        preflight = ti.xcom_pull(task_ids=PREFLIGHT, key="record") or {}
        survey = survey_rws(topology, request.target_site, phase="recheck", answers=step.answers)
        step.record.update(current_site=survey["current_site"], nodes=survey["nodes"])
        step.record.update(site_decision(preflight, survey, request.target_site))
        log.info("Re-check: %s", step.record["detail"])


# --- 4. the one POST --------------------------------------------------------------------------------------


def run_switch(context: Mapping[str, Any]) -> None:
    """ONE multimedia-switch POST, never retried by Airflow, only by the client when safe.

    Everything that decides comes from this run's trigger conf, Airflow's record of the approval and RWS
    itself, read here again: never from another task's XCom, which a user may have rewritten.
    """
    ti, dag_run = context["ti"], context["dag_run"]
    with step_record(ti, posted=False) as step:
        refuse_repeated_switch(ti.try_number)
        topology = load_topology()
        request, authorization = authorize_run(context, topology)
        preflight = ti.xcom_pull(task_ids=PREFLIGHT, key="record") or {}
        recheck = ti.xcom_pull(task_ids=RECHECK, key="record") or {}
        if recheck.get("decision") not in ("switch", "nothing-to-do"):
            raise FailoverRefused(
                Outcome.NOT_AUTHORIZED, "the re-check after approval did not pass; nothing was sent"
            )
        step.record.update(target_site=request.target_site, dry_run=request.dry_run)
        if recheck["decision"] == "nothing-to-do":
            step.record.update(decision="nothing-to-do", detail=recheck["detail"])
            return
        switch_through_first_rws(
            topology,
            preflight=preflight,
            target=request.target_site,
            dry_run=request.dry_run,
            step=step,
            claim=lambda: claim_approval(
                failover_settings(topology).audit_log, dag_run.run_id, authorization, ti.try_number
            ),
        )


def switch_through_first_rws(
    topology: Topology,
    *,
    preflight: Mapping[str, Any],
    target: str,
    dry_run: bool,
    step: Step,
    claim: Callable[[], str],
) -> None:
    """POST through the first RWS that answers (target's first); move on only if the POST never left.

    The genesys-environment ID is the one this RWS reports now (checked against pre-flight's), not a value
    carried in XCom. ``claim`` spends the approval just before the POST; the record is pushed before the
    POST, so if the worker dies or the task times out while it is in flight, the audit says "unknown"
    instead of "nothing sent".
    """
    record, answers = step.record, step.answers
    skipped: list[str] = []
    for dc in ordered_sites(topology, target):
        node = observe_node(
            dc, target_site=target, phase="switch", answers=answers, site_field=site_field_of(topology)
        )
        if not node["answered"]:
            skipped.append(f"{dc.site}: {node['error']}")
            continue
        environment_id = one_environment_id(dc.site, node, preflight)
        record["environment_id"] = environment_id
        if node["eServicesSite"] == target:
            record.update(decision="nothing-to-do", detail=f"RWS {dc.site} already reports {target}")
            return
        before = preflight.get("current_site")
        if node["eServicesSite"] and before and node["eServicesSite"] != before:
            raise FailoverRefused(
                Outcome.SITE_CHANGED,
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
        step.push()
        path = f"{OPS_API}/genesys-environments/{environment_id}/multimedia-switch"
        log.warning("POST %s {'eServicesSite': %r} to RWS %s (sent once)", path, target, dc.site)
        # A fresh session: a pooled keep-alive connection closed by RWS would look like "sent, no answer".
        with RwsClient(dc.site, dc.rws_conn_id) as client:
            try:
                answer = client.multimedia_switch(environment_id, target)
            except RwsError as exc:
                answers.append(error_entry("switch", dc.site, "POST", path, exc))
                if isinstance(exc, RwsUnreachable) and not exc.request_sent:
                    record["answer"] = "not-sent"
                    skipped.append(f"{dc.site}: {exc} (the POST never left; trying the next RWS)")
                    continue
                if not_processed(exc) or isinstance(exc, RwsAuthError) or _refused_by_rws(exc):
                    record.update(answer="refused", detail=scrub(str(exc)))
                    raise FailoverRefused(
                        Outcome.SWITCH_FAILED,
                        f"RWS {dc.site} refused the switch: {scrub(str(exc))}. Nothing was switched; "
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
                    + f" ({scrub(str(exc))}); it is NOT resent. Verification will tell whether it applied",
                )
                log.error("%s", record["detail"])
                return
        answers.append(answer_entry("switch", dc.site, answer))
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
    raise FailoverRefused(Outcome.SWITCH_FAILED, f"{record['detail']}. Nothing was switched")


def _refused_by_rws(exc: RwsError) -> bool:
    """A 4xx answer: RWS turned the request down before acting on it (bad input, forbidden, not found)."""
    return exc.http_status is not None and 400 <= exc.http_status < 500
