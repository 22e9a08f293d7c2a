"""The RCS keystore replication (DAG ``gir_rcs_keystore_replicate``): pre-flight, approved copy, check, audit.

1. :func:`run_preflight` reads, never writes: the request, the latest keystore check (it must be recent
   enough for its schedule), the reference (it must open with its password and hold an unexpired private
   key) and every target: what will be replaced, with fingerprints and the alias diff, never bytes.
2. The HITL ``approve_replication`` task asks another person (``keystore_replication.approvers``).
3. :func:`run_replicate` applies the shared two-person rule (``include/gir_ops/approvals.py``, the same
   code as the failover's) to Airflow's own record of the answer, spends the approval, and replaces each
   target (``writing.replace_keystore``): a target that fails is reported, the others go on.
4. :func:`run_verify` runs the keystore check's own logic; only when every target now matches is the run
   green. :func:`run_audit` writes one JSON record, :func:`run_outcome` gives the verdict and follow-ups
   (RCS reads its keystore at start: restart the instances that changed).

What the write trusts: the approver's answer as Airflow recorded it (never XCom), the subject the approver
was shown (which names the targets and the reference's digest), and the files themselves, read again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from include.gir_ops import approvals
from include.gir_ops.airflow_api import AirflowApiClient
from include.gir_ops.keystore.check import check_replication, connection_password, fetch_passwords
from include.gir_ops.keystore.compare import alias_diff
from include.gir_ops.keystore.java_keystores import PRIVATE_KEY
from include.gir_ops.keystore.model import DRIFT, MATCH, MISSING, KeystoreReading, targets_from_topology
from include.gir_ops.keystore.reading import open_keystore, read_keystore
from include.gir_ops.keystore.spec import (
    APPROVE_REPLICATION,
    AUDIT,
    MIN_REASON_LENGTH,
    PREFLIGHT,
    RCS_KEYSTORE_CHECK_ASSET,
    REPLICATE,
    REPLICATE_DAG_ID,
    REPLICATE_PARAM_KEYS,
    VERIFY,
)
from include.gir_ops.keystore.writing import WRITTEN, replace_keystore
from include.gir_ops.shared import iso_utc
from include.gir_ops.topology import KeystoreReplicationSettings, Topology, load_topology

log = logging.getLogger(__name__)

AUDIT_SCHEMA = "gir-ops/rcs-keystore-replication-audit/1"
SUBJECT_DIGEST_HEX = 16

# How a run ended (the audit's ``outcome``); only the first three are green.
REPLICATED, NOTHING_TO_DO, DRY_RUN = "replicated", "nothing-to-do", "dry-run"
PREFLIGHT_FAILED, PARTLY_FAILED, VERIFY_FAILED, ERROR = (
    "preflight-failed",
    "partly-failed",
    "verify-failed",
    "error",
)
OK_OUTCOMES = (REPLICATED, NOTHING_TO_DO, DRY_RUN)

GATE = approvals.ApprovalGate(
    task_id=APPROVE_REPLICATION,
    action="a keystore replication",
    nothing_done="no keystore was replaced",
    approvers_setting="keystore_replication.approvers",
    spent_by="one replication",
    nothing_sent="nothing was written",
)


class ReplicationRefused(Exception):
    """A step refuses for a reason a retry cannot change; ``outcome`` names it in the audit."""

    def __init__(self, outcome: str, message: str) -> None:
        self.outcome = outcome
        self.message = message
        super().__init__(f"{outcome}: {message}")


def settings_of(topology: Topology) -> KeystoreReplicationSettings:
    if topology.keystore_replication is None:
        raise ReplicationRefused(
            PREFLIGHT_FAILED,
            "the topology has no keystore_replication section; add keystore_replication.approvers and "
            "keystore_replication.audit_log",
        )
    return topology.keystore_replication


# --- the request --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicationRequest:
    targets: list[str]  # as asked; empty: the latest check's drift and missing instances
    dry_run: bool
    reason: str
    triggered_by: str | None


def read_request(
    conf: Mapping[str, Any] | None, params: Mapping[str, Any], triggered_by: str | None, topology: Topology
) -> ReplicationRequest:
    """The validated request. Unknown conf keys are refused: a typo such as ``dryrun`` must not write."""
    unknown = sorted(set(conf or {}) - set(REPLICATE_PARAM_KEYS))
    if unknown:
        raise ReplicationRefused(
            PREFLIGHT_FAILED,
            f"unknown trigger conf key(s) {unknown}; the only keys are {list(REPLICATE_PARAM_KEYS)} (check "
            "the spelling, e.g. dry_run); nothing was asked or written",
        )
    names = [rcs.name for _, rcs in topology.rcs_instances]
    targets = params.get("targets") or []
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ReplicationRefused(
            PREFLIGHT_FAILED, f"targets must be a list of RCS instance names, not {targets!r}"
        )
    for name in targets:
        if name not in names:
            raise ReplicationRefused(
                PREFLIGHT_FAILED,
                f"targets: {name!r} is not an RCS instance of the topology ({', '.join(names)})",
            )
        if name == topology.keystore_reference:
            raise ReplicationRefused(
                PREFLIGHT_FAILED, f"targets: {name!r} is the reference; it is the source, never a target"
            )
    reason = str(params.get("reason") or "").strip()
    if len(reason) < MIN_REASON_LENGTH:
        raise ReplicationRefused(
            PREFLIGHT_FAILED, f"reason must say why in at least {MIN_REASON_LENGTH} characters"
        )
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ReplicationRefused(PREFLIGHT_FAILED, f"dry_run must be true or false, not {dry_run!r}")
    return ReplicationRequest(list(targets), dry_run, reason, (triggered_by or "").strip() or None)


# --- is the latest check recent enough? ---------------------------------------------------------------


def allowed_check_age(topology: Topology, now: datetime) -> timedelta:
    """One period of ``keystore_check.schedule`` (the last two fire times before ``now``) plus the grace."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    local = now.astimezone(ZoneInfo(topology.primary.timezone))
    cron = croniter(topology.keystore_check.schedule, local)
    last = cron.get_prev(datetime)
    before = cron.get_prev(datetime)
    grace = timedelta(
        minutes=topology.keystore_replication.check_grace_minutes if topology.keystore_replication else 0
    )
    return (last - before) + grace


