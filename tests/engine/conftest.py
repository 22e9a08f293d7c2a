"""The engine fixture: real Airflow (Celery executor, PostgreSQL, Redis) for the tests in this folder.

One engine per pytest session, started on first use and always torn down: by the fixture's finalizer,
and by an atexit handler and a SIGTERM handler as safety nets. When a test here fails, the tail of every
component's log is attached to its report; the full logs are copied to ``test-artifacts/engine-logs``.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_stack import EngineStack

_ACTIVE: list[EngineStack] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Engine tests at the end of the session (the engine then runs only while they do), browser last.

    A stable sort: every other test keeps its order.
    """
    items.sort(
        key=lambda item: (bool(item.get_closest_marker("engine")), bool(item.get_closest_marker("browser")))
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.failed and _ACTIVE and item.get_closest_marker("engine"):
        report.sections.append(("engine component logs", _ACTIVE[0].log_tails()))
    return report


def _stop(stack: EngineStack) -> list[str]:
    problems = stack.stop()
    if stack in _ACTIVE:
        _ACTIVE.remove(stack)
    return problems


@pytest.fixture(scope="session")
def engine() -> Iterator[EngineStack]:
    """The running engine: API server, scheduler, dag-processor, triggerer, Celery worker, simulator."""
    base = Path(tempfile.mkdtemp(prefix="gir-ops-engine-"))
    stack = EngineStack(base)
    _ACTIVE.append(stack)
    atexit.register(_stop, stack)
    previous_sigterm = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finalizer below

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        try:
            stack.start()
        except BaseException:
            tails = stack.log_tails()
            _stop(stack)
            print(f"engine start failed; component logs:\n{tails}")
            raise
        yield stack
    finally:
        problems = _stop(stack)
        signal.signal(signal.SIGTERM, previous_sigterm)
        leftovers = stack.leftover_processes()
        try:
            database_left = stack.database_exists()
        except Exception:  # PostgreSQL unreachable: the start failed before anything was created
            database_left = False
        shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"engine processes still running after teardown: {leftovers}"
        assert not database_left, f"database {stack.database} was not dropped: {problems}"
        assert not any("survived" in p or "failed" in p for p in problems), problems
