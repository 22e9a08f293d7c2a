"""Unit tests of the failover logic: the switch's retry rules on the wire, the two-person rule, the
verification verdicts, the findings, the outcome table and the audit file. No scheduler involved."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests_mock

from include.gir_ops import failover, failover_spec
from include.gir_ops.failover import FailoverRefused
from include.gir_ops.failover_triggers import (
    NOT_SWITCHED,
    UNVERIFIED,
    VERIFIED,
    EServicesSiteTrigger,
    judge_verification,
)
from include.gir_ops.rws import RwsAuthError, RwsClient, RwsError, RwsUnreachable
from include.gir_ops.topology import Approver, load_topology
from tests.conftest import SimulatedGir

SWITCH = "multimedia-switch"
APPROVERS = [Approver(id="approver", name="On-call approver"), Approver(id="second")]
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def no_sleep(_: float) -> None:
    return None


def switch_client(gir: SimulatedGir, site: str = "DC2") -> RwsClient:
    return RwsClient(site, gir.topology.site(site).rws_conn_id, sleep=no_sleep)


def environment_id(gir: SimulatedGir) -> str:
    return gir.environment()["environment_id"]


def switch_posts(gir: SimulatedGir, site: str) -> list[dict[str, Any]]:
    return [r for r in gir.simulator.state.requests(site) if r["method"] == "POST" and SWITCH in r["path"]]


# --- the switch POST: sent at most once unless the outcome is known -----------------------------------


def test_switch_resent_after_503_with_status_code_4(gir: SimulatedGir) -> None:
    gir.fault("DC2", count=1, http_status=503, status_code=4, path_contains=SWITCH)
    answer = switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert answer.attempts == 2
    assert [(p["http_status"], p["status_code"]) for p in switch_posts(gir, "DC2")] == [(503, 4), (200, 0)]
    assert len(gir.simulator.state.environment.switches) == 1


def test_switch_resent_after_status_code_4_even_with_http_200(gir: SimulatedGir) -> None:
    gir.fault("DC2", count=1, http_status=200, status_code=4, path_contains=SWITCH)
    switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert len(switch_posts(gir, "DC2")) == 2


def test_switch_not_resent_after_status_code_3(gir: SimulatedGir) -> None:
    gir.fault("DC2", count=1, http_status=403, status_code=3, path_contains=SWITCH)
    with pytest.raises(RwsError) as caught:
        switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert caught.value.status_code == 3 and not caught.value.retryable
    assert len(switch_posts(gir, "DC2")) == 1
    assert gir.simulator.state.environment.switches == []


def test_switch_not_resent_after_a_dropped_connection(gir: SimulatedGir) -> None:
    """The request left this machine; RWS may have acted on it: never send it again."""
    gir.fault("DC2", count=1, mode="drop", path_contains=SWITCH)
    with pytest.raises(RwsUnreachable) as caught:
        switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert caught.value.request_sent is True
    assert len(switch_posts(gir, "DC2")) == 1


def test_a_get_is_still_resent_after_a_dropped_connection(gir: SimulatedGir) -> None:
    """The fix is limited to send-at-most-once calls: idempotent reads keep their retries."""
    gir.fault("DC2", count=1, mode="drop", path_contains="genesys-environments", method="GET")
    answer = switch_client(gir).genesys_environment(environment_id(gir))
    assert answer.attempts == 2


def test_switch_retried_when_the_connection_is_refused(gir: SimulatedGir) -> None:
    """Connection refused: nothing left this machine, so retrying is safe (and it gives up after 4)."""
    env_id = environment_id(gir)
    gir.simulator.stop_site("DC2")
    with pytest.raises(RwsUnreachable) as caught:
        switch_client(gir).multimedia_switch(env_id, "DC2")
    assert caught.value.request_sent is False
    assert len(caught.value.history) == 4


@pytest.mark.parametrize(
    ("status", "body"),
    [(502, "<html>Bad gateway</html>"), (504, ""), (200, "not json")],
    ids=["proxy-502", "gateway-timeout", "200-without-statusCode"],
)
def test_switch_not_resent_when_the_answer_is_not_from_rws(
    monkeypatch: pytest.MonkeyPatch, status: int, body: str
) -> None:
    """A proxy's 5xx (or a body without statusCode) does not say RWS changed nothing."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIR_RWS_TEST",
        json.dumps({"conn_type": "http", "host": "rws.test", "login": "ops", "password": "x"}),
    )
    with requests_mock.Mocker() as mocked:
        mocked.post(requests_mock.ANY, status_code=status, text=body)
        with pytest.raises(RwsError):
            RwsClient("DC2", "gir_rws_test", sleep=no_sleep).multimedia_switch("env", "DC2")
        assert mocked.call_count == 1


