"""Benchmark: the real engine end to end, a 30-day backfill of one DC against ``dag.test()`` of the same runs.

The engine is the engine tests' stack (``tests/engine/engine_stack.py``): API server, scheduler,
dag-processor, triggerer and one Celery worker on this machine's PostgreSQL and Redis, with the GIR
simulator, in a throw-away database. DC2 gets 3 contact centers, screen recording (so 2 kinds) and 24-hour
windows; its simulator answers every call 20 ms late. After the DAG's own scheduled run (unmeasured: it is
what unpausing creates), ``POST /api/v2/backfills`` asks for the 30 days before it; the wall time runs
from that POST to the last backfill run's end. Concurrency is stated in the row: one Celery worker with
``WORKER_CONCURRENCY`` slots, the backfill's ``max_active_runs`` and the DC's RWS pool size
(``reindex.pool_slots``, in the benchmark's topology) bound how many tasks run at once.

The baseline is ``dag.test()`` of the same 30 runs (each run's logical date is the end of the engine's
run's data interval, which gives ``dag.test()`` the same interval), one after another in one process with
a migrated SQLite database, against an in-process simulator with the same 20 ms. Both sides must send
the same forceIndex POSTs (counted by each simulator).

Scheduling overhead per task instance: the engine's extra wall time over ``dag.test()`` divided by its task
instances, and from the engine's own records the mean wait from scheduled to queued and from queued to
running (Celery pick-up and the task process start), against the mean task duration on both sides.

The engine stack takes ``/tmp/gir/engine.lock`` (as the engine tests do) so that two engines never share
the Redis db index.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from statistics import mean
from typing import Any
from zoneinfo import ZoneInfo

import requests
import yaml

from benchmarks import PYTHON, REPO_ROOT, Row, at_most, seconds, subprocess_env

SITE = "DC2"
DAG_ID = "gir_es_reindex_dc2"
CONTACT_CENTERS = ["9a4c1e3f0b", "5d21f07c88", "c0ffee1234"]
LATENCY_MS = 20
FULL_DAYS = 30
QUICK_DAYS = 2
WORKER_CONCURRENCY = 4  # the engine stack's Celery worker (--concurrency 4)
BACKFILL_MAX_ACTIVE_RUNS = 4
POOL_SLOTS = 4  # reindex.pool_slots of DC2 in the benchmark's topology
TARGET_RATIO = 2.0
LOCK_PATH = Path("/tmp/gir/engine.lock")
_MARK = "ENGINE_BENCH "


def dc_overrides(dc: dict[str, Any]) -> None:
    """DC2 as the issue describes it: 3 contact centers x 2 kinds, 24-hour windows, a pool of POOL_SLOTS."""
    dc["rws"]["contact_centers"] = list(CONTACT_CENTERS)
    dc["rws"]["screen_recording"] = True
    dc["reindex"]["max_window_hours"] = 24
    dc["reindex"]["pool_slots"] = POOL_SLOTS


@contextlib.contextmanager
def engine_lock() -> Iterator[None]:
    """The engine tests' lock; ``GIR_ENGINE_LOCK_HELD=1`` when the caller holds it already (``flock ... make
    bench``), or a second flock on the same file would wait for ever."""
    if os.environ.get("GIR_ENGINE_LOCK_HELD") == "1":
        yield
        return
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_PATH.open("a") as handle:
        print(f"engine_backfill: waiting for {LOCK_PATH} ...", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the engine side ----------------------------------------------------------------------------------


def _engine_stack_module() -> Any:
    """tests/engine/engine_stack.py, imported without the test suite's environment (tests/conftest.py sets
    AIRFLOW_HOME and friends when imported) leaking into this process and the benchmarks after it."""
    import importlib

    saved = dict(os.environ)
    try:
        return importlib.import_module("tests.engine.engine_stack")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _engine_run(days: int, base: Path) -> dict[str, Any]:
    engine_stack = _engine_stack_module()
    parse_time, wait_for = engine_stack.parse_time, engine_stack.wait_for

    class BenchStack(engine_stack.EngineStack):  # type: ignore[misc,name-defined]
        def _write_topology(self) -> None:
            super()._write_topology()
            dc_overrides(next(dc for dc in self.topology_document["data_centers"] if dc["site"] == SITE))
            self.topology_path.write_text(
                yaml.safe_dump(self.topology_document, sort_keys=False), encoding="utf-8"
            )

    stack = BenchStack(base)
    try:
        started_stack = time.perf_counter()
        stack.start()
        stack_seconds = time.perf_counter() - started_stack
        admin = stack.api("admin")
        requests.post(
            f"{stack.sim_url(SITE)}/_sim/latency", json={"ms": LATENCY_MS}, timeout=10
        ).raise_for_status()
        admin.unpause(DAG_ID)
        scheduled = wait_for(
            "the scheduler to create DC2's scheduled re-index run",
            lambda: next((r for r in admin.runs(DAG_ID) if r["run_type"] == "scheduled"), None),
            timeout=180,
        )
        admin.wait_run(DAG_ID, scheduled["dag_run_id"], timeout=300)
        dc2 = next(dc for dc in stack.topology_document["data_centers"] if dc["site"] == SITE)
        start = parse_time(scheduled["data_interval_start"])
        first = start.astimezone(ZoneInfo(dc2["timezone"])) - timedelta(days=days)
        posts_before = _engine_posts(stack)
        started = time.perf_counter()
        backfill = admin.create_backfill(DAG_ID, first, start, max_active_runs=BACKFILL_MAX_ACTIVE_RUNS)

        def finished() -> list[dict[str, Any]] | None:
            runs = [r for r in admin.runs(DAG_ID) if r["run_type"] == "backfill"]
            done = len(runs) == days and all(r["state"] in ("success", "failed") for r in runs)
            return runs if done and admin.backfill(backfill["id"])["completed_at"] else None

        runs = wait_for("the backfill to finish", finished, timeout=days * 120, interval=0.5)
        wall = time.perf_counter() - started
        # The last run's end is the backfill's end: take it from Airflow's record, not the polling.
        tis = [ti for r in runs for ti in admin.task_instances(DAG_ID, r["dag_run_id"])]
        return {
            "seconds": wall,
            "stack_seconds": stack_seconds,
            "runs": [
                {
                    "state": r["state"],
                    "data_interval_start": r["data_interval_start"],
                    "data_interval_end": r["data_interval_end"],
                }
                for r in runs
            ],
            "task_instances": [
                {
                    "state": ti["state"],
                    "scheduled": ti.get("scheduled_when"),
                    "queued": ti.get("queued_when"),
                    "start": ti.get("start_date"),
                    "end": ti.get("end_date"),
                    "duration": ti.get("duration"),
                }
                for ti in tis
            ],
            "posts": _engine_posts(stack) - posts_before,
        }
    finally:
        problems = stack.stop()
        if problems:
            print(f"engine_backfill: teardown problems: {problems}", file=sys.stderr)


def _engine_posts(stack: Any) -> int:
    received = requests.get(f"{stack.sim_url(SITE)}/_sim/requests", timeout=10).json()
    return _count_posts(received)


def _count_posts(received: list[dict[str, Any]]) -> int:
    """forceIndex POSTs the simulator accepted."""
    return sum(
        1
        for r in received
        if r.get("method") == "POST"
        and "/contact-centers/" in r.get("path", "")
        and r.get("http_status") == 200
    )


# --- the dag.test() side (a child process) ------------------------------------------------------------------


def child_dag_tests(logical_dates: list[str]) -> dict[str, Any]:
    """In the child: migrate, parse, then ``dag.test()`` each logical date one after another, timed."""
    from airflow.utils import db

    db.resetdb(skip_init=False)
    from airflow.dag_processing.dagbag import DagBag

    from include.gir_ops.bootstrap import ensure_pools
    from include.gir_ops.topology import load_topology
    from tests.airflow_api_server import serve_airflow_api

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "gir_es_reindex.py"))
    if bag.import_errors or DAG_ID not in bag.dags:
        raise RuntimeError(f"cannot load {DAG_ID}: {bag.import_errors or sorted(bag.dags)}")
    dag = bag.dags[DAG_ID]
    # Airflow 3.3.2's dag.test() crashes on success with Deadline Alerts; it never creates one anyway.
    dag.deadline = None
    ensure_pools(load_topology())
    runs = []
    durations: list[float] = []
    with serve_airflow_api() as api:
        os.environ["AIRFLOW_CONN_GIR_AIRFLOW_API"] = api.connection_json()
        started = time.perf_counter()
        for logical_date in logical_dates:
            dag_run = dag.test(logical_date=datetime.fromisoformat(logical_date))
            runs.append(
                {
                    "state": str(dag_run.state),
                    "data_interval_start": dag_run.data_interval_start.isoformat(),
                    "data_interval_end": dag_run.data_interval_end.isoformat(),
                }
            )
            durations += [float(ti.duration or 0.0) for ti in dag_run.get_task_instances()]
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "runs": runs, "durations": durations}


def dag_tests(engine_runs: list[dict[str, Any]], base: Path) -> dict[str, Any]:
    """``dag.test()`` of the runs with these data intervals, in a child process; POSTs counted here."""
    from include.gir_ops.topology import parse_topology
    from include.gir_sim.server import GirSimulator

    document = yaml.safe_load((REPO_ROOT / "include/config/topology.yaml").read_text(encoding="utf-8"))
    dc_overrides(next(dc for dc in document["data_centers"] if dc["site"] == SITE))
    topology_path = base / "topology.yaml"
    topology_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    topology = parse_topology(topology_path.read_text(encoding="utf-8"), source=str(topology_path))
    password = secrets.token_urlsafe(16)
    home = base / "airflow-home"
    home.mkdir()
    with GirSimulator(topology, ops_password=password) as simulator:
        simulator.start()
        simulator.state.site(SITE).latency_ms = LATENCY_MS
        extra = {
            "GIR_TOPOLOGY": str(topology_path),
            "GIR_DATA_DIR": str(base / "gir-data"),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        }
        for dc in topology.data_centers:
            extra[f"AIRFLOW_CONN_{dc.rws_conn_id.upper()}"] = json.dumps(
                {
                    "conn_type": "http",
                    "host": simulator.host,
                    "port": simulator.ports[dc.site],
                    "login": "ops",
                    "password": password,
                }
            )
        dates = [r["data_interval_end"] for r in sorted(engine_runs, key=lambda r: r["data_interval_start"])]
        result = subprocess.run(
            [PYTHON, "-m", "benchmarks.engine_backfill", "--dag-tests", *dates],
            capture_output=True,
            text=True,
            env=subprocess_env(extra),
            cwd=REPO_ROOT,
            check=False,
        )
        answer = next(
            (
                json.loads(line[len(_MARK) :])
                for line in reversed(result.stdout.splitlines())
                if line.startswith(_MARK)
            ),
            None,
        )
        if result.returncode != 0 or answer is None:
            raise RuntimeError(f"the dag.test() child failed ({result.returncode}): {result.stderr[-2000:]}")
        answer["posts"] = _count_posts(simulator.state.requests(SITE))
    return answer


# --- the benchmark -----------------------------------------------------------------------------------------


def run(*, quick: bool = False, days: int | None = None) -> list[Row]:
    days = days or (QUICK_DAYS if quick else FULL_DAYS)
    with tempfile.TemporaryDirectory(prefix="gir-bench-engine-") as tmp:
        base = Path(tmp)
        (base / "engine").mkdir()
        (base / "dag-test").mkdir()
        with engine_lock():
            engine = _engine_run(days, base / "engine")
        tested = dag_tests(engine["runs"], base / "dag-test")
    return _rows(days, engine, tested)


def _intervals(runs: list[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    return sorted(
        (datetime.fromisoformat(r["data_interval_start"]), datetime.fromisoformat(r["data_interval_end"]))
        for r in runs
    )


def _seconds_between(earlier: str | None, later: str | None) -> float | None:
    if not earlier or not later:
        return None
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def _mean_of(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return mean(known) if known else float("nan")


def _rows(days: int, engine: dict[str, Any], tested: dict[str, Any]) -> list[Row]:
    tis = engine["task_instances"]
    ratio = engine["seconds"] / tested["seconds"]
    same_runs = _intervals(engine["runs"]) == _intervals(tested["runs"]) and len(engine["runs"]) == days
    all_success = all(r["state"] == "success" for r in engine["runs"]) and all(
        r["state"].endswith("success") for r in tested["runs"]
    )
    overhead = (engine["seconds"] - tested["seconds"]) / max(len(tis), 1)
    to_queued = _mean_of([_seconds_between(t["scheduled"], t["queued"]) for t in tis])
    to_running = _mean_of([_seconds_between(t["queued"], t["start"]) for t in tis])
    engine_duration = _mean_of([t["duration"] for t in tis])
    test_duration = _mean_of(tested["durations"])
    concurrency = (
        f"1 Celery worker, concurrency {WORKER_CONCURRENCY}; backfill max_active_runs "
        f"{BACKFILL_MAX_ACTIVE_RUNS}; "
        f"RWS pool gir_rws_dc2 {POOL_SLOTS} slots; [core] parallelism 8"
    )
    total = Row(
        benchmark="engine_backfill",
        name=(
            f"engine backfill of {days} days, DC2 ({len(CONTACT_CENTERS)} contact centers x 2 kinds, "
            f"{LATENCY_MS} ms/call) / dag.test() of the same {days} runs"
        ),
        ratio=ratio,
        target=f"<= {TARGET_RATIO}",
        passed=at_most(ratio, TARGET_RATIO) if all_success and same_runs else False,
        figures=(
            f"engine {seconds(engine['seconds'])} from the backfill POST to its last run's end "
            f"({len(engine['runs'])} runs, {len(tis)} task instances, {engine['posts']} forceIndex POSTs, "
            f"runs {'all success' if all_success else 'NOT all success'}) vs dag.test() "
            f"{'' if same_runs else '(NOT THE SAME INTERVALS) '}"
            f"{seconds(tested['seconds'])} ({len(tested['runs'])} runs one after another, "
            f"{tested['posts']} POSTs); "
            f"{concurrency}; engine start-up {seconds(engine['stack_seconds'])} not counted"
        ),
        details={
            "engine_seconds": engine["seconds"],
            "dag_test_seconds": tested["seconds"],
            "engine_runs": len(engine["runs"]),
            "dag_test_runs": len(tested["runs"]),
            "task_instances": len(tis),
            "engine_posts": engine["posts"],
            "dag_test_posts": tested["posts"],
            "all_success": all_success,
            "same_runs": same_runs,
        },
    )
    slot_seconds = len(tis) * (to_running + engine_duration) / WORKER_CONCURRENCY
    total.why_missed = (
        f"the engine's {seconds(engine['seconds'])} against dag.test()'s {seconds(tested['seconds'])}: "
        f"a task instance runs {seconds(engine_duration)} in the engine against {seconds(test_duration)} "
        "under dag.test() (the Celery worker forks a task process, which parses the DAG file, every DAG "
        "in it, "
        f"and talks to the API server through the supervisor), and waits {seconds(to_running)} from queued "
        f"to running; {len(tis)} task instances through {WORKER_CONCURRENCY} worker slots keep the slots "
        f"busy {seconds(slot_seconds)} of the wall time; the rest is waiting to be scheduled (scheduled -> "
        f"queued {seconds(to_queued)} on average: the scheduler's loop, the pool and max_active_runs). On 2 "
        "cores the API server, scheduler, dag-processor, triggerer and worker share the CPU with the tasks"
    )
    per_ti = Row(
        benchmark="engine_backfill",
        name="engine scheduling overhead per task instance / the task's own duration under dag.test()",
        ratio=overhead / test_duration if test_duration > 0 else None,
        target="-",
        passed=None,
        info=True,
        figures=(
            f"{seconds(overhead)} more wall time per task instance than dag.test() (engine - dag.test() over "
            f"{len(tis)} task instances); in the engine's records, scheduled -> queued "
            f"{seconds(to_queued)} and queued -> running {seconds(to_running)} (Celery pick-up, task process "
            "start) on average; a task "
            f"runs {seconds(engine_duration)} in the engine vs {seconds(test_duration)} under dag.test()"
        ),
        details={
            "overhead_per_ti": overhead,
            "scheduled_to_queued": to_queued,
            "queued_to_running": to_running,
            "engine_duration": engine_duration,
            "dag_test_duration": test_duration,
        },
    )
    return [total, per_ti]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dag-tests", nargs="+", metavar="LOGICAL_DATE")
    arguments = parser.parse_args()
    if not arguments.dag_tests:
        parser.error("run it through `python -m benchmarks --only engine_backfill`")
    answer = child_dag_tests(arguments.dag_tests)
    sys.stdout.write(_MARK + json.dumps(answer) + "\n")
