"""Many keystores at once, and a keystore that never answers: the check ends in bounded time with its report.

A FIFO nobody writes to stands in for a hung NFS/SMB mount (``HungKeystore`` in ``keystore_support``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import pytest

from include.gir_ops.keystore import reading
from include.gir_ops.keystore.model import MATCH, NOT_COMPARED, UNREADABLE
from include.gir_ops.keystore.reading import open_keystore
from include.gir_ops.keystore.report import failure_message
from include.gir_ops.topology import TopologyError, parse_topology
from include.gir_sim.demo_data import generate_keystores
from tests.include.keystore.keystore_support import (
    CONN,
    INSTANCES,
    PASSWORD,
    REPO_ROOT,
    RESCUE_AFTER_SECONDS,
    HungKeystore,
    row_of,
    run,
    topology_for,
    topology_yaml,
)

# --- parallel reads ------------------------------------------------------------------------------------


def test_reads_run_in_parallel(tmp_path: Path) -> None:
    """20 keystores, 10 workers: every read waits until 10 reads are in flight at once.

    A barrier proves the fan-out without timing anything (speed is measured in `make bench`): with fewer
    than 10 concurrent reads the barrier times out and the reads come back unreadable.
    """
    extra = "  - site: DC9\n    rcs:\n" + "".join(
        f'      - {{name: rcs-dc9-{i:02d}, keystore: "file://{tmp_path}/dc9/{i:02d}/keystore.p12", '
        f"password_conn_id: {CONN}}}\n"
        for i in range(16)
    )
    topology = topology_for(tmp_path, extra_rcs=extra)
    generate_keystores(topology, PASSWORD)
    all_ten_in_flight = threading.Barrier(10, timeout=20)

    def rendezvous(url: str) -> BinaryIO:
        all_ten_in_flight.wait()
        return open_keystore(url)

    reading.preload(open_keystore)
    report = run(topology, opener=rendezvous, parallel_reads=10)

    assert report.ok, report
    assert len(report.results) == 20
    with pytest.raises(ValueError, match="at least 1"):
        run(topology, parallel_reads=0)


# --- a keystore that never answers ---------------------------------------------------------------------


def test_keystore_that_never_answers_is_unreadable_and_the_report_comes_out(
    tmp_path: Path, hang: Callable[[Path], HungKeystore], caplog: Any
) -> None:
    """A FIFO nobody writes (a hung mount): unreadable after the per-read timeout, the others still read.

    One read at a time, with the hung keystore read second: the keystores after it are read only if the
    hung read gives its slot up.
    """
    topology = topology_for(tmp_path, read_timeout_seconds=2)
    assert topology.keystore_check.read_timeout_seconds == 2
    paths = generate_keystores(topology, PASSWORD)
    hang(paths["rcs-dc1-b"])
    caplog.set_level(logging.INFO)

    report = run(topology, parallel_reads=1)

    assert report.states == {**dict.fromkeys(INSTANCES, MATCH), "rcs-dc1-b": UNREADABLE}
    row = row_of(report, "rcs-dc1-b")
    assert row.detail.startswith("no answer within 2 s: ")
    assert "keystore_check.read_timeout_seconds" in row.detail
    assert row.sha256 is None
    message = failure_message(report.to_dict()) or ""
    assert "- rcs-dc1-b (DC1): unreadable: no answer within 2 s" in message
    assert report.asset_extra()["states"] == report.states
    assert report.asset_extra()["ok"] is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("rcs-dc1-b" in w and "no answer within 2 s" in w for w in warnings)


def test_hung_reference_means_nothing_to_compare_against(
    tmp_path: Path, hang: Callable[[Path], HungKeystore]
) -> None:
    topology = topology_for(tmp_path, read_timeout_seconds=2)
    paths = generate_keystores(topology, PASSWORD)
    hang(paths["rcs-dc1-a"])
    report = run(topology)
    assert report.states["rcs-dc1-a"] == UNREADABLE
    assert report.states["rcs-dc2-a"] == NOT_COMPARED
    assert (report.reference_error or "").startswith(
        "reference instance rcs-dc1-a is unreadable (no answer within 2 s: "
    )


def test_a_slow_read_that_keeps_answering_is_not_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeout is per open/read call, not per file: a store that answers every call is waited for.

    The check's clock is a fake one that only the trickling store moves: 0.4 s per read, 64 bytes at a
    time, so the whole file takes far longer than the 0.5 s limit while no single call does. One read at
    a time, so that the clock moves only while the trickling read is the one in flight.
    """
    topology = topology_for(tmp_path, read_timeout_seconds=0.5)
    paths = generate_keystores(topology, PASSWORD)
    data = paths["rcs-dc2-a"].read_bytes()
    clock = [1000.0]
    monkeypatch.setattr(reading, "time", SimpleNamespace(monotonic=lambda: clock[0]))

    class Trickle:
        def __init__(self) -> None:
            self.left = data

        def __enter__(self) -> Trickle:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self, _size: int = -1) -> bytes:
            clock[0] += 0.4
            chunk, self.left = self.left[:64], self.left[64:]
            return chunk

    def opener(url: str) -> BinaryIO:
        return Trickle() if "/dc2/" in url else open_keystore(url)  # type: ignore[return-value]

    report = run(topology, opener=opener, parallel_reads=1)
    assert clock[0] - 1000.0 > 10 * 0.5  # the file took at least ten times the limit
    assert report.states == dict.fromkeys(INSTANCES, MATCH)