# --- the two-person rule ----------------------------------------------------------------------------


SUBJECT = "eServices failover DC1 → DC2: approve the multimedia-switch?"


def decision(chosen: str = "Approve", by: str | None = "approver", **extra: Any) -> dict[str, Any]:
    """An answer as Airflow's HITL record holds it (what ``failover.approval_of_run`` returns)."""
    return {
        "response_received": True,
        "chosen_options": [chosen],
        "responded_by_user": {"id": by, "name": by} if by else None,
        "responded_at": NOW.isoformat(),
        "subject": SUBJECT,
        **extra,
    }


def authorize(
    approval: dict[str, Any] | None,
    triggered_by: str | None,
    *,
    via: str | None = "rest_api",
    target: str = "DC2",
    dry_run: bool = False,
) -> dict[str, Any]:
    return failover.authorize(
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
    subject, _ = failover.approval_text(record, load_topology())
    assert failover.approval_subject_target(subject) == ("DC2", False)
    record["request"]["dry_run"] = True
    subject, _ = failover.approval_text(record, load_topology())
    assert failover.approval_subject_target(subject) == ("DC2", True)
    assert failover.approval_subject_target("approve?") is None


def test_a_cleared_switch_step_is_never_sent_again() -> None:
    failover.refuse_repeated_switch(1)
    with pytest.raises(FailoverRefused, match="already ran") as caught:
        failover.refuse_repeated_switch(2)
    assert caught.value.outcome == "not-authorized"
    assert "approval was already used" in caught.value.message


def test_one_approval_is_spent_by_one_post(tmp_path: Path) -> None:
    """The marker outlives clearing: a second claim for the same run is refused whatever the try number."""
    audit_log = f"file://{tmp_path}/audit"
    granted = {"approved_by": {"id": "second", "name": "second"}, "approved_at": NOW.isoformat()}
    marker = failover.claim_approval(audit_log, "manual__2026-11-30T03:00:00+00:00", granted, 1)
    assert json.loads(Path(marker.removeprefix("file://")).read_text())["approved_by"]["id"] == "second"
    with pytest.raises(FailoverRefused, match="approval was already used") as caught:
        failover.claim_approval(audit_log, "manual__2026-11-30T03:00:00+00:00", granted, 1)
    assert caught.value.outcome == "not-authorized"
    # Another run has its own approval to spend.
    failover.claim_approval(audit_log, "manual__2026-11-30T04:00:00+00:00", granted, 1)
    assert len(list((tmp_path / "audit" / failover.APPROVALS_USED).iterdir())) == 2


# --- the request ---------------------------------------------------------------------------------------


def request_params(**overrides: Any) -> dict[str, Any]:
    return {"target_site": "DC2", "reason": "DC1 Interaction Server down", **overrides}


def test_request_is_read_and_normalised() -> None:
    topology = load_topology()
    request = failover.read_request(
        {"target_site": "DC2"},
        request_params(change_ticket="  ", reason="  DC1 is down hard  "),
        "u",
        topology,
    )
    assert (request.target_site, request.reason, request.change_ticket, request.dry_run) == (
        "DC2",
        "DC1 is down hard",
        None,
        False,
    )


@pytest.mark.parametrize(
    ("conf", "params", "message"),
    [
        ({"target_site": "DC2", "dryrun": True}, request_params(), "unknown trigger conf key"),
        ({}, request_params(target_site="DC7"), "not a site"),
        ({}, request_params(reason="   short    "), "at least 10"),
        ({}, request_params(dry_run="yes"), "dry_run"),
    ],
    ids=["typo-in-conf", "unknown-site", "blank-padded-reason", "dry-run-not-bool"],
)
def test_bad_requests_are_refused_before_anything_is_asked(
    conf: dict[str, Any], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(FailoverRefused, match=message) as caught:
        failover.read_request(conf, params, "oncall", load_topology())
    assert caught.value.outcome == "preflight-failed"


def test_trigger_form_has_no_default_site_and_lists_the_topology_sites() -> None:
    from airflow.sdk.definitions._internal.types import NOTSET

    topology = load_topology()
    params = failover_spec.trigger_params(topology)
    assert params["target_site"].value is NOTSET, "a default site could be triggered by accident"
    assert params["reason"].value is NOTSET
    assert params["target_site"].schema["enum"] == ["DC1", "DC2", "DC3"]
    assert params["reason"].schema["minLength"] == 10
    assert params["dry_run"].value is False


def test_switch_back_command_is_a_valid_trigger() -> None:
    topology = load_topology()
    command = failover.switch_back_command(topology, "CHG-1")
    # Through the REST API as the signed-in user: a CLI trigger records the OS user and cannot switch.
    assert command.startswith('curl -X POST "$AIRFLOW_URL/api/v2/dags/gir_eservices_failover/dagRuns"')
    assert "airflow dags trigger" not in command and "Bearer $MY_TOKEN" in command
    body = json.loads(command.split(" -d '", 1)[1].rstrip("'"))
    conf = body["conf"]
    assert body["logical_date"] is None
    assert conf["target_site"] == "DC1" and conf["change_ticket"] == "CHG-1"
    assert failover.read_request(conf, conf, "oncall", topology).target_site == "DC1"


# --- reading RWS ---------------------------------------------------------------------------------------


def test_survey_asks_the_target_first_and_reports_unreachable_nodes(gir: SimulatedGir) -> None:
    gir.simulator.stop_site("DC3")
    answers: list[dict[str, Any]] = []
    survey = failover.survey_rws(gir.topology, "DC3", phase="preflight", answers=answers)
    assert [n["site"] for n in survey["nodes"]] == ["DC3", "DC1", "DC2"]
    assert survey["nodes"][0]["answered"] is False and "could not be reached" in survey["nodes"][0]["error"]
    assert survey["current_site"] == "DC1" and survey["consistent"]
    assert survey["environment_id"] == environment_id(gir)
    assert answers[0]["site"] == "DC3" and answers[0]["request_sent"] is False
    assert gir.ops_password not in json.dumps(answers)


def test_survey_fails_when_no_rws_answers(gir: SimulatedGir) -> None:
    for site in ("DC1", "DC2", "DC3"):
        gir.simulator.stop_site(site)
    with pytest.raises(failover.RwsSurveyError, match="no RWS answered"):
        failover.survey_rws(gir.topology, "DC2", phase="preflight", answers=[])


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        ({"current_site": "DC1"}, {"current_site": "DC1", "consistent": True}, "switch"),
        ({"current_site": None}, {"current_site": None, "consistent": True}, "switch"),
        ({"current_site": "DC1"}, {"current_site": "DC2", "consistent": True}, "nothing-to-do"),
        ({"current_site": "DC1"}, {"current_site": "DC3", "consistent": True}, "site-changed"),
        (
            {"current_site": "DC1", "consistent": True},
            {"current_site": None, "consistent": False},
            "site-changed",
        ),
    ],
    ids=["unchanged", "unknown-both-times", "target-now-current", "changed-elsewhere", "now-disagree"],
)
def test_site_decision(before: dict[str, Any], now: dict[str, Any], expected: str) -> None:
    if expected == "site-changed":
        with pytest.raises(FailoverRefused) as caught:
            failover.site_decision(before, now, "DC2")
        assert caught.value.outcome == "site-changed"
    else:
        assert failover.site_decision(before, now, "DC2")["decision"] == expected


