"""The two-person rule, one implementation for every irreversible action (failover switch, keystore copy).

What authorizes the action is Airflow's own record of the answer to THIS run's approval request (the HITL
detail, read through Airflow's REST API by ``airflow_api.py``), never an XCom or a task state: both are
writable through the REST API by anyone who may edit DAG runs. The answer must be an Approve, by a
configured approver who is not the person who triggered the run, given to a request whose subject named
this run's action; the run must have been triggered by a person signed in to Airflow (UI or REST API);
and one approval is spent once (a marker per run under the feature's audit log).

A feature describes its action with an :class:`ApprovalGate` (the HITL task, the words) and maps
:class:`ApprovalRefused` to its own vocabulary; ``failover/authorization.py`` is such an adapter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from include.gir_ops.airflow_api import AirflowApiClient
from include.gir_ops.shared import iso_utc

APPROVE, REJECT = "Approve", "Reject"

# How a run may have been created for its action to count: by a person signed in to Airflow. A CLI
# trigger records the OS user, a test or a DAG (TriggerDagRunOperator) records no person at all.
TRUSTED_TRIGGERS = ("ui", "rest_api")

# Under the feature's audit log: one marker per run whose approval was spent.
APPROVALS_USED = "approvals-used"

# Why an approval does not count (the failover's Outcome values use the same words).
NOT_AUTHORIZED, REJECTED, TIMED_OUT = "not-authorized", "rejected", "timed-out"
SELF_APPROVAL_REFUSED = "self-approval-refused"

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ApprovalRefused(Exception):
    """The approval does not authorize the action; ``kind`` is one of the constants above."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


@dataclass(frozen=True)
class ApprovalGate:
    """One action behind the two-person rule, and how its refusals read."""

    task_id: str  # the HITL task whose answer authorizes the action
    action: str  # "a failover", "a keystore replication": what the approver approved
    nothing_done: str  # "nothing was switched": what every refusal ends with
    approvers_setting: str  # "failover.approvers": where approvers are configured
    spent_by: str = "one POST"  # "one approval authorizes <spent_by>"
    nothing_sent: str = "nothing was sent"  # the tail of a refusal to spend an approval twice


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


def approval_of_run(dag_run: Any, api: AirflowApiClient, task_id: str) -> dict[str, Any] | None:
    """Airflow's own record of the answer to THIS run's approval request ``task_id``, or None.

    Read from the HITL detail through Airflow's public API (the row only the Required Actions page / HITL
    response endpoint writes, after checking the assigned users), addressed by this run's own dag_id and
    run_id from the task's context, so an answer given to another run cannot be replayed into this one.
    """
    detail = api.hitl_detail(dag_run.dag_id, dag_run.run_id, task_id)
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


def judge_answer(approval: Mapping[str, Any] | None, gate: ApprovalGate) -> tuple[str, str] | None:
    """What the recorded answer alone means: None for an Approve by someone, else (kind, why)."""
    if not approval or not approval.get("response_received"):
        return (
            NOT_AUTHORIZED,
            f"Airflow holds no answer to this run's approval request (was {gate.task_id} marked success "
            "by hand, or its XComs written through the API?); only an answer given under Required Actions "
            f"counts. {gate.nothing_done[:1].upper()}{gate.nothing_done[1:]}",
        )
    responder = approval.get("responded_by_user")
    if list(approval.get("chosen_options") or []) != [APPROVE]:
        if responder is None:
            return TIMED_OUT, f"nobody answered the approval request in time; {gate.nothing_done}"
        return (
            REJECTED,
            f"rejected by {user_label(responder)} at {iso_utc(approval.get('responded_at'))}; "
            f"{gate.nothing_done}",
        )
    if not responder:
        return NOT_AUTHORIZED, f"an approval without an approving user; {gate.nothing_done}"
    return None


def refuse_untrusted_trigger(triggered_via: str | None, consequence: str) -> None:
    """The action needs a run triggered by a person signed in to Airflow (the UI or the REST API)."""
    if (triggered_via or "").casefold() not in TRUSTED_TRIGGERS:
        raise ApprovalRefused(
            NOT_AUTHORIZED,
            f"this run was triggered via {triggered_via or 'an unknown path'}, not by a person signed in to "
            "Airflow, so the two-person rule cannot be checked (a CLI trigger records the OS user). "
            + consequence,
        )


def authorize(
    approval: Mapping[str, Any] | None,
    triggered_by: str | None,
    approver_ids: Sequence[str],
    *,
    gate: ApprovalGate,
    triggered_via: str | None,
    trusted_trigger_needed: bool,
    untrusted_consequence: str,
    subject_matches: Callable[[str], bool],
    requested: str,
) -> dict[str, Any]:
    """The two-person rule; raises :class:`ApprovalRefused` naming why the action may not go ahead.

    ``approval`` must be Airflow's own record of the answer to THIS run's request (:func:`approval_of_run`);
    ``subject_matches`` says whether the subject the approver was shown names this run's action
    (``requested`` describes it: "a switch to DC2"). Returns who approved and when, for the spent marker.
    """
    judged = judge_answer(approval, gate)
    if judged is not None:
        raise ApprovalRefused(*judged)
    approval = dict(approval or {})  # judge_answer refused a missing answer
    responder = approval["responded_by_user"]
    if trusted_trigger_needed:
        refuse_untrusted_trigger(triggered_via, untrusted_consequence)
    if not triggered_by:
        raise ApprovalRefused(
            NOT_AUTHORIZED,
            "who triggered this run is unknown, so the two-person rule cannot be checked; trigger the "
            f"run from the UI or the REST API as yourself; {gate.nothing_done}",
        )
    identities = {str(responder.get(k) or "").strip().casefold() for k in ("id", "name")} - {""}
    if triggered_by.strip().casefold() in identities:
        others = [a for a in approver_ids if a.casefold() not in identities]
        raise ApprovalRefused(
            SELF_APPROVAL_REFUSED,
            f"two-person rule: {user_label(responder)} approved {gate.action} they triggered themselves; "
            f"that approval does not count and {gate.nothing_done}. Trigger the DAG again and have another "
            f"approver ({', '.join(others) or 'add one to ' + gate.approvers_setting}) approve it",
        )
    if str(responder.get("id")) not in set(approver_ids):
        raise ApprovalRefused(
            NOT_AUTHORIZED,
            f"{user_label(responder)} is not in {gate.approvers_setting} ({', '.join(approver_ids)}); "
            f"{gate.nothing_done}",
        )
    shown = approval.get("subject") or ""
    if not subject_matches(shown):
        raise ApprovalRefused(
            NOT_AUTHORIZED,
            f"the approver was asked {shown!r}, which is not {requested} as this run requests; "
            f"{gate.nothing_done}",
        )
    return {"approved_by": dict(responder), "approved_at": iso_utc(approval.get("responded_at"))}


# --- one approval, spent once ---------------------------------------------------------------------------


def claim_approval(
    audit_log: str, run_id: str, authorization: Mapping[str, Any], try_number: int, gate: ApprovalGate
) -> str:
    """Spend this run's approval: one marker per run under ``<audit_log>/approvals-used/``, made before the
    action and never removed. A second claim for the same run (the run or the step cleared and run again,
    whatever the try numbers say) is refused, so one approval authorizes the action at most once.
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
    raise ApprovalRefused(
        NOT_AUTHORIZED,
        f"this run's approval was already used ({used}); one approval authorizes {gate.spent_by}. Trigger "
        f"a new run for a fresh pre-flight and approval; {gate.nothing_sent}",
    )
