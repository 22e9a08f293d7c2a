"""The verdict table (one record shape, one approval rule) and the follow-ups by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest

from include.gir_ops.failover import authorization, outcome
from include.gir_ops.failover.spec import FailoverRefused, Outcome, Verdict
from include.gir_ops.failover.triggers import NOT_SWITCHED, UNVERIFIED, VERIFIED
from include.gir_ops.topology import load_topology
from tests.include.failover.failover_support import (
    APPROVERS,
    NOW,
    approved,
    decision,
    preflight_record,
)


def confirmed(chosen: str = "Confirmed", by: str | None = "approver") -> dict[str, Any]:
    """A confirm_switch answer as Airflow's HITL record holds it."""
    return {
        "response_received": True,
        "chosen_options": [chosen],
        "params_input": {"wde_eservices_site": "done"},
        "responded_by_user": {"id": by, "name": by} if by else None,
        "responded_at": NOW.isoformat(),
    }


# --- the outcome table ---------------------------------------------------------------------------------


def verdict_of(**steps: Any) -> Verdict:
    defaults: dict[str, Any] = {
        "preflight": preflight_record(),
        "approval": approved(),
        "recheck": {"decision": "switch", "detail": "site still DC1"},
        "switch": {"posted": True, "answer": "accepted", "detail": "RWS DC2 accepted"},
        "verification": {"outcome": VERIFIED, "detail": "every RWS reports DC2"},
        "states": {},
    }
    return outcome.decide_outcome(**{**defaults, **steps})


