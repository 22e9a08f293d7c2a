"""The approval rule: Airflow's record of this run's answer, two persons, signed in, one approval per POST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops.failover import authorization, findings
from include.gir_ops.failover.spec import FailoverRefused
from include.gir_ops.topology import load_topology
from tests.include.failover.failover_support import APPROVERS, NOW, SUBJECT, decision

# --- the two-person rule ----------------------------------------------------------------------------


def authorize(
    approval: dict[str, Any] | None,
    triggered_by: str | None,
    *,
    via: str | None = "rest_api",
    target: str = "DC2",
    dry_run: bool = False,
) -> dict[str, Any]:
    return authorization.authorize(
        approval, triggered_by, APPROVERS, triggered_via=via, target_site=target, dry_run=dry_run
    )


def test_an_approval_by_another_approver_is_accepted() -> None:
    result = authorize(decision(by="second"), "oncall")
    assert result["approved_by"]["id"] == "second"
    assert authorize(decision(by="second"), "oncall", via="ui")["approved_by"]["id"] == "second"


@pytest.mark.parametrize(
    ("approval", "triggered_by", "outcome"),
    [
        (decision(by="approver"), "approver", "self-approval-refused"),
        (decision(by="approver"), " Approver ", "self-approval-refused"),
        ({**decision(), "responded_by_user": {"id": "7", "name": "alice"}}, "alice", "self-approval-refused"),
        (decision(chosen="Reject", by="second"), "oncall", "rejected"),
        (decision(chosen="Reject", by=None), "oncall", "timed-out"),
        (None, "oncall", "not-authorized"),
        ({}, "oncall", "not-authorized"),
        # The approval task's XCom copied from an approved run, the task marked success: Airflow's own
        # record of this run's request holds no answer.
        ({**decision(by="second"), "response_received": False}, "oncall", "not-authorized"),
        (
            decision(by="second", subject="eServices failover DC1 → DC3: approve the multimedia-switch?"),
            "oncall",
            "not-authorized",
        ),
        (
            decision(by="second", subject=SUBJECT.replace(": approve", " (DRY RUN): approve")),
            "oncall",
            "not-authorized",
        ),
        (decision(by="second", subject=None), "oncall", "not-authorized"),
        (decision(by="second"), None, "not-authorized"),
        (decision(by="second"), "", "not-authorized"),
        (decision(by="intruder"), "oncall", "not-authorized"),
    ],
    ids=[
        "self-by-id",
        "self-case-and-blanks",
        "self-by-name",
        "rejected",
        "timed-out",
        "no-answer-recorded",
        "empty-answer",
        "xcom-forged-no-hitl-answer",
        "approver-was-shown-another-site",
        "approver-was-shown-a-dry-run",
        "no-subject",
        "unknown-trigger-user",
        "blank-trigger-user",
        "not-an-approver",
    ],
)
def test_an_approval_that_does_not_count_is_refused(
    approval: dict[str, Any] | None, triggered_by: str | None, outcome: str
) -> None:
    with pytest.raises(FailoverRefused) as caught:
        authorize(approval, triggered_by)
    assert caught.value.outcome == outcome
    assert "nothing was switched" in caught.value.message.lower()


def test_self_approval_message_names_the_other_approvers() -> None:
    with pytest.raises(FailoverRefused, match=r"two-person rule.*another approver \(second\)"):
        authorize(decision(by="approver"), "approver")


@pytest.mark.parametrize("via", ["cli", "test", "operator", "timetable", "backfill", "asset", None])
def test_a_run_not_triggered_by_a_signed_in_person_cannot_switch(via: str | None) -> None:
    """From the CLI triggering_user_name is the OS user: it proves nobody, so only a dry run may proceed."""
    with pytest.raises(FailoverRefused, match="UI or the REST API") as caught:
        authorize(decision(by="second"), "root", via=via)
    assert caught.value.outcome == "not-authorized"
    dry = decision(by="second", subject=SUBJECT.replace(": approve", " (DRY RUN): approve"))
    assert authorize(dry, "root", via=via, dry_run=True)["approved_by"]["id"] == "second"


def test_the_subject_shown_to_the_approver_names_the_target_and_the_dry_run() -> None:
    record = {
        "request": {"target_site": "DC2", "dry_run": False, "reason": "x" * 12},
        "current_site": "DC1 → DC3",  # an odd value cannot pose as the target
        "environment_id": "env",
        "nodes": [],
        "keystore": {"text": "k"},
        "backup": {"text": "b"},
        "warnings": [],
    }
    subject, _ = findings.approval_text(record, load_topology())
    assert findings.approval_subject_target(subject) == ("DC2", False)
    record["request"]["dry_run"] = True
    subject, _ = findings.approval_text(record, load_topology())
    assert findings.approval_subject_target(subject) == ("DC2", True)
    assert findings.approval_subject_target("approve?") is None


def test_a_cleared_switch_step_is_never_sent_again() -> None:
    authorization.refuse_repeated_switch(1)
    with pytest.raises(FailoverRefused, match="already ran") as caught:
        authorization.refuse_repeated_switch(2)
    assert caught.value.outcome == "not-authorized"
    assert "approval was already used" in caught.value.message


def test_one_approval_is_spent_by_one_post(tmp_path: Path) -> None:
    """The marker outlives clearing: a second claim for the same run is refused whatever the try number."""
    audit_log = f"file://{tmp_path}/audit"
    granted = {"approved_by": {"id": "second", "name": "second"}, "approved_at": NOW.isoformat()}
    marker = authorization.claim_approval(audit_log, "manual__2026-11-30T03:00:00+00:00", granted, 1)
    assert json.loads(Path(marker.removeprefix("file://")).read_text())["approved_by"]["id"] == "second"
    with pytest.raises(FailoverRefused, match="approval was already used") as caught:
        authorization.claim_approval(audit_log, "manual__2026-11-30T03:00:00+00:00", granted, 1)
    assert caught.value.outcome == "not-authorized"
    # Another run has its own approval to spend.
    authorization.claim_approval(audit_log, "manual__2026-11-30T04:00:00+00:00", granted, 1)
    assert len(list((tmp_path / "audit" / authorization.APPROVALS_USED).iterdir())) == 2
