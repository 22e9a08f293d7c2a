"""What the notification tests share: a real local Apprise receiver wired as connection ``gir_apprise``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from include.gir_sim.notify_receiver import NotificationReceiver


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[NotificationReceiver]:
    """A JSON receiver on loopback; AIRFLOW_CONN_GIR_APPRISE points Apprise (json://127.0.0.1:PORT) at it."""
    with NotificationReceiver(out=tmp_path / "notifications.jsonl") as running:
        monkeypatch.setenv("AIRFLOW_CONN_GIR_APPRISE", running.connection_json())
        yield running


def wait_for_messages(
    receiver: NotificationReceiver, count: int, timeout: float = 20.0, title_contains: str = ""
) -> list[dict[str, Any]]:
    """The messages received (with ``title_contains`` in the title) once there are ``count``; else fail."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in receiver.received() if title_contains in (m.get("title") or "")]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, (
                f"expected {count} message(s) {title_contains!r}, got {receiver.received()}"
            )
            return found
        time.sleep(0.1)


def full_text(message: dict[str, Any]) -> str:
    return f"{message.get('title')}\n{message.get('message')}"
