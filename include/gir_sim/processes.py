"""Child processes in a session of their own, logged to a file and stopped as a whole process group.

Part of ``include.gir_sim`` (what runs the demo and the tests' stack), not of the production package:
``make run`` (``scripts/run_stack.py``) and the real-engine tests (``tests/engine``) start the same kinds
of processes (the simulator, Airflow components, set-up steps) and must leave none behind: an Airflow
component forks helpers (executors, log servers, task runners) that a signal to the leader alone would
orphan. Each child gets its own session, so a terminal's Ctrl-C reaches only the parent, and is stopped
by a plan of signals to its group, ending in SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class StopStep:
    signum: signal.Signals
    grace: float  # seconds to wait for the group to go before the next step
    group: bool = True  # signal every process of the child's group, not only the child


DEFAULT_STOP_PLAN = (StopStep(signal.SIGTERM, 10.0),)
_LAST_RESORT = StopStep(signal.SIGKILL, 5.0)


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    # Steps tried in turn until the child and its whole process group are gone; then SIGKILL.
    stop_plan: tuple[StopStep, ...] = DEFAULT_STOP_PLAN

    def group_alive(self) -> bool:
        self.process.poll()  # reap the leader: a zombie still counts as a member of its group
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self) -> bool:
        """Run the stop plan, then SIGKILL, until the group is gone; close the log.

        Returns True when the plan was enough, False when SIGKILL had to finish the job.
        """
        graceful = True
        for step in (*self.stop_plan, _LAST_RESORT):
            if not self.group_alive():
                break
            graceful = step is not _LAST_RESORT
            if step.group:
                self.signal_group(step.signum)
            elif self.process.poll() is None:
                self.process.send_signal(step.signum)
            else:
                continue
            deadline = time.monotonic() + step.grace
            while time.monotonic() < deadline and self.group_alive():
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.log_file.close()
        return graceful


def start_child(
    name: str,
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    stop_plan: tuple[StopStep, ...] = DEFAULT_STOP_PLAN,
) -> Child:
    """Start ``command`` in a new session, stdout and stderr appended to ``log_path`` after a header."""
    log_file = log_path.open("ab")
    log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
    log_file.flush()
    process = subprocess.Popen(  # noqa: S603 - argv built by the caller from fixed parts
        list(command),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Child(name, list(command), process, log_path, log_file, stop_plan)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, indented, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "    (no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
