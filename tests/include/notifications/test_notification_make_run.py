"""``make run`` wires the topology's Apprise connection(s) to a local receiver that keeps every message."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from include.gir_ops.notifications.delivery import Route, deliver
from include.gir_ops.notifications.messages import Message
from tests.conftest import DEFAULT_TOPOLOGY, REPO_ROOT


@pytest.fixture(scope="module")
def run_stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_stack_notify", REPO_ROOT / "scripts" / "run_stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_demo_receiver_gets_what_the_stacks_connection_sends(
    run_stack: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    env = run_stack.notification_env(DEFAULT_TOPOLOGY, port, 8080)
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080"
    assert set(env) == {"AIRFLOW_CONN_GIR_APPRISE", "AIRFLOW__API__BASE_URL"}
    monkeypatch.setenv("AIRFLOW_CONN_GIR_APPRISE", env["AIRFLOW_CONN_GIR_APPRISE"])
    out = tmp_path / "notifications.jsonl"
    receiver = subprocess.Popen(  # as make run starts it
        [sys.executable, "-m", "include.gir_sim.notify_receiver", "--port", str(port), "--out", str(out)],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not deliver(Route("run_failed", "gir_apprise"), Message("[gir-ops] demo", "hello", "failure")):
            assert time.monotonic() < deadline, "the receiver did not come up"
            time.sleep(0.3)
        (kept,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert (kept["title"], kept["message"], kept["type"]) == ("[gir-ops] demo", "hello", "failure")
    finally:
        receiver.terminate()
        logged, _ = receiver.communicate(timeout=10)
    assert "NOTIFICATION [failure] [gir-ops] demo" in logged


def test_without_a_notifications_section_make_run_adds_nothing(run_stack: ModuleType, tmp_path: Path) -> None:
    import yaml

    document = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    document.pop("notifications")
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(document))
    assert run_stack.notification_env(topology, 1, 8080) == {}
