"""The approval rule, decided here and nowhere else: what lets the one multimedia-switch POST go out.

A switch needs Airflow's own record of the answer to THIS run's approval request (the HITL detail, read
through Airflow's REST API), never an XCom or a task state: both are writable through the REST API by
anyone who may edit DAG runs. The answer must be an Approve, by a configured approver who is not the person
who triggered the run, given to a request that named this run's target site and dry-run flag; the run must
have been triggered by a person signed in to Airflow; and one approval is spent by one POST.

:func:`judge_approval` says what the answer alone means; :func:`authorize` (the re-check and the switch)
and ``outcome.decide_outcome`` (the audit) both use it, so they cannot disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from include.gir_ops.airflow_api import AirflowApiClient
from include.gir_ops.failover.findings import approval_subject_target
from include.gir_ops.failover.spec import APPROVE, APPROVE_FAILOVER, FailoverRefused, Outcome, Verdict
from include.gir_ops.shared import iso_utc
from include.gir_ops.topology import Approver

# How a run may have been created for its switch to count: by a person signed in to Airflow. A CLI
# trigger records the OS user, a test or a DAG (TriggerDagRunOperator) records no person at all.
TRUSTED_TRIGGERS = ("ui", "rest_api")

# Under ``failover.audit_log``: one marker per run whose approval was spent by a POST.
APPROVALS_USED = "approvals-used"

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """``text`` (a run id) as a file name any object store accepts."""
    return _UNSAFE_NAME.sub("_", text)


def user_label(user: Mapping[str, Any] | None) -> str:
    """ "On-call approver (approver)" for a person; "nobody" when there is none."""
    if not user:
        return "nobody"
    uid, name = user.get("id"), user.get("name")
    return f"{name} ({uid})" if name and name != uid else str(uid or name)


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


# --- the rule -------------------------------------------------------------------------------------------


def judge_approval(approval: Mapping[str, Any] | None) -> Verdict | None:
    """What the recorded answer alone means: None for an Approve by someone, else why it switches nothing."""
    if not approval or not approval.get("response_received"):
        return Verdict(
            Outcome.NOT_AUTHORIZED,
            "Airflow holds no answer to this run's approval request (was approve_failover marked success "
            "by hand, or its XComs written through the API?); only an answer given under Required Actions "
            "counts. Nothing was switched",
        )
    responder = approval.get("responded_by_user")
    if list(approval.get("chosen_options") or []) != [APPROVE]:
        if responder is None:
            return Verdict(
                Outcome.TIMED_OUT, "nobody answered the approval request in time; nothing was switched"
            )
        return Verdict(
            Outcome.REJECTED,
            f"rejected by {user_label(responder)} at {iso_utc(approval.get('responded_at'))}; "
            "nothing was switched",
        )
    if not responder:
        return Verdict(Outcome.NOT_AUTHORIZED, "an approval without an approving user; nothing was switched")
    return None


def refuse_untrusted_trigger(triggered_via: str | None, consequence: str) -> None:
    """A switch needs a run triggered by a person signed in to Airflow (the UI or the REST API)."""
    if (triggered_via or "").casefold() not in TRUSTED_TRIGGERS:
        raise FailoverRefused(
            Outcome.NOT_AUTHORIZED,
            f"this run was triggered via {triggered_via or 'an unknown path'}, not by a person signed in to "
            "Airflow, so the two-person rule cannot be checked (a CLI trigger records the OS user). "
            + consequence,
        )


def authorize(
    approval: Mapping[str, Any] | None,
    triggered_by: str | None,
    approvers: Sequence[Approver],
    *,
    triggered_via: str | None,
    target_site: str,
    dry_run: bool,
) -> dict[str, Any]:
    """The rule that lets a switch go out; raises :class:`FailoverRefused` naming why it may not.

    ``approval`` must be Airflow's own record of the answer to THIS run's approval request (read by
    :func:`approval_of_run`). Returns who approved and when, for the spent-approval marker.
    """
    verdict = judge_approval(approval)
    if verdict is not None:
        raise FailoverRefused(verdict.outcome, verdict.detail)
    approval = dict(approval or {})  # judge_approval refused a missing answer
    responder = approval["responded_by_user"]
    if not dry_run:
        refuse_untrusted_trigger(
            triggered_via,
            "A pre-flight or dry run may come from anywhere; a switch must be triggered from the UI or the "
            "REST API as yourself. Nothing was switched",
        )
    if not triggered_by:
        raise FailoverRefused(
            Outcome.NOT_AUTHORIZED,
            "who triggered this run is unknown, so the two-person rule cannot be checked; trigger the "
            "run from the UI or the REST API as yourself; nothing was switched",
        )
    identities = {str(responder.get(k) or "").strip().casefold() for k in ("id", "name")} - {""}
    if triggered_by.strip().casefold() in identities:
        others = [a.id for a in approvers if a.id.casefold() not in identities]
        raise FailoverRefused(
            Outcome.SELF_APPROVAL_REFUSED,
            f"two-person rule: {user_label(responder)} approved a failover they triggered themselves; that "
            "approval does not count and nothing was switched. Trigger the DAG again and have another "
            f"approver ({', '.join(others) or 'add one to failover.approvers'}) approve it",
        )
    if str(responder.get("id")) not in {a.id for a in approvers}:
        raise FailoverRefused(
            Outcome.NOT_AUTHORIZED,
            f"{user_label(responder)} is not in failover.approvers ({', '.join(a.id for a in approvers)}); "
            "nothing was switched",
        )
    shown = approval.get("subject") or ""
    if approval_subject_target(shown) != (target_site, dry_run):
        raise FailoverRefused(
            Outcome.NOT_AUTHORIZED,
            f"the approver was asked {shown!r}, which is not a {'dry run' if dry_run else 'switch'} to "
            f"{target_site} as this run requests; nothing was switched",
        )
    return {"approved_by": dict(responder), "approved_at": iso_utc(approval.get("responded_at"))}


# --- one approval, one POST -----------------------------------------------------------------------------


def refuse_repeated_switch(try_number: int) -> None:
    """The switch step runs once per run. It has retries=0, so a second try means someone cleared it:
    an old approval (possibly for a situation long gone, e.g. before a switch-back) must not be reused."""
    if try_number > 1:
        raise FailoverRefused(
            Outcome.NOT_AUTHORIZED,
            f"this run's approval was already used: its switch step already ran (this is try {try_number}). "
            "One approval authorizes one POST; a cleared switch is never sent again. Trigger a new run for "
            "a fresh pre-flight and approval; nothing was sent",
        )


def claim_approval(audit_log: str, run_id: str, authorization: Mapping[str, Any], try_number: int) -> str:
    """Spend this run's approval: one marker per run under ``<audit_log>/approvals-used/``, made before the
    POST and never removed. A second claim for the same run (the run or the switch cleared and run again,
    whatever the try numbers say) is refused, so one approval authorizes at most one POST.
    """
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(audit_log) / APPROVALS_USED
    marker = folder / f"{safe_name(run_id)}.json"
    payload = json.dumps(
        {
            "run_id": run_id,
            "try_number": try_number,
            "claimed_at": iso_utc(datetime.now(UTC)),
            **authorization,
        },
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
        Outcome.NOT_AUTHORIZED,
        f"this run's approval was already used ({used}); one approval authorizes one POST. Trigger a new "
        "run for a fresh pre-flight and approval; nothing was sent",
    )