def latest_check(event: Any, topology: Topology, now: datetime) -> dict[str, Any]:
    """The latest keystore check's states, or a refusal when there is none or it is too old."""
    if event is None:
        raise ReplicationRefused(
            PREFLIGHT_FAILED,
            "no keystore check on record (asset gir_rcs_keystore_check has no event); trigger "
            "gir_rcs_keystore_check, then rerun; nothing was asked or written",
        )
    extra = dict(getattr(event, "extra", None) or {})
    try:
        checked_at = datetime.fromisoformat(str(extra.get("checked_at")))
    except ValueError:
        checked_at = getattr(event, "timestamp", None)
    if checked_at is None:
        raise ReplicationRefused(PREFLIGHT_FAILED, "the latest keystore check has no time; trigger it again")
    allowed = allowed_check_age(topology, now)
    age = now - checked_at
    if age > allowed:
        raise ReplicationRefused(
            PREFLIGHT_FAILED,
            f"the latest keystore check is from {iso_utc(checked_at)} ({int(age.total_seconds() // 60)} min "
            f"ago); its schedule ({topology.keystore_check.schedule}) plus keystore_replication."
            f"check_grace_minutes allows {int(allowed.total_seconds() // 60)} min. Trigger "
            "gir_rcs_keystore_check (is it paused or failing?), then rerun; nothing was asked or written",
        )
    return {
        "checked_at": iso_utc(checked_at),
        "states": dict(extra.get("states") or {}),
        "ok": extra.get("ok"),
    }


# --- pre-flight -----------------------------------------------------------------------------------------


def _read_all(topology: Topology, names: list[str], now: datetime, opener: Any) -> dict[str, KeystoreReading]:
    targets = [t for t in targets_from_topology(topology) if t.instance in names]
    passwords, problems = fetch_passwords(targets, connection_password)
    readings = {}
    for target in targets:
        conn_id = target.password_conn_id
        readings[target.instance] = read_keystore(
            target,
            passwords.get(conn_id) if conn_id else None,
            not_opened_reason=problems.get(conn_id) if conn_id else None,
            now=now,
            expiry_warning_days=topology.keystore_check.expiry_warning_days,
            opener=opener,
        )
    return readings


