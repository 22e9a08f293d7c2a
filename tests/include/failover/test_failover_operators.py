"""The approval operator records the answer before the base class acts on it."""

from __future__ import annotations

from typing import Any

import pytest

from include.gir_ops.failover.operators import FailoverApprovalOperator
from tests.include.failover.failover_support import NOW

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
        approval = FailoverApprovalOperator(
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