@pytest.mark.parametrize(
    ("steps", "expected", "ok"),
    [
        ({}, "verified", True),
        ({"preflight": None, "states": {"preflight": "failed"}}, "preflight-failed", False),
        ({"preflight": preflight_record(already_current=True)}, "already-current", True),
        ({"approval": decision("Reject", by="second")}, "rejected", False),
        ({"approval": decision("Reject", by=None, timed_out=True)}, "timed-out", False),
        ({"approval": None, "states": {"approve_failover": "success"}}, "not-authorized", False),
        (
            {"recheck": {"refused": {"outcome": "self-approval-refused", "message": "two-person rule"}}},
            "self-approval-refused",
            False,
        ),
        ({"recheck": {"decision": "nothing-to-do", "detail": "now DC2"}}, "already-current", True),
        ({"switch": {"posted": False, "decision": "dry-run", "detail": "DRY RUN"}}, "dry-run", True),
        ({"switch": {"posted": False, "post_attempted": True, "detail": "403"}}, "switch-failed", False),
        ({"switch": {"posted": False, "post_attempted": True, "answer": "pending"}}, "switch-unknown", False),
        ({"switch": None, "states": {"switch_eservices_site": "failed"}}, "switch-unknown", False),
        ({"switch": None, "states": {"switch_eservices_site": "upstream_failed"}}, "error", False),
        ({"verification": {"outcome": UNVERIFIED, "detail": "no site"}}, "unverified", False),
        ({"verification": None, "states": {"verify_switch": "failed"}}, "unverified", False),
        ({"verification": {"outcome": NOT_SWITCHED, "detail": "DC1"}}, "verify-failed", False),
        (
            {"switch": {"posted": True, "answer": "lost"}, "verification": {"outcome": NOT_SWITCHED}},
            "switch-unknown",
            False,
        ),
        ({"switch": {"posted": True, "answer": "lost"}}, "verified", True),
        # RWS does not report the site: a person's confirmation (Airflow's HITL record) decides.
        (
            {"verification": {"outcome": UNVERIFIED, "detail": "no site"}, "confirmation": confirmed()},
            "confirmed",
            True,
        ),
        (
            {"verification": None, "states": {"verify_switch": "failed"}, "confirmation": confirmed()},
            "confirmed",
            True,
        ),
        (
            {
                "switch": {"posted": True, "answer": "lost"},
                "verification": {"outcome": UNVERIFIED},
                "confirmation": confirmed(),
            },
            "confirmed",
            True,
        ),
        (
            {"verification": {"outcome": UNVERIFIED}, "confirmation": confirmed("Not confirmed")},
            "unverified",
            False,
        ),
        # No answer in time: Airflow writes the default (Not confirmed) by nobody.
        ({"verification": {"outcome": UNVERIFIED}, "confirmation": confirmed(by=None)}, "unverified", False),
        # RWS still reports another site: a confirmation cannot overrule what RWS says.
        ({"verification": {"outcome": NOT_SWITCHED}, "confirmation": confirmed()}, "verify-failed", False),
        ({"confirmation": confirmed()}, "verified", True),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_outcome_table(steps: dict[str, Any], expected: str, ok: bool) -> None:
    result = verdict_of(**steps)
    assert (result.outcome, result.ok) == (expected, ok)
    assert isinstance(result.outcome, Outcome)


def test_follow_ups_cover_the_guide_for_a_lost_data_center() -> None:
    topology = load_topology()
    to_backup = "\n".join(
        outcome.follow_ups(topology, "DC2", backup_name="2026-11-19", scenario="data-center-lost")
    )
    assert "[interaction-workspace] disaster-recovery.eservices-site = DC2" in to_backup
    assert "Screen Recording Service" in to_backup and "screen-recording.htcc.peer_uri" in to_backup
    assert "promote the backup index in DC2" in to_backup and "2026-11-19" in to_backup
    assert "Muxer Script: make the instances in DC2 active" in to_backup
    assert "Required Actions" in to_backup and '"target_site": "DC1"' in to_backup
    assert '"scenario": "data-center-lost"' in to_backup
    back = "\n".join(outcome.follow_ups(topology, "DC1", scenario="data-center-lost"))
    assert "primary instance again" in back and "Switch back" not in back


def test_with_the_interaction_server_down_only_no_second_primary_is_created() -> None:
    """SRS redirection, SpeechMiner promotion and moving the processing are whole-DC steps only."""
    topology = load_topology()
    items = outcome.follow_ups(topology, "DC2", backup_name="2026-11-19", scenario="interaction-server-down")
    text = "\n".join(items)
    assert "disaster-recovery.eservices-site = DC2" in text
    assert "Screen Recording Service" not in text and "promote" not in text and "2026-11-19" not in text
    assert "leave the active instances in DC1 as they are" in text
    assert '"scenario": "interaction-server-down"' in text
    assert len(items) == 3  # WDE, processing stays, switch back


# --- one record shape, one approval rule ------------------------------------------------------------------


def test_outcomes_keep_the_strings_the_audit_and_xcom_carry() -> None:
    assert [o.value for o in Outcome] == [
        "verified",
        "confirmed",
        "already-current",
        "dry-run",
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
    ]
    assert json.dumps({"outcome": Outcome.DRY_RUN}) == '{"outcome": "dry-run"}'
    assert [o for o in Outcome if o.ok] == [
        Outcome.VERIFIED,
        Outcome.CONFIRMED,
        Outcome.ALREADY_CURRENT,
        Outcome.DRY_RUN,
    ]


@pytest.mark.parametrize(
    ("refused", "detail"),
    [
        (
            {"outcome": "preflight-failed", "message": "unknown trigger conf key(s) ['dryrun']"},
            "pre-flight failed: unknown trigger conf key(s) ['dryrun']; nothing was asked or switched",
        ),
        (
            {"outcome": "not-authorized", "message": "this run was triggered via cli"},
            "this run was triggered via cli",
        ),
    ],
    ids=["preflight-failed", "not-authorized"],
)
def test_a_preflight_refusal_is_read_from_refused_like_every_step(
    refused: dict[str, str], detail: str
) -> None:
    result = verdict_of(preflight={**preflight_record(), "refused": refused, "error": None})
    assert (result.outcome, result.detail) == (refused["outcome"], detail)


def test_an_unexpected_preflight_error_is_read_from_error() -> None:
    result = verdict_of(preflight={"refused": None, "error": "RwsSurveyError: no RWS answered"})
    assert result.outcome == Outcome.PREFLIGHT_FAILED
    assert (
        result.detail == "pre-flight failed: RwsSurveyError: no RWS answered; nothing was asked or switched"
    )


@pytest.mark.parametrize(
    "approval",
    [
        decision("Reject", by="second"),
        decision("Reject", by=None),
        # An Approve with no approving user: the switch refuses it, so the audit must not call it verified.
        decision("Approve", by=None),
    ],
    ids=["rejected", "timed-out", "approve-without-user"],
)
def test_the_audit_judges_the_answer_with_the_rule_that_refused_the_switch(approval: dict[str, Any]) -> None:
    with pytest.raises(FailoverRefused) as caught:
        authorization.authorize(
            approval, "oncall", APPROVERS, triggered_via="rest_api", target_site="DC2", dry_run=False
        )
    assert authorization.judge_approval(approval) == caught.value.verdict
    assert verdict_of(approval=approval) == caught.value.verdict


def test_a_confirmed_switch_names_who_confirmed_and_an_unverified_one_what_to_check() -> None:
    result = verdict_of(
        verification={"outcome": UNVERIFIED, "detail": "RWS does not report eServicesSite"},
        confirmation=confirmed(),
    )
    assert "confirmed by hand by approver at 2026-11-20T03:00:00+00:00" in result.detail
    assert "RWS does not report eServicesSite" in result.detail
    unverified = verdict_of(
        switch={
            "posted": True,
            "answer": "accepted",
            "detail": "accepted",
            "environment_id": "env-1",
            "target_site": "DC2",
        },
        verification={"outcome": UNVERIFIED, "detail": "no site"},
        states={"confirm_switch": "success"},
    )
    assert unverified.outcome == Outcome.UNVERIFIED
    assert "nobody confirmed it under Required Actions (confirm_switch) in time" in unverified.detail
    assert "curl -u <ops user> http://<RWS>:<port>/api/v2/ops/genesys-environments/env-1" in unverified.detail
    assert "failover.site_field" in unverified.detail and "Do not trigger another switch" in unverified.detail
