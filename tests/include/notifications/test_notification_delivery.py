"""Delivery through a real Apprise connection to a real local receiver; a broken channel breaks nothing."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest

from include.gir_ops.notifications.delivery import Route, deliver
from include.gir_ops.notifications.messages import Message
from include.gir_ops.notifications.notifiers import ApprovalWaitingNotifier, GirNotifier
from include.gir_sim.notify_receiver import NotificationReceiver
from tests.include.notifications import notification_support
from tests.include.notifications.notification_support import wait_for_messages

receiver = notification_support.receiver  # the fixture

ROUTE = Route("run_failed", "gir_apprise")


def test_a_message_reaches_the_receiver_through_the_apprise_connection(
    receiver: NotificationReceiver,
) -> None:
    assert deliver(ROUTE, Message("[gir-ops] title", "line 1\nline 2", "failure")) is True
    (got,) = wait_for_messages(receiver, 1)
    assert (got["title"], got["message"], got["type"]) == ("[gir-ops] title", "line 1\nline 2", "failure")
    kept = [json.loads(line) for line in receiver.out.read_text().splitlines()]
    assert kept[0]["title"] == "[gir-ops] title"


def test_a_tag_addresses_only_the_urls_with_that_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    with NotificationReceiver() as oncall, NotificationReceiver() as others:
        config = [
            {"path": oncall.apprise_url, "tag": "oncall"},
            {"path": others.apprise_url, "tag": "others"},
        ]
        monkeypatch.setenv(
            "AIRFLOW_CONN_GIR_APPRISE", json.dumps({"conn_type": "apprise", "extra": {"config": config}})
        )
        assert deliver(Route("approval_waiting", "gir_apprise", "oncall"), Message("t", "b")) is True
        wait_for_messages(oncall, 1)
        assert others.received() == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("broken", ["http-500", "nothing-listening", "no-connection", "bad-config"])
def test_a_broken_channel_is_logged_and_never_raises(
    broken: str, receiver: NotificationReceiver, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    if broken == "http-500":
        receiver.fail_with = 500
    elif broken == "nothing-listening":
        url = f"json://127.0.0.1:{_free_port()}/notify"
        monkeypatch.setenv(
            "AIRFLOW_CONN_GIR_APPRISE",
            json.dumps({"conn_type": "apprise", "extra": {"config": {"path": url}}}),
        )
    elif broken == "no-connection":
        monkeypatch.delenv("AIRFLOW_CONN_GIR_APPRISE")
    else:
        monkeypatch.setenv(
            "AIRFLOW_CONN_GIR_APPRISE", json.dumps({"conn_type": "apprise", "extra": {"config": 7}})
        )
    with caplog.at_level(logging.ERROR):
        assert deliver(ROUTE, Message("t", "b")) is False
    assert "NOT delivered" in caplog.text and "gir_apprise" in caplog.text
    assert receiver.received() == []


class _Exploding(GirNotifier):
    event = "run_failed"

    def build(self, context: Any, secrets: list[str]) -> Any:
        raise RuntimeError("message building broke")


def test_a_notifier_never_raises_into_the_task_or_run(receiver: NotificationReceiver, caplog: Any) -> None:
    with caplog.at_level(logging.ERROR):
        _Exploding(conn_id="gir_apprise")({"dag": None, "run_id": "r"})  # as a DAG callback calls it
        # As the HITL operator calls it, with a context that lacks everything the message needs.
        ApprovalWaitingNotifier(conn_id="gir_apprise", record_task_id="preflight")({})
    assert "could not be built or sent" in caplog.text
    assert receiver.received() == []