# --- verification ----------------------------------------------------------------------------------------


def obs(site: str, reported: str | None, ok: bool = True) -> dict[str, Any]:
    return {"site": site, "ok": ok, "eServicesSite": reported}


def judge(observations: list[dict[str, Any]], elapsed: float) -> tuple[str, str] | None:
    return judge_verification(
        observations,
        target_site="DC2",
        elapsed_seconds=elapsed,
        dr_monitoring_delay_seconds=30,
        verify_margin_seconds=30,
    )


def test_verified_only_when_every_answering_rws_reports_the_target() -> None:
    assert judge([obs("DC1", "DC2"), obs("DC2", "DC2"), obs("DC3", None, ok=False)], 5)[0] == VERIFIED
    assert judge([obs("DC1", "DC2"), obs("DC2", "DC1")], 5) is None, "keep polling before the deadline"
    assert judge([obs("DC1", None, ok=False)], 5) is None


def test_not_switched_when_an_rws_still_reports_another_site_at_the_deadline() -> None:
    verdict = judge([obs("DC1", "DC1"), obs("DC2", "DC2")], 60)
    assert verdict is not None and verdict[0] == NOT_SWITCHED and "DC1 reports DC1" in verdict[1]


def test_unverified_after_the_delay_when_rws_reports_no_site() -> None:
    assert judge([obs("DC1", None), obs("DC2", None)], 29) is None
    verdict = judge([obs("DC1", None), obs("DC2", None)], 30)
    assert verdict is not None and verdict[0] == UNVERIFIED and "does not report eServicesSite" in verdict[1]


