"""Benchmark 3, re-index orchestration overhead: the DAG against the bare POSTs, 20 ms of latency each.

A manual run of ``gir_es_reindex_dc2`` over a 400-day range, for the 3 contact centers and both index
kinds of a DC with ``max_window_hours: 24``: 400 x 3 x 2 = 2,400 forceIndex POSTs. The DAG runs with
``dag.test(run_conf=...)`` in a child process with its own AIRFLOW_HOME and a migrated SQLite DB (as
``tests/conftest.py`` does), connections from ``AIRFLOW_CONN_*`` variables, parsed from ``dags/`` with
a topology override. The simulator runs in this (otherwise idle) process, so neither client competes
with it for a GIL, and adds 20 ms to every API call.

The baseline is the same POSTs (same paths, bodies, order) sent one after another by a plain
``requests.Session`` loop in another child process. Its windows are computed with the project's own
``reindex.windows.split_windows``; the DAG's POSTs are counted from the simulator's record and compared
with that count, window by window. Full mode alternates bare, DAG, bare and takes the bare loop's mean.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from benchmarks import PYTHON, REPO_ROOT, Row, at_most, seconds, subprocess_env

SITE = "DC2"
DAG_ID = "gir_es_reindex_dc2"
CONTACT_CENTERS = [
    "625a5cf1-dea8-4e46-b18b-831d4b254488",
    "0c7e2b9d-4f13-4a8e-9b6d-2e5f8a1c3d70",
    "c0ffee12-3456-4789-abcd-ef0123456789",
]
KINDS = ["recordings", "screen-recordings"]
MAX_WINDOW_HOURS = 24
LATENCY_MS = 20
FULL_DAYS = 400
QUICK_DAYS = 2
TARGET_RATIO = 1.5
_MARK = "REINDEX_BENCH "
_PASSWORD_ENV = "GIR_BENCH_OPS_PASSWORD"


def _topology(data_dir: Path) -> dict[str, Any]:
    document = yaml.safe_load((REPO_ROOT / "include/config/topology.yaml").read_text(encoding="utf-8"))
    for dc in document["data_centers"]:
        if dc["site"] == SITE:
            dc["rws"]["contact_centers"] = list(CONTACT_CENTERS)
            dc["rws"]["screen_recording"] = True
            dc["reindex"]["max_window_hours"] = MAX_WINDOW_HOURS
    return document


def _range(days: int) -> tuple[datetime, datetime]:
    """A past range of ``days`` whole days ending at yesterday's UTC midnight."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    return end - timedelta(days=days), end


def expected_posts(
    start: datetime, end: datetime, contact_centers: list[str]
) -> list[tuple[str, str, int, int]]:
    """(contact center, kind, from ms, to ms) of every window, in the order one pair after another."""
    from include.gir_ops.reindex.windows import split_windows

    windows = split_windows(start, end, MAX_WINDOW_HOURS)
    return [(cc, kind, w.from_ms, w.to_ms) for cc in contact_centers for kind in KINDS for w in windows]


# --- child processes -------------------------------------------------------------------------------


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(_MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


def child_dag_run(start: str, end: str, contact_centers: str, migrate: bool) -> dict[str, Any]:
    """In the child: (migrate the DB,) parse the DAG file, time ``dag.test()`` of the manual run."""
    setup_started = time.perf_counter()
    if migrate:
        from airflow.utils import db

        db.resetdb(skip_init=False)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "gir_es_reindex.py"))
    if bag.import_errors or DAG_ID not in bag.dags:
        raise RuntimeError(f"cannot load {DAG_ID}: {bag.import_errors or sorted(bag.dags)}")
    dag = bag.dags[DAG_ID]
    selected = contact_centers.split(",")
    # All of the DC's contact centers are sent as [] (the DAG's default); a subset is named.
    conf = {
        "from": start,
        "to": end,
        "contact_centers": [] if selected == CONTACT_CENTERS else selected,
        "kinds": [],
        "purge_old": False,
    }
    # The DAG's first task, check_pools, asks Airflow's REST API whether the DC's pool exists: create the
    # pools and serve the API in this process, as the dag.test() suites do (unmeasured set-up).
    from include.gir_ops.bootstrap import ensure_pools
    from include.gir_ops.topology import load_topology
    from tests.airflow_api_server import serve_airflow_api

    ensure_pools(load_topology())
    with serve_airflow_api() as api:
        os.environ["AIRFLOW_CONN_GIR_AIRFLOW_API"] = api.connection_json()
        # Airflow 3.3.2's dag.test() crashes on success with Deadline Alerts; it never creates one.
        dag.deadline = None
        started = time.perf_counter()
        dag_run = dag.test(logical_date=None, run_conf=conf)
        elapsed = time.perf_counter() - started
    states: dict[str, int] = {}
    for ti in dag_run.get_task_instances():
        states[str(ti.state)] = states.get(str(ti.state), 0) + 1
    return {
        "seconds": elapsed,
        "setup_seconds": started - setup_started,
        "state": str(dag_run.state),
        "task_states": states,
    }


