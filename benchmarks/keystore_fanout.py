"""Benchmark 4, keystore check fan-out: 100 RCS instances whose keystore reads each take 50 ms.

The check (``keystore.check.check_replication``, what the DAG's task calls) reads real PKCS12 keystores
written by the demo data generator; the 50 ms of storage latency per read is injected through its
``opener`` (the function that opens a keystore URL), so only the waiting is simulated, not the work.
The baseline is one instance's read (``keystore.reading.read_keystore`` with the same opener: latency,
streamed SHA-256, PKCS12 opening), median of several. A check that read one keystore after another would take
100 x that; the ratio is wall time / (instances x one read), so 1.0 means no parallelism at all.

The target follows from ``parallel_reads`` (16 by default, the DAG's param): 100 reads in rounds of 16
need at least ceil(100 / 16) = 7 read times, an ideal ratio of 0.07; within 1.5x of that passes.
"""

from __future__ import annotations

import logging
import math
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from benchmarks import REPO_ROOT, Row, at_most, median, ms

INSTANCES = 100
QUICK_INSTANCES = 5
LATENCY_SECONDS = 0.050
SINGLE_READ_SAMPLES = 5
TARGET_SLACK = 1.5  # allowed above the ideal ratio ceil(n / parallel_reads) / n
_QUIET = logging.getLogger("benchmarks.keystore_fanout.report")
_QUIET.setLevel(logging.WARNING)  # the check logs its whole report table; not wanted in the bench output


def _topology_document(instances: int, root: Path) -> dict[str, Any]:
    """The default topology with ``instances`` RCS instances spread over its DCs, keystores under root."""
    document = yaml.safe_load((REPO_ROOT / "include/config/topology.yaml").read_text(encoding="utf-8"))
    sites = document["data_centers"]
    for dc in sites:
        dc["rcs"] = []
    for index in range(instances):
        dc = sites[index % len(sites)]
        name = f"rcs-{dc['site'].lower()}-{index:03d}"
        dc["rcs"].append(
            {
                "name": name,
                "keystore": f"file://{root}/{dc['site'].lower()}/{name}/keystore.p12",
                "password_conn_id": "gir_rcs_keystore",
            }
        )
    document["keystore_check"]["reference"] = sites[0]["rcs"][0]["name"]
    return document


def slow_opener(latency_seconds: float) -> Callable[[str], BinaryIO]:
    """Open a file:// keystore after waiting like a remote store would (the wait releases the GIL)."""
    from include.gir_sim.demo_data import local_path

    def opener(url: str) -> BinaryIO:
        time.sleep(latency_seconds)
        return local_path(url).open("rb")

    return opener


def run(
    *,
    quick: bool = False,
    instances: int | None = None,
    latency_seconds: float = LATENCY_SECONDS,
    parallel_reads: int | None = None,
) -> list[Row]:
    """One row at the DAG's default ``parallel_reads``; its figures also show all reads at once."""
    from include.gir_ops.keystore.check import check_replication
    from include.gir_ops.keystore.model import targets_from_topology
    from include.gir_ops.keystore.reading import read_keystore
    from include.gir_ops.topology import DEFAULT_KEYSTORE_PARALLEL_READS, parse_topology
    from include.gir_sim.demo_data import generate_keystores

    count = instances or (QUICK_INSTANCES if quick else INSTANCES)
    width = parallel_reads or DEFAULT_KEYSTORE_PARALLEL_READS
    password = secrets.token_urlsafe(16)
    opener = slow_opener(latency_seconds)
    with tempfile.TemporaryDirectory(prefix="gir-bench-keystore-") as tmp:
        topology = parse_topology(yaml.safe_dump(_topology_document(count, Path(tmp))), source="benchmark")
        generate_keystores(topology, password)
        now = datetime.now(UTC)

        def check(reads: int) -> float:
            started = time.perf_counter()
            report = check_replication(
                topology,
                parallel_reads=reads,
                get_password=lambda _conn_id: password,
                now=now,
                opener=opener,
                logger=_QUIET,
            )
            elapsed = time.perf_counter() - started
            if not report.ok or len(report.results) != count:
                raise RuntimeError(f"the benchmark keystores should all match: {report.summary()}")
            return elapsed

        # Unmeasured: the first check imports what a running task already has (airflow.sdk, cryptography).
        check(width)
        target = targets_from_topology(topology)[0]
        singles = []
        for _ in range(SINGLE_READ_SAMPLES):
            started = time.perf_counter()
            reading = read_keystore(target, password, now=now, expiry_warning_days=30, opener=opener)
            singles.append(time.perf_counter() - started)
            if not reading.opened:
                raise RuntimeError(f"the benchmark keystore could not be opened: {reading.error}")
        single = median(singles)
        wall = check(width)
        all_at_once = None if quick else check(count)
    serial = count * single
    ratio = wall / serial
    ideal = math.ceil(count / width) / count
    limit = round(ideal * TARGET_SLACK, 3)
    figures = (
        f"check {ms(wall)} vs one read {ms(single)} (x{count} = {serial:.2f} s one after another): "
        f"speed-up {serial / wall:.1f}x"
    )
    if all_at_once is not None:
        figures += f"; with parallel_reads={count}: {ms(all_at_once)}, speed-up {serial / all_at_once:.1f}x"
    return [
        Row(
            benchmark="keystore_fanout",
            name=f"keystore check fan-out, {count} RCS x {latency_seconds * 1000:.0f} ms",
            ratio=ratio,
            target=f"<= {limit} (ideal {ideal:.2f} at parallel_reads={width})",
            passed=at_most(ratio, limit),
            figures=figures,
            details={
                "instances": count,
                "parallel_reads": width,
                "wall_seconds": wall,
                "single_read_seconds": single,
                "speed_up": serial / wall,
                "all_at_once_seconds": all_at_once,
            },
        )
    ]
