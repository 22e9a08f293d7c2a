"""The failover's approval rule: the shared two-person rule (``include/gir_ops/approvals.py``) applied to
the one multimedia-switch POST, its refusals in the failover's outcome vocabulary.

A switch needs Airflow's own record of the answer to THIS run's approval request (the HITL detail, read
through Airflow's REST API), never an XCom or a task state. The answer must be an Approve, by a configured
approver who is not the person who triggered the run, given to a request that named this run's target site
and dry-run flag; the run must have been triggered by a person signed in to Airflow; and one approval is
spent by one POST. The rule itself lives in ``approvals.py`` (the keystore replication uses the same one);
this module only says what the failover's request is and maps :class:`approvals.ApprovalRefused` to
:class:`FailoverRefused`.

:func:`judge_approval` says what the answer alone means; :func:`authorize` (the re-check and the switch)
and ``outcome.decide_outcome`` (the audit) both use it, so they cannot disagree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from include.gir_ops import approvals
from include.gir_ops.airflow_api import AirflowApiClient
from include.gir_ops.approvals import (  # re-exported: the failover's modules and tests import them here
    APPROVALS_USED,
    TRUSTED_TRIGGERS,
    ApprovalGate,
    ApprovalRefused,
    safe_name,
    trigger_path,
    user_label,
)
from include.gir_ops.failover.findings import approval_subject_target
from include.gir_ops.failover.spec import APPROVE_FAILOVER, FailoverRefused, Outcome, Verdict
from include.gir_ops.topology import Approver

__all__ = [
    "APPROVALS_USED",
    "GATE",
    "TRUSTED_TRIGGERS",
    "approval_of_run",
    "authorize",
    "claim_approval",
    "judge_approval",
    "refuse_repeated_switch",
    "refuse_untrusted_trigger",
    "safe_name",
    "trigger_path",
    "user_label",
]

GATE = ApprovalGate(
    task_id=APPROVE_FAILOVER,
    action="a failover",
    nothing_done="nothing was switched",
    approvers_setting="failover.approvers",
)


UNTRUSTED_SWITCH = (
    "A pre-flight or dry run may come from anywhere; a switch must be triggered from the UI or the REST API "
    "as yourself. Nothing was switched"
)


@contextlib.contextmanager
def _as_failover_refusal() -> Iterator[None]:
    try:
        yield
    except ApprovalRefused as exc:
        raise FailoverRefused(Outcome(exc.kind), exc.message) from None


def approval_of_run(dag_run: Any, api: AirflowApiClient) -> dict[str, Any] | None:
    """Airflow's own record of the answer to THIS run's ``approve_failover`` request, or None."""
    return approvals.approval_of_run(dag_run, api, APPROVE_FAILOVER)


def judge_approval(approval: Mapping[str, Any] | None) -> Verdict | None:
    """What the recorded answer alone means: None for an Approve by someone, else why it switches nothing."""
    judged = approvals.judge_answer(approval, GATE)
    return None if judged is None else Verdict(Outcome(judged[0]), judged[1])


def refuse_untrusted_trigger(triggered_via: str | None, consequence: str) -> None:
    """A switch needs a run triggered by a person signed in to Airflow (the UI or the REST API)."""
    with _as_failover_refusal():
        approvals.refuse_untrusted_trigger(triggered_via, consequence)


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
    with _as_failover_refusal():
        return approvals.authorize(
            approval,
            triggered_by,
            [a.id for a in approvers],
            gate=GATE,
            triggered_via=triggered_via,
            trusted_trigger_needed=not dry_run,
            untrusted_consequence=UNTRUSTED_SWITCH,
            subject_matches=lambda shown: approval_subject_target(shown) == (target_site, dry_run),
            requested=f"a {'dry run' if dry_run else 'switch'} to {target_site}",
        )


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
    """Spend this run's approval (``approvals.claim_approval``): one marker per run, made before the POST."""
    with _as_failover_refusal():
        return approvals.claim_approval(audit_log, run_id, authorization, try_number, GATE)
