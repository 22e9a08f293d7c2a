"""Children of `make run` and the engine tests: started in their own session, stopped with their group."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from include.gir_sim.processes import Child, StopStep, start_child, tail

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""

# Leaves a helper in its group, and shuts itself down on SIGINT (as `airflow standalone` does).
LEADER = """
import signal, subprocess, sys, time
helper = subprocess.Popen(["sleep", "60"])
def shut_down(*_):
    print("got-int", flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, shut_down)
print("ready", flush=True)
time.sleep(60)
"""


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_for_line(path: Path, text: str) -> None:
    import time

    deadline = time.monotonic() + 10
    while text not in path.read_text(errors="replace").splitlines()[2:]:  # not the header (the command)
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.05)


def _start_ready_python(tmp_path: Path, name: str, code: str, *stop_plan: StopStep) -> tuple[Child, Path]:
    """A Python child running ``code``, returned once it has logged "ready"."""
    log = tmp_path / f"{name}.log"
    child = start_child(
        name, [sys.executable, "-c", code], env=os.environ, cwd=tmp_path, log_path=log, stop_plan=stop_plan
    )
    _wait_for_line(log, "ready")
    return child, log


def test_a_child_and_the_helpers_it_forked_are_stopped_together(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = start_child(
        "with-helper",
        ["sh", "-c", "sleep 60 & echo started; wait"],
        env=os.environ,
        cwd=tmp_path,
        log_path=log,
    )
    _wait_for_line(log, "started")
    assert os.getsid(child.process.pid) == child.process.pid  # its own session, away from our Ctrl-C
    assert child.group_alive()
    assert child.stop() is True  # SIGTERM to the group was enough
    assert _group_gone(child.process.pid)
    assert child.log_file.closed
    assert log.read_text().startswith("\n=== ") and "sh -c sleep 60" in log.read_text()


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    child, _ = _start_ready_python(tmp_path, "stubborn", STUBBORN, StopStep(signal.SIGTERM, 0.5))
    assert child.stop() is False  # SIGKILL had to finish it
    assert _group_gone(child.process.pid)
    assert child.process.returncode == -signal.SIGKILL


def test_a_leader_only_step_reaches_the_leader_and_the_group_step_the_rest(tmp_path: Path) -> None:
    """As `airflow standalone` gets SIGINT alone and stops its components itself."""
    child, log = _start_ready_python(
        tmp_path, "leader", LEADER, StopStep(signal.SIGINT, 1.0, group=False), StopStep(signal.SIGTERM, 5.0)
    )
    assert child.stop() is True
    assert child.process.returncode == 0  # the leader ran its own shutdown on SIGINT
    assert "got-int" in log.read_text().splitlines()[2:]
    assert _group_gone(child.process.pid)  # the helper it left was stopped by the group step


@pytest.mark.parametrize(("lines", "expected"), [(2, "    c\n    d"), (10, "    a\n    b\n    c\n    d")])
def test_tail_shows_the_last_lines_indented(tmp_path: Path, lines: int, expected: str) -> None:
    log = tmp_path / "x.log"
    log.write_text("a\nb\nc\nd\n")
    assert tail(log, lines) == expected
    assert tail(tmp_path / "missing.log") == "    (no log)"