def test_unverified_at_the_deadline_when_some_are_silent_or_none_answers() -> None:
    assert judge([obs("DC1", "DC2"), obs("DC2", None)], 59) is None
    assert judge([obs("DC1", "DC2"), obs("DC2", None)], 60)[0] == UNVERIFIED
    assert judge([obs("DC1", None, ok=False)], 60)[0] == UNVERIFIED


def run_trigger(gir: SimulatedGir, *, switched_at: float, delay: float = 0.5, margin: float = 1.0) -> Any:
    trigger = EServicesSiteTrigger(
        rws_nodes=[{"site": dc.site, "conn_id": dc.rws_conn_id} for dc in gir.topology.data_centers],
        environment_id=environment_id(gir),
        target_site="DC2",
        switched_at=switched_at,
        dr_monitoring_delay_seconds=delay,
        verify_margin_seconds=margin,
        poll_interval_seconds=0.2,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "include.gir_ops.failover_triggers.EServicesSiteTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs, "trigger arguments must be plain JSON"
    assert gir.ops_password not in json.dumps(kwargs)

    async def first_event() -> Any:
        async for event in EServicesSiteTrigger(**kwargs).run():
            return event.payload
        return None

    return asyncio.run(asyncio.wait_for(first_event(), timeout=30))


def test_trigger_verifies_a_real_switch_and_only_reads(gir_factory: Any) -> None:
    import time

    gir = gir_factory(dr_monitoring_delay_seconds=0.3)
    switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    gir.simulator.stop_site("DC3")
    event = run_trigger(gir, switched_at=time.time())
    assert event["outcome"] == VERIFIED
    assert {a["site"] for a in event["answers"] if not a["ok"]} >= {"DC3"}
    assert all(
        r["method"] == "GET" for site in ("DC1", "DC2") for r in gir.simulator.state.requests(site)[1:]
    )


def test_trigger_reports_not_switched_and_unverified(gir_factory: Any) -> None:
    import time

    gir = gir_factory(dr_monitoring_delay_seconds=0.3)
    event = run_trigger(gir, switched_at=time.time())
    assert event["outcome"] == NOT_SWITCHED and event["elapsed_seconds"] >= 1.5
    gir.configure_environment(report_site=False)
    event = run_trigger(gir, switched_at=time.time())
    assert event["outcome"] == UNVERIFIED and 0.5 <= event["elapsed_seconds"] < 1.5


# --- findings from the other DAGs ----------------------------------------------------------------------


@dataclass
class Event:
    extra: dict[str, Any]
    timestamp: datetime = NOW


def test_keystore_findings() -> None:
    topology = load_topology()
    assert "no information yet" in failover.keystore_finding(None, topology, NOW)["text"]
    ok = Event({"ok": True, "checked_at": (NOW - timedelta(minutes=30)).isoformat(), "warnings": []})
    assert failover.keystore_finding(ok, topology, NOW)["level"] == "ok"
    stale = Event({"ok": True, "checked_at": (NOW - timedelta(hours=5)).isoformat()})
    assert "stale" in failover.keystore_finding(stale, topology, NOW)["text"]
    bad = Event({"ok": False, "checked_at": NOW.isoformat(), "states": {"rcs-dc2-a": "differs"}})
    finding = failover.keystore_finding(bad, topology, NOW)
    assert finding["level"] == "warning" and "rcs-dc2-a" in finding["text"]
    warned = Event({"ok": True, "checked_at": NOW.isoformat(), "warnings": ["expires in 10 days"]})
    assert "expires in 10 days" in failover.keystore_finding(warned, topology, NOW)["text"]
    assert "could not be read" in failover.keystore_finding(None, topology, NOW, "KeyError")["text"]


def test_backup_findings() -> None:
    topology = load_topology()
    assert "no information yet" in failover.backup_finding(None, topology, "DC2", NOW)["text"]
    fresh = Event({"backup_name": "2026-11-19", "shipped_at": (NOW - timedelta(hours=2)).isoformat()})
    finding = failover.backup_finding(fresh, topology, "DC2", NOW)
    assert finding["level"] == "ok" and "2026-11-19" in finding["text"] and "2.0 h ago" in finding["text"]
    old = Event({"backup_name": "2026-11-17", "shipped_at": (NOW - timedelta(hours=30)).isoformat()})
    assert "stale" in failover.backup_finding(old, topology, "DC2", NOW)["text"]
    assert "none is shipped to DC3" in failover.backup_finding(None, topology, "DC3", NOW)["text"]
    assert failover.backup_finding(None, topology, "DC1", NOW)["level"] == "ok"


def test_latest_event_read_errors_become_findings() -> None:
    class Broken:
        def __getitem__(self, _: Any) -> Any:
            raise KeyError("asset not registered")

    event, error = failover.latest_event(Broken(), object())
    assert event is None and "asset not registered" in error


def preflight_record(**overrides: Any) -> dict[str, Any]:
    record = {
        "request": {
            "target_site": "DC2",
            "reason": "```\n## All checks OK",
            "change_ticket": None,
            "dry_run": False,
            "triggered_by": "oncall",
        },
        "environment_id": "env-1",
        "current_site": "DC1",
        "nodes": [
            {"site": "DC2", "role": "target", "answered": False, "eServicesSite": None, "error": "refused"},
            {"site": "DC1", "role": "other", "answered": True, "eServicesSite": "DC1", "error": None},
        ],
        "keystore": {"level": "unknown", "text": "RCS keystore check: no information yet"},
        "backup": {"level": "ok", "text": "SpeechMiner backup at DC2: fresh"},
        "warnings": ["the target's RWS DC2 does not answer: refused"],
        "already_current": False,
    }
    return {**record, **overrides}


def test_approval_text_shows_findings_and_keeps_the_reason_inert() -> None:
    subject, body = failover.approval_text(preflight_record(), load_topology())
    assert subject.startswith("eServices failover DC1 → DC2")
    assert "| DC2 (target) | **no**: refused | — |" in body and "| DC1 | yes | DC1 |" in body
    assert "```text\n'''\n## All checks OK\n```" in body, "user text cannot close the fence"
    assert "no information yet" in body and "⚠ the target's RWS DC2 does not answer" in body
    assert "two-person rule" in body


# --- the outcome table and the audit file ---------------------------------------------------------------


def approved() -> dict[str, Any]:
    return decision(by="second")


def outcome(**steps: Any) -> failover.Outcome:
    defaults: dict[str, Any] = {
        "preflight": preflight_record(),
        "approval": approved(),
        "recheck": {"decision": "switch", "detail": "site still DC1"},
        "switch": {"posted": True, "answer": "accepted", "detail": "RWS DC2 accepted"},
        "verification": {"outcome": VERIFIED, "detail": "every RWS reports DC2"},
        "states": {},
    }
    return failover.decide_outcome(**{**defaults, **steps})


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
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_outcome_table(steps: dict[str, Any], expected: str, ok: bool) -> None:
    result = outcome(**steps)
    assert (result.name, result.ok) == (expected, ok)
    assert result.name in failover.OUTCOMES


@dataclass
class FakeDagRun:
    dag_id: str = failover_spec.DAG_ID
    run_id: str = "manual__2026-11-20T03:00:00+00:00"
    triggering_user_name: str = "oncall"
    start_date: datetime = NOW
    conf: dict[str, Any] = field(default_factory=dict)


def test_audit_record_is_complete_and_holds_no_credentials(tmp_path: Path) -> None:
    steps = {
        "preflight": {**preflight_record(), "rws_answers": [{"phase": "preflight", "site": "DC1"}]},
        "approval": approved(),
        "recheck": {"decision": "switch", "detail": "x", "current_site": "DC1", "rws_answers": []},
        "switch": {
            "posted": True,
            "answer": "accepted",
            "via_site": "DC2",
            "http_status": 200,
            "statusCode": 0,
        },
        "verification": {
            "outcome": VERIFIED,
            "detail": "ok",
            "last_observations": [obs("DC1", "DC2"), obs("DC2", "DC2")],
            "answers": [{"site": "DC1", "http_status": 200, "statusCode": 0}],
        },
        "states": {"switch_eservices_site": "success"},
    }
    record = failover.build_audit_record(
        steps, topology=load_topology(), dag_run=FakeDagRun(), written_at=NOW
    )
    assert record["outcome"] == "verified"
    assert (record["site_before"], record["site_after"]) == ("DC1", "DC2")
    assert record["decision"] == {
        "chosen": "Approve",
        "by": {"id": "second", "name": "second"},
        "at": NOW.isoformat(),
        "timed_out": False,
    }
    assert [a["phase"] for a in record["rws_answers"]] == ["preflight", "verify"]
    assert record["follow_ups"] and record["triggered_by"] == "oncall"

    audit_log = f"file://{tmp_path}/audit"
    first = failover.write_audit_record(audit_log, record, started_at=NOW, try_number=1)
    again = failover.write_audit_record(audit_log, record, started_at=NOW, try_number=1)
    retry = failover.write_audit_record(audit_log, record, started_at=NOW, try_number=2)
    names = sorted(p.name for p in (tmp_path / "audit").iterdir())
    assert names == [
        "20261120T030000Z_manual__2026-11-20T03_00_00_00_00_try1-2.json",
        "20261120T030000Z_manual__2026-11-20T03_00_00_00_00_try1.json",
        "20261120T030000Z_manual__2026-11-20T03_00_00_00_00_try2.json",
    ], "each write adds a file; none is overwritten"
    assert len({first, again, retry}) == 3
    assert json.loads((tmp_path / "audit" / names[1]).read_text()) == json.loads(json.dumps(record))


def test_follow_ups_cover_the_guide() -> None:
    topology = load_topology()
    to_backup = "\n".join(failover.follow_ups(topology, "DC2", backup_name="2026-11-19"))
    assert "[interaction-workspace] disaster-recovery.eservices-site = DC2" in to_backup
    assert "Screen Recording Service" in to_backup and "screen-recording.htcc.peer_uri" in to_backup
    assert "promote the backup index in DC2" in to_backup and "2026-11-19" in to_backup
    assert "Required Actions" in to_backup and '"target_site": "DC1"' in to_backup
    back = "\n".join(failover.follow_ups(topology, "DC1"))
    assert "primary instance again" in back and "no further switch is needed" in back


# --- the approval operator records the answer before acting on it -----------------------------------------


class FakeTi:
    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def approval_with_downstream() -> Any:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("approval_unit", schedule=None):
        approval = failover_spec.FailoverApprovalOperator(
            task_id="approve_failover", subject="s", assigned_users=[{"id": "approver", "name": "A"}]
        )
        approval >> EmptyOperator(task_id="recheck")
    return approval


def test_a_rejection_is_recorded_before_the_downstream_steps_are_skipped() -> None:
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    approval, ti = approval_with_downstream(), FakeTi()
    event = {
        "chosen_options": ["Reject"],
        "params_input": {},
        "responded_at": NOW,
        "responded_by_user": {"id": "second", "name": "Second"},
        "timedout": False,
    }
    with pytest.raises(DownstreamTasksSkipped):
        approval.execute_complete({"ti": ti, "task": approval}, event)
    assert ti.pushed["decision"] == {
        "chosen_options": ["Reject"],
        "responded_by_user": {"id": "second", "name": "Second"},
        "responded_at": NOW.isoformat(),
        "timed_out": False,
    }


def test_a_timeout_is_recorded_as_such() -> None:
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    approval, ti = approval_with_downstream(), FakeTi()
    event = {
        "chosen_options": ["Reject"],
        "params_input": {},
        "responded_at": NOW,
        "responded_by_user": None,
        "timedout": True,
    }
    with pytest.raises(DownstreamTasksSkipped):
        approval.execute_complete({"ti": ti, "task": approval}, event)
    assert ti.pushed["decision"]["timed_out"] is True and ti.pushed["decision"]["responded_by_user"] is None


def test_verify_skips_when_nothing_was_posted() -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from include.gir_ops.failover_triggers import VerifyEServicesSiteOperator

    class Ti:
        def xcom_pull(self, **_: Any) -> Any:
            return {"posted": False, "detail": "DRY RUN"}

    verify = VerifyEServicesSiteOperator(
        task_id="verify_switch",
        switch_task_id="switch_eservices_site",
        rws_nodes=[],
        dr_monitoring_delay_seconds=30,
        verify_margin_seconds=30,
    )
    with pytest.raises(AirflowSkipException, match="DRY RUN"):
        verify.execute({"ti": Ti()})


def test_rws_auth_error_is_a_known_refusal() -> None:
    """An auth refusal is a definite answer: the switch step reports it as failed, not unknown."""
    exc = RwsAuthError("refused", site="DC2", http_status=401, status_code=20)
    assert exc.status_code not in (None, 0) and not exc.retryable


@pytest.mark.parametrize(("http_status", "status_code"), [(500, 9), (500, 7), (200, 9)])
def test_switch_not_resent_when_rws_may_have_applied_it(
    gir: SimulatedGir, http_status: int, status_code: int
) -> None:
    """statusCode 9 (processing incomplete) or 7 (partial success): RWS may have switched. One POST only."""
    gir.fault("DC2", count=3, http_status=http_status, status_code=status_code, path_contains=SWITCH)
    with pytest.raises(RwsError) as caught:
        switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert caught.value.status_code == status_code
    assert len(switch_posts(gir, "DC2")) == 1
    assert not failover.not_processed(caught.value)


def test_switch_resent_after_429_and_503_which_say_nothing_was_processed(gir: SimulatedGir) -> None:
    gir.fault("DC2", count=1, http_status=429, status_code=4, path_contains=SWITCH)
    gir.fault("DC2", count=1, http_status=503, status_code=4, path_contains=SWITCH)
    answer = switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert answer.attempts == 3
    assert [p["http_status"] for p in switch_posts(gir, "DC2")] == [429, 503, 200]
    assert len(gir.simulator.state.environment.switches) == 1


@pytest.mark.parametrize("listed", ["..", "..%2Fcontact-centers", "env id", "env\nid"])
def test_an_environment_id_unfit_for_a_url_path_is_never_used(
    monkeypatch: pytest.MonkeyPatch, listed: str
) -> None:
    """The ID RWS lists goes into .../genesys-environments/<id>/multimedia-switch: refused, nothing sent."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIR_RWS_DC2",
        json.dumps({"conn_type": "http", "host": "rws.test", "login": "ops", "password": "x"}),
    )
    dc = load_topology().site("DC2")
    answers: list[dict[str, Any]] = []
    with requests_mock.Mocker() as mocked:
        mocked.get(
            "http://rws.test/api/v2/ops/genesys-environments",
            json={"statusCode": 0, "paths": [f"/genesys-environments/{listed}"]},
        )
        node = failover.observe_node(dc, target_site="DC2", phase="switch", answers=answers)
        assert mocked.call_count == 1, "nothing may be sent with the refused ID"
    assert node["answered"] is False and node["environment_ids"] == []
    assert "genesys-environment ID" in node["error"] and "refused" in node["error"]
    with pytest.raises(RwsError, match="refused"):
        RwsClient("DC2", dc.rws_conn_id).multimedia_switch(listed, "DC2")