@pytest.mark.parametrize("value", ["0", "-1", "301", ".nan", ".inf"])
def test_read_timeout_is_validated(tmp_path: Path, value: str) -> None:
    text = topology_yaml(tmp_path).replace(
        "keystore_check:\n", f"keystore_check:\n  read_timeout_seconds: {value}\n"
    )
    with pytest.raises(TopologyError) as raised:
        parse_topology(text, "test-topology")
    key = "keystore_check.read_timeout_seconds"
    assert f"{key}: read_timeout_seconds must be more than 0 and at most 300 seconds" in str(raised.value)


def test_read_timeout_defaults_to_30_seconds(tmp_path: Path) -> None:
    assert topology_for(tmp_path).keystore_check.read_timeout_seconds == 30
    with pytest.raises(ValueError, match="read_timeout_seconds must be more than 0"):
        run(topology_for(tmp_path), read_timeout_seconds=0)


_EXITS = """
import json, os, sys

from include.gir_ops.keystore.check import check_replication
from include.gir_ops.topology import parse_topology

mode, text = sys.argv[1], sys.argv[2]
topology = parse_topology(text, "subprocess-topology")
if mode == "execution_timeout":
    # What a task's execution_timeout does: SIGALRM raises AirflowTaskTimeout in the main thread.
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    try:
        with timeout(1):  # the topology gives every read 300 s: the task's timeout comes first
            check_replication(topology, get_password=lambda _: None)
    except AirflowTaskTimeout:
        print(json.dumps({"stopped": "AirflowTaskTimeout"}), flush=True)
    sys.exit(0)
report = check_replication(topology, get_password=lambda _: None)
print(json.dumps({"states": report.states, "ok": report.ok}), flush=True)
if mode == "os_exit":
    os._exit(0)  # how Airflow's task runner ends the task process (supervisor._fork_main)
sys.exit(0)  # interpreter exit: joins every non-daemon thread (airflow dags test, dag.test(), scripts)
"""


@pytest.mark.parametrize("mode", ["interpreter_exit", "os_exit", "execution_timeout"])
def test_process_with_a_hung_keystore_ends(tmp_path: Path, mode: str) -> None:
    """The whole process ends although a reading thread is stuck in open() on a FIFO for good.

    Airflow's task runner ends the task process with ``os._exit`` (no thread is joined), but
    ``airflow dags test``, ``dag.test()`` and scripts end through the interpreter, which joins every
    non-daemon thread, concurrent.futures' workers included; and the execution timeout raises in the
    main thread, which must then not wait for the stuck read either.
    """
    text = topology_yaml(tmp_path, read_timeout_seconds=300 if mode == "execution_timeout" else 5)
    paths = generate_keystores(parse_topology(text, "t"), PASSWORD)
    paths["rcs-dc3-a"].unlink()
    os.mkfifo(paths["rcs-dc3-a"])  # nobody ever writes: the child's reading thread stays stuck
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _EXITS, mode, text],
            check=False,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RESCUE_AFTER_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not end within {RESCUE_AFTER_SECONDS:g} s ({mode}): {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if mode == "execution_timeout":
        assert result == {"stopped": "AirflowTaskTimeout"}
    else:
        assert result == {
            "states": {**dict.fromkeys(INSTANCES, MATCH), "rcs-dc3-a": UNREADABLE},
            "ok": False,
        }