def refuse_bad_reference(reference: str, reading: KeystoreReading) -> None:
    """Only a reference that opens with its password and holds an unexpired private key is copied."""
    if reading.missing:
        raise ReplicationRefused(
            PREFLIGHT_FAILED, f"the reference {reference} is missing ({reading.error}); nothing to copy"
        )
    if reading.error:
        raise ReplicationRefused(
            PREFLIGHT_FAILED,
            f"the reference {reference} is unreadable ({reading.error}); a broken keystore is never copied",
        )
    if not reading.opened:
        raise ReplicationRefused(
            PREFLIGHT_FAILED,
            f"the reference {reference} could not be opened ({reading.not_opened_reason}); a keystore is "
            "copied only after its integrity is verified with its password: set its password_conn_id",
        )
    keys = [c for c in reading.certificates if c.entry_type == PRIVATE_KEY]
    if not any(c.expiry != "expired" for c in keys):
        expired = ", ".join(f"{c.alias} (expired {c.not_valid_after[:10]})" for c in keys) or "none at all"
        raise ReplicationRefused(
            PREFLIGHT_FAILED,
            f"the reference {reference} holds no private key with an unexpired certificate ({expired}): RCS "
            "could not encrypt new recordings with it. Renew it on the reference first; nothing was copied",
        )


def _entries(reading: KeystoreReading) -> list[dict[str, Any]]:
    return [
        {
            "alias": c.alias,
            "entry_type": c.entry_type,
            "sha256_fingerprint": c.sha256_fingerprint,
            "not_valid_after": c.not_valid_after,
            "expiry": c.expiry,
        }
        for c in reading.certificates
    ]


def plan_replication(
    topology: Topology,
    request: ReplicationRequest,
    check: Mapping[str, Any],
    *,
    now: datetime,
    opener: Any = open_keystore,
) -> dict[str, Any]:
    """What will be replaced: the reference's digest and entries, and per target what is there now."""
    reference = topology.keystore_reference
    if reference is None:
        raise ReplicationRefused(PREFLIGHT_FAILED, "no reference RCS instance (keystore_check.reference)")
    states = check.get("states") or {}
    asked = request.targets or sorted(
        n for n, s in states.items() if s in (DRIFT, MISSING) and n != reference
    )
    readings = _read_all(topology, [reference, *asked], now, opener)
    ref = readings[reference]
    refuse_bad_reference(reference, ref)
    plan, already = [], []
    for name in asked:
        reading = readings[name]
        if reading.sha256 == ref.sha256:
            already.append(name)
            continue
        if reading.missing:
            state, diff = MISSING, ["no keystore there: it will be created"]
        elif reading.error:
            state, diff = "unreadable", [f"unreadable now ({reading.error}): it will be replaced"]
        else:
            state = DRIFT
            diff = (
                alias_diff(ref, reading) if reading.opened else [f"not opened ({reading.not_opened_reason})"]
            )
        plan.append(
            {
                "instance": name,
                "site": reading.target.site,
                "url": reading.target.url,
                "state": state,
                "sha256_before": reading.sha256,
                "size_before": reading.size,
                "alias_diff": diff or ["same aliases and certificates, other bytes"],
            }
        )
    return {
        "reference": {
            "instance": reference,
            "url": ref.target.url,
            "sha256": ref.sha256,
            "size": ref.size,
            "format": ref.format,
            "entries": _entries(ref),
        },
        "targets": plan,
        "already_current": already,
        "latest_check": dict(check),
    }


def approval_subject(plan: Mapping[str, Any]) -> str:
    names = ", ".join(t["instance"] for t in plan["targets"])
    ref = plan["reference"]
    return (
        f"RCS keystore replication: replace {len(plan['targets'])} keystore(s) [{names}] with "
        f"{ref['instance']}'s (sha256 {ref['sha256'][:SUBJECT_DIGEST_HEX]})?"
    )


_SUBJECT = re.compile(
    r"replace \d+ keystore\(s\) \[(?P<names>[^\]]*)\] with \S+'s \(sha256 (?P<digest>[0-9a-f]+)\)\?$"
)


