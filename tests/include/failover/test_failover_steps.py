"""The one scaffold every step runs in: one record shape, the refusal, the error, the XCom push."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.gir_ops.failover import steps
from include.gir_ops.failover.spec import FailoverRefused, Outcome

SHAPE = {"started_at", "rws_answers", "refused", "error"}


class RecordingTi:
    """A task instance that keeps every XCom push, in order."""

    try_number = 1

    def __init__(self) -> None:
        self.pushes: list[tuple[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushes.append((key, value))

    def xcom_pull(self, **_: Any) -> Any:
        return None


@dataclass
class FakeDagRun:
    conf: dict[str, Any] = field(default_factory=dict)
    triggering_user_name: str = "oncall"
    dag_id: str = "gir_eservices_failover"
    run_id: str = "manual__2026-11-20T03:00:00+00:00"


def test_a_refusal_is_recorded_under_refused_and_fails_at_once_with_outcome_and_message() -> None:
    ti = RecordingTi()
    with pytest.raises(AirflowFailException) as caught, steps.step_record(ti, posted=False) as step:
        step.answers.append({"phase": "switch", "site": "DC2"})
        raise FailoverRefused(Outcome.SITE_CHANGED, "RWS DC2 now reports DC3; nothing was switched")
    assert str(caught.value) == "site-changed: RWS DC2 now reports DC3; nothing was switched"
    [(key, record)] = ti.pushes
    assert key == "record" and set(record) >= SHAPE
    assert record["refused"] == {
        "outcome": "site-changed",
        "message": "RWS DC2 now reports DC3; nothing was switched",
    }
    assert record["error"] is None and record["posted"] is False
    assert record["rws_answers"] == [{"phase": "switch", "site": "DC2"}]


def test_any_other_error_is_recorded_without_credentials_and_raised_as_it_is_for_retries() -> None:
    ti = RecordingTi()
    with pytest.raises(ConnectionError, match=r"api\.test"), steps.step_record(ti):
        raise ConnectionError("https://reader:s3cret@api.test/api/v2 refused")
    [(_, record)] = ti.pushes
    assert record["error"] == "ConnectionError: https://***@api.test/api/v2 refused"
    assert record["refused"] is None
    assert "s3cret" not in json.dumps(record)


def test_a_step_can_store_its_record_before_a_post_whose_answer_may_never_come() -> None:
    ti = RecordingTi()
    with steps.step_record(ti, posted=False) as step:
        step.record.update(post_attempted=True, answer="pending")
        step.push()
        step.record.update(posted=True, answer="accepted")
    assert [value["answer"] for _, value in ti.pushes] == ["pending", "accepted"]
    assert all(set(value) >= SHAPE for _, value in ti.pushes)


def test_a_preflight_refusal_uses_the_same_record_shape_as_the_other_steps() -> None:
    """A bad trigger conf used to be recorded under ``error``, other refusals under ``refused``."""
    ti = RecordingTi()
    context = {
        "ti": ti,
        "dag_run": FakeDagRun(conf={"target_site": "DC2", "dryrun": True}),
        "params": {"target_site": "DC2", "reason": "DC1 Interaction Server down"},
        "inlet_events": {},
    }
    with pytest.raises(
        AirflowFailException, match=r"^preflight-failed: unknown trigger conf key\(s\) \['dryrun'\]"
    ):
        steps.run_preflight(context)
    [(_, record)] = ti.pushes
    assert record["refused"]["outcome"] == "preflight-failed"
    assert "unknown trigger conf key(s) ['dryrun']" in record["refused"]["message"]
    assert record["error"] is None and record["rws_answers"] == []