def child_bare_loop(url: str, start: str, end: str, contact_centers: str) -> dict[str, Any]:
    """In the child: the same POSTs, one after another, with a plain keep-alive requests.Session."""
    import requests

    posts = expected_posts(
        datetime.fromisoformat(start), datetime.fromisoformat(end), contact_centers.split(",")
    )
    session = requests.Session()
    session.auth = ("ops", os.environ[_PASSWORD_ENV])
    started = time.perf_counter()
    for cc, kind, from_ms, to_ms in posts:
        response = session.post(
            f"{url}/api/v2/ops/contact-centers/{cc}/{kind}",
            json={"operationName": "forceIndex", "from": from_ms, "to": to_ms, "purgeOld": False},
            timeout=30,
        )
        if response.status_code != 200 or response.json().get("statusCode") != 0:
            raise RuntimeError(f"bare POST failed: HTTP {response.status_code} {response.text[:200]}")
    elapsed = time.perf_counter() - started
    session.close()
    return {"seconds": elapsed, "posts": len(posts)}


# --- the benchmark ---------------------------------------------------------------------------------


def _run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [PYTHON, "-m", "benchmarks.reindex_overhead", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(_MARK):
            answer = json.loads(line[len(_MARK) :])
            if result.returncode == 0:
                return answer
    output = (result.stderr or result.stdout)[-2000:]
    raise RuntimeError(f"benchmark child {args[0]} failed (exit {result.returncode}): {output}")


def run(*, quick: bool = False, days: int | None = None, reuse_airflow_db: bool = False) -> list[Row]:
    """``reuse_airflow_db``: use the AIRFLOW_HOME and migrated DB of the calling process (smoke tests),
    instead of a fresh one migrated in the child (unmeasured). Quick mode re-indexes 2 days of one
    contact center (both kinds), named in the run's params: the smoke case stays a few seconds of
    Airflow's per-task overhead rather than seven."""
    from include.gir_ops.topology import parse_topology
    from include.gir_sim.server import GirSimulator

    range_days = days or (QUICK_DAYS if quick else FULL_DAYS)
    start, end = _range(range_days)
    contact_centers = CONTACT_CENTERS[:1] if quick else list(CONTACT_CENTERS)
    expected = expected_posts(start, end, contact_centers)
    with tempfile.TemporaryDirectory(prefix="gir-bench-reindex-") as tmp:
        root = Path(tmp)
        document = _topology(root / "gir-data")
        topology_path = root / "topology.yaml"
        topology_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        password = secrets.token_urlsafe(16)
        topology = parse_topology(topology_path.read_text(encoding="utf-8"), source=str(topology_path))
        with GirSimulator(topology, ops_password=password) as simulator:
            simulator.start()
            extra = {
                "GIR_TOPOLOGY": str(topology_path),
                "GIR_DATA_DIR": str(root / "gir-data"),
                _PASSWORD_ENV: password,
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
            if not reuse_airflow_db:
                home = root / "airflow-home"
                home.mkdir()
                extra |= {
                    "AIRFLOW_HOME": str(home),
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                }
            env = subprocess_env(extra)
            times = (start.isoformat(), end.isoformat(), ",".join(contact_centers))

            def fresh_record() -> None:
                simulator.state.reset(SITE)  # also clears the latency
                simulator.state.site(SITE).latency_ms = LATENCY_MS

            def bare() -> float:
                fresh_record()
                answer = _run_child(["--bare", simulator.url(SITE), *times], env)
                sent = _posts(simulator, SITE)
                if sent != expected:
                    raise RuntimeError(f"the bare loop sent {len(sent)} POSTs, expected {len(expected)}")
                return float(answer["seconds"])

            bare_seconds = [bare()]
            fresh_record()
            dag_answer = _run_child(
                ["--dag-run", *times, "--migrate" if not reuse_airflow_db else "--no-migrate"], env
            )
            dag_posts = _posts(simulator, SITE)
            api_calls = [r for r in simulator.state.requests(SITE) if r["path"].startswith("/api/")]
            if not quick:
                bare_seconds.append(bare())
    return _rows(
        range_days=range_days,
        start=start,
        end=end,
        contact_centers=contact_centers,
        expected=expected,
        dag_answer=dag_answer,
        dag_posts=dag_posts,
        api_calls=api_calls,
        bare_seconds=bare_seconds,
        quick=quick,
    )


def _posts(simulator: Any, site: str) -> list[tuple[str, str, int, int]]:
    """The forceIndex POSTs the DC's RWS accepted, in order, as (contact center, kind, from, to)."""
    sent = []
    for request in simulator.state.requests(site):
        if request["method"] != "POST" or "/contact-centers/" not in request["path"]:
            continue
        if request.get("http_status") != 200:
            continue
        _, contact_center_id, kind = request["path"].rsplit("/", 2)
        sent.append((contact_center_id, kind, request["body"]["from"], request["body"]["to"]))
    return sent


def _rows(
    *,
    range_days: int,
    start: datetime,
    end: datetime,
    contact_centers: list[str],
    expected: list[tuple[str, str, int, int]],
    dag_answer: dict[str, Any],
    dag_posts: list[tuple[str, str, int, int]],
    api_calls: list[dict[str, Any]],
    bare_seconds: list[float],
    quick: bool,
) -> list[Row]:
    dag_seconds = float(dag_answer["seconds"])
    bare_mean = sum(bare_seconds) / len(bare_seconds)
    ratio = dag_seconds / bare_mean
    succeeded = dag_answer["state"].endswith("success")
    windows = len(expected)
    per_call_dag = dag_seconds / max(len(dag_posts), 1)
    per_call_bare = bare_mean / windows
    bare_list = ", ".join(seconds(value) for value in bare_seconds)
    overhead = Row(
        benchmark="reindex_overhead",
        name=(
            f"re-index {range_days} days x {len(contact_centers)} contact center(s) x {len(KINDS)} kinds, "
            f"{LATENCY_MS} ms/call: DAG vs bare requests loop"
        ),
        ratio=ratio,
        target=f"<= {TARGET_RATIO}",
        passed=at_most(ratio, TARGET_RATIO) if succeeded else False,
        figures=(
            f"dag.test() {seconds(dag_seconds)} ({per_call_dag * 1000:.1f} ms per POST, run "
            f"{dag_answer['state']}, tasks {dag_answer['task_states']}) vs bare loop {bare_list} (mean "
            f"{seconds(bare_mean)}, {per_call_bare * 1000:.1f} ms per POST)"
        ),
        details={
            "dag_seconds": dag_seconds,
            "bare_seconds": bare_seconds,
            "dag_state": dag_answer["state"],
            "dag_setup_seconds": dag_answer.get("setup_seconds"),
            "task_states": dag_answer["task_states"],
        },
    )
    exact = sorted(dag_posts) == sorted(expected)
    duplicates = len(dag_posts) - len(set(dag_posts))
    count = Row(
        benchmark="reindex_overhead",
        name="re-index POSTs sent by the DAG / windows",
        ratio=len(dag_posts) / windows,
        target=f"= 1 (exactly {windows})",
        passed=exact and len(dag_posts) == windows,
        figures=(
            f"{len(dag_posts)} forceIndex POSTs recorded by the simulator for {windows} windows "
            f"([{start:%Y-%m-%d}, {end:%Y-%m-%d}) in {MAX_WINDOW_HOURS}h windows x {len(contact_centers)} x "
            f"{len(KINDS)}); each window exactly once: {'yes' if exact else 'NO'}; duplicates {duplicates}; "
            f"{len(api_calls)} API calls in all"
        ),
        timing=False,
        details={
            "posts": len(dag_posts),
            "contact_centers": contact_centers,
            "windows": windows,
            "exact": exact,
            "api_calls": len(api_calls),
            "quick": quick,
        },
    )
    return [overhead, count]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dag-run", nargs=3, metavar=("FROM", "TO", "CONTACT_CENTERS"))
    parser.add_argument("--bare", nargs=4, metavar=("URL", "FROM", "TO", "CONTACT_CENTERS"))
    parser.add_argument("--migrate", action="store_true")
    parser.add_argument("--no-migrate", dest="migrate", action="store_false")
    arguments = parser.parse_args()
    if arguments.dag_run:
        _emit(child_dag_run(*arguments.dag_run, migrate=arguments.migrate))
    elif arguments.bare:
        _emit(child_bare_loop(*arguments.bare))
    else:
        parser.error("run it through `python -m benchmarks --only reindex_overhead`")