def subject_plan(subject: str) -> tuple[list[str], str] | None:
    """(targets, reference digest prefix) as the approval request's subject named them to the approver."""
    match = _SUBJECT.search(subject or "")
    if not match:
        return None
    return [n for n in match["names"].split(", ") if n], match["digest"]


def _fence(text: str) -> str:
    return "```text\n" + text.replace("```", "'''") + "\n```"


def approval_body(plan: Mapping[str, Any], request: ReplicationRequest) -> str:
    """Markdown for the approver: what will be replaced, by what, and why. Fingerprints only, no bytes."""
    ref = plan["reference"]
    lines = [
        f"## Replace RCS keystores with {ref['instance']}'s",
        "",
        f"**Triggered by:** `{(request.triggered_by or 'unknown').replace('`', '')}`  ",
        f"**Reference:** `{ref['instance']}` {ref['format']}, sha256 `{ref['sha256']}`, "
        f"{ref['size']} bytes  ",
        f"**Latest check:** {plan['latest_check'].get('checked_at')}",
        "",
        "**Reason given:**",
        "",
        _fence(request.reason),
        "",
        "| instance | DC | now | sha256 now | what differs |",
        "|---|---|---|---|---|",
    ]
    for t in plan["targets"]:
        before = (t["sha256_before"] or "-")[:16]
        lines.append(
            f"| {t['instance']} | {t['site']} | {t['state']} | `{before}` | {'; '.join(t['alias_diff'])} |"
        )
    lines += ["", "Reference entries:", ""]
    for e in ref["entries"]:
        fingerprint = e["sha256_fingerprint"][:23]
        lines.append(
            f"- `{e['alias']}` {e['entry_type']} {fingerprint} until {e['not_valid_after'][:10]} "
            f"({e['expiry']})"
        )
    lines += [
        "",
        "Each keystore is written to a temp file beside it, the previous one kept as "
        "`<name>.bak-<UTC time>`, then swapped in atomically and read back. A keystore changed by someone "
        "else after this pre-flight is refused, not overwritten. Afterwards the RCS instances that changed "
        "must be restarted.",
        "",
        "The person who triggered this run cannot approve it (two-person rule).",
    ]
    return "\n".join(lines)


def run_preflight(context: Mapping[str, Any]) -> dict[str, Any]:
    """Read-only: the request, the latest check, the reference and the targets; the approval text."""
    ti, dag_run = context["ti"], context["dag_run"]
    record: dict[str, Any] = {"started_at": iso_utc(datetime.now(UTC)), "refused": None}
    try:
        topology = load_topology()
        settings_of(topology)
        request = read_request(dag_run.conf, context["params"], dag_run.triggering_user_name, topology)
        record["request"] = asdict(request)
        now = datetime.now(UTC)
        event, error = latest_event(context["inlet_events"], RCS_KEYSTORE_CHECK_ASSET)
        if error:
            raise ReplicationRefused(
                PREFLIGHT_FAILED, f"the latest keystore check could not be read ({error})"
            )
        check = latest_check(event, topology, now)
        plan = plan_replication(topology, request, check, now=now)
        record.update(plan)
        record["nothing_to_do"] = not plan["targets"]
        if plan["targets"]:
            record["approval_subject"] = approval_subject(plan)
            record["approval_body"] = approval_body(plan, request)
            if not request.dry_run:
                with AirflowApiClient() as api:
                    via = approvals.trigger_path(dag_run, api)
                try:
                    approvals.refuse_untrusted_trigger(
                        via,
                        UNTRUSTED_PREFLIGHT,
                    )
                except approvals.ApprovalRefused as exc:
                    raise ReplicationRefused(exc.kind, exc.message) from None
        _log_plan(record, request)
    except ReplicationRefused as exc:
        record["refused"] = {"outcome": exc.outcome, "message": exc.message}
        log.error("Refused: %s", exc.message)
        raise
    finally:
        ti.xcom_push(key="record", value=json.loads(json.dumps(record, default=iso_utc)))
    return record


UNTRUSTED_PREFLIGHT = (
    "Pre-flight ran (see its findings) and nobody was asked. Trigger the replication from the UI or the "
    "REST API as yourself, or run this one with dry_run: true"
)


def latest_event(inlet_events: Any, asset: Any) -> tuple[Any | None, str | None]:
    """The newest event of ``asset`` through the task's ``inlet_events``, or why it could not be read."""
    try:
        events = list(inlet_events[asset].ascending(False).limit(1))
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return (events[0] if events else None), None


def _log_plan(record: Mapping[str, Any], request: ReplicationRequest) -> None:
    if record["nothing_to_do"]:
        log.info(
            "Nothing to do: %s already match the reference",
            ", ".join(record["already_current"]) or "no instance is drift or missing in the latest check",
        )
        return
    log.info(
        "Pre-flight%s:\n%s",
        " (DRY RUN: nothing will be asked or written)" if request.dry_run else "",
        record["approval_body"],
    )


def approval_needed(context: Mapping[str, Any]) -> bool:
    """Short-circuit: nobody is asked when there is nothing to do or the run is a dry run."""
    record = context["ti"].xcom_pull(task_ids=PREFLIGHT, key="record") or {}
    request = record.get("request") or {}
    if record.get("nothing_to_do"):
        log.info("Nothing to replace: no approval asked")
        return False
    if request.get("dry_run"):
        log.warning("DRY RUN: pre-flight listed what would be replaced; nobody is asked, nothing written")
        return False
    return True


# --- the approved copy ------------------------------------------------------------------------------------


def _read_bytes(url: str, opener: Any = open_keystore) -> bytes:
    with opener(url) as handle:
        return handle.read()


def authorize_run(
    context: Mapping[str, Any], topology: Topology, plan: Mapping[str, Any], reference_sha: str
) -> dict[str, Any]:
    """The shared two-person rule on Airflow's own record of this run's answer; raises ReplicationRefused."""
    dag_run = context["dag_run"]
    settings = settings_of(topology)
    names = [t["instance"] for t in plan["targets"]]
    try:
        with AirflowApiClient() as api:
            return approvals.authorize(
                approvals.approval_of_run(dag_run, api, APPROVE_REPLICATION),
                dag_run.triggering_user_name,
                [a.id for a in settings.approvers],
                gate=GATE,
                triggered_via=approvals.trigger_path(dag_run, api),
                trusted_trigger_needed=True,
                untrusted_consequence="A keystore replication must be triggered from the UI or the REST API "
                "as yourself. No keystore was replaced",
                subject_matches=lambda shown: (
                    subject_plan(shown) == (names, reference_sha[:SUBJECT_DIGEST_HEX])
                ),
                requested=f"replacing [{', '.join(names)}] with the reference sha256 "
                f"{reference_sha[:SUBJECT_DIGEST_HEX]}",
            )
    except approvals.ApprovalRefused as exc:
        raise ReplicationRefused(exc.kind, exc.message) from None


def run_replicate(context: Mapping[str, Any], *, opener: Any = open_keystore) -> dict[str, Any]:
    """Authorize, spend the approval, replace every target; a failing target never stops the others."""
    ti, dag_run = context["ti"], context["dag_run"]
    record: dict[str, Any] = {"started_at": iso_utc(datetime.now(UTC)), "refused": None, "results": []}
    try:
        if ti.try_number > 1:
            raise ReplicationRefused(
                approvals.NOT_AUTHORIZED,
                f"this run's approval was already used: its replicate step already ran (try "
                f"{ti.try_number}). Trigger a new run for a fresh pre-flight and approval; nothing was "
                "written",
            )
        topology = load_topology()
        settings = settings_of(topology)
        plan = ti.xcom_pull(task_ids=PREFLIGHT, key="record") or {}
        if not plan.get("targets"):
            raise ReplicationRefused(
                approvals.NOT_AUTHORIZED, "no pre-flight plan on record; nothing was written"
            )
        # Where to read and write comes from the topology, never from XCom (writable through the REST
        # API): only the instance names (which the approver saw in the subject) and the digests pre-flight
        # saw are taken from pre-flight's record.
        urls = {t.instance: t.url for t in targets_from_topology(topology)}
        ref = plan["reference"]
        reference = topology.keystore_reference
        unknown = [
            t["instance"] for t in plan["targets"] if t["instance"] not in urls or t["instance"] == reference
        ]
        if reference is None or unknown:
            raise ReplicationRefused(
                approvals.NOT_AUTHORIZED,
                f"pre-flight's record names {unknown or 'no reference'}, not RCS targets of the topology; "
                "nothing was written",
            )
        data = _read_bytes(urls[reference], opener)
        sha = hashlib.sha256(data).hexdigest()
        record["authorization"] = authorize_run(context, topology, plan, sha)
        if sha != ref["sha256"]:
            raise ReplicationRefused(
                PREFLIGHT_FAILED,
                f"the reference {ref['instance']} changed since pre-flight (sha256 "
                f"{ref['sha256'][:12]}… then, {sha[:12]}… now); nothing was written. Trigger a new run",
            )
        try:
            record["approval_used"] = approvals.claim_approval(
                settings.audit_log, dag_run.run_id, record["authorization"], ti.try_number, GATE
            )
        except approvals.ApprovalRefused as exc:
            raise ReplicationRefused(exc.kind, exc.message) from None
        now = datetime.now(UTC)
        for target in plan["targets"]:
            result = replace_keystore(
                target["instance"],
                urls[target["instance"]],
                data,
                sha256=sha,
                expected_sha256=target["sha256_before"],
                now=now,
                folder_may_be_link=settings.target_dir_may_be_link,
            )
            record["results"].append(result.to_dict())
            (log.info if result.status in WRITTEN else log.error)(
                "%s (%s): %s: %s", result.instance, result.url, result.status, result.detail
            )
        del data
    except ReplicationRefused as exc:
        record["refused"] = {"outcome": exc.outcome, "message": exc.message}
        log.error("Refused: %s", exc.message)
        raise
    finally:
        ti.xcom_push(key="record", value=json.loads(json.dumps(record, default=iso_utc)))
    return record


def run_verify(context: Mapping[str, Any]) -> dict[str, Any]:
    """The keystore check's own logic, after the copy: the run is green only when every target matches."""
    topology = load_topology()
    report = check_replication(topology)
    if RCS_KEYSTORE_CHECK_ASSET in (context.get("outlet_events") or {}):
        context["outlet_events"][RCS_KEYSTORE_CHECK_ASSET].extra = report.asset_extra()
    record = {
        "ok": report.ok,
        "summary": report.summary(),
        "states": report.states,
        "checked_at": report.checked_at,
    }
    context["ti"].xcom_push(key="record", value=record)
    return record


# --- the verdict and the audit ----------------------------------------------------------------------------


def recorded_answer(dag_run: Any) -> dict[str, Any] | None:
    """The approval as Airflow recorded it (never XCom); None when nobody answered."""
    try:
        with AirflowApiClient() as api:
            approval = approvals.approval_of_run(dag_run, api, APPROVE_REPLICATION)
    except Exception as exc:  # the audit must still be written
        return {"unreadable": f"{type(exc).__name__}"}
    if not approval or not approval["response_received"]:
        return None
    return approval


def decide(steps: Mapping[str, Any]) -> tuple[str, str, list[str]]:  # noqa: PLR0911 (one verdict table)
    """(outcome, detail, follow-ups) from what the steps recorded."""
    pre = steps.get("preflight") or {}
    rep = steps.get("replicate") or {}
    verify = steps.get("verify") or {}
    if not pre:
        return ERROR, "pre-flight left no record (see its log)", []
    if pre.get("refused"):
        return pre["refused"]["outcome"], pre["refused"]["message"], []
    if pre.get("nothing_to_do"):
        return NOTHING_TO_DO, "every target already holds the reference's keystore; nothing was written", []
    if (pre.get("request") or {}).get("dry_run"):
        names = ", ".join(t["instance"] for t in pre["targets"])
        return DRY_RUN, f"DRY RUN: would replace {names}; nobody was asked, nothing was written", []
    if not rep:
        judged = approvals.judge_answer(steps.get("approval"), GATE)
        if judged:
            return judged[0], judged[1], []
        return ERROR, "the replicate step left no record (see its log); check the keystores", []
    if rep.get("refused"):
        return rep["refused"]["outcome"], rep["refused"]["message"], []
    results = rep.get("results") or []
    follow_ups = [
        f"restart RCS instance {r['instance']} ({r['url']}): RCS reads its keystore at start"
        for r in results
        if r["status"] in WRITTEN
    ]
    follow_ups += [
        f"previous keystore of {r['instance']} kept as {r['backup']}" for r in results if r.get("backup")
    ]
    bad = [r for r in results if r["status"] not in (*WRITTEN, "already-current")]
    follow_ups += [f"fix {r['instance']}: {r['detail']}; then trigger again" for r in bad]
    if bad:
        names = ", ".join(f"{r['instance']} ({r['status']})" for r in bad)
        return PARTLY_FAILED, f"{len(bad)} of {len(results)} target(s) not replaced: {names}", follow_ups
    states = verify.get("states") or {}
    unmatched = [r["instance"] for r in results if states.get(r["instance"]) != MATCH]
    if not verify or unmatched:
        return (
            VERIFY_FAILED,
            "after the copy the keystore check does not show every target matching: "
            + (", ".join(unmatched) or "no check"),
            follow_ups,
        )
    return REPLICATED, f"{len(results)} keystore(s) replaced and verified by the keystore check", follow_ups


def gather(context: Mapping[str, Any]) -> dict[str, Any]:
    ti = context["ti"]
    return {
        "preflight": ti.xcom_pull(task_ids=PREFLIGHT, key="record"),
        "approval": recorded_answer(context["dag_run"]),
        "replicate": ti.xcom_pull(task_ids=REPLICATE, key="record"),
        "verify": ti.xcom_pull(task_ids=VERIFY, key="record"),
    }


def build_audit_record(steps: Mapping[str, Any], dag_run: Any) -> dict[str, Any]:
    outcome, detail, follow_ups = decide(steps)
    pre = dict(steps.get("preflight") or {})
    pre.pop("approval_body", None)
    return {
        "schema": AUDIT_SCHEMA,
        "dag_id": REPLICATE_DAG_ID,
        "run_id": dag_run.run_id,
        "triggered_by": dag_run.triggering_user_name,
        "written_at": iso_utc(datetime.now(UTC)),
        "outcome": outcome,
        "outcome_ok": outcome in OK_OUTCOMES,
        "detail": detail,
        "follow_ups": follow_ups,
        "preflight": pre,
        "approval": steps.get("approval"),
        "replicate": steps.get("replicate"),
        "verify": steps.get("verify"),
    }


def write_audit_record(audit_log: str, record: Mapping[str, Any], try_number: int) -> str:
    """One new file per run and try under ``audit_log``; never overwrites one."""
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(audit_log)
    if folder.protocol in ("file", "local"):
        folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stamp}-{approvals.safe_name(record['run_id'])}-try{try_number}.json"
    text = json.dumps(record, indent=2, sort_keys=True, default=iso_utc)
    if path.protocol in ("file", "local"):
        with open(path.path, "x", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return str(path)


def run_audit(context: Mapping[str, Any]) -> dict[str, Any]:
    ti, dag_run = context["ti"], context["dag_run"]
    topology = load_topology()
    record = build_audit_record(gather(context), dag_run)
    location = write_audit_record(settings_of(topology).audit_log, record, ti.try_number)
    log.info("Audit record written to %s: outcome %s", location, record["outcome"])
    summary = {"location": location, "outcome": record["outcome"], "detail": record["detail"]}
    ti.xcom_push(key="record", value=summary)
    return summary


def run_outcome(context: Mapping[str, Any]) -> str:
    """Fails the run unless every target matches (or nothing was to do, or a dry run)."""
    from airflow.sdk.exceptions import AirflowFailException

    ti = context["ti"]
    outcome, detail, follow_ups = decide(gather(context))
    audit = ti.xcom_pull(task_ids=AUDIT, key="record")
    lines = [f"OUTCOME: {outcome}", detail]
    if follow_ups:
        lines += ["", "Follow-ups:", *(f"  {i}. {item}" for i, item in enumerate(follow_ups, 1))]
    lines += [
        "",
        f"Audit record: {audit['location']}" if audit else "AUDIT RECORD NOT WRITTEN (see the audit task)",
    ]
    message = "\n".join(lines)
    (log.info if outcome in OK_OUTCOMES else log.error)("%s", message)
    if outcome not in OK_OUTCOMES or not audit:
        raise AirflowFailException(message)
    return message
