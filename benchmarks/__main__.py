"""``python -m benchmarks`` (``make bench``): run the benchmarks, print one table, write docs/benchmarks.md.

    python -m benchmarks                      # everything, full size; writes docs/benchmarks.md
    python -m benchmarks --quick              # tiny smoke sizes; prints only (unless --output)
    python -m benchmarks --only shipping --only keystore_fanout --no-write

``--only`` and ``--quick`` print without writing docs/benchmarks.md unless ``--output`` is given, so a
partial or smoke table never replaces the full one. Exit status 1 when a target was missed or a
benchmark failed to run (the table is written anyway).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import REPO_ROOT, Row, format_ratio, format_table

# One name a line: helpers adding a benchmark add a line.
BENCHMARKS = (
    "parse_cost",
    "dag_reserialize",
    "shipping",
    "reindex_overhead",
    "engine_backfill",
    "keystore_fanout",
    "readiness_status",
)
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"

HOW_MEASURED = """\
## How it is measured

Every row is a ratio of two things measured side by side in the same run, because machines that run
`make bench` are often shared (test suites on the same cores) and absolute times move from run to run;
the absolute figures are shown next to each ratio, and the header gives the load average at the start
and the end. `make bench` takes about 15 minutes on 2 quiet cores (the header lists each benchmark's
time; the engine benchmark also waits for `/tmp/gir/engine.lock`) and needs about 25 GiB free for the
8 GiB shipping row; `python -m benchmarks --quick` runs smoke sizes in a few minutes, `--only NAME` one
benchmark. Rows marked *info* explain another row and are not judged. A missed target is listed under
the table with where its time goes, worked out from the same run's profile figures (`Row.why_missed`).
`make test` only runs a tiny smoke case of each benchmark (`tests/benchmarks/test_bench_smoke.py`) and
never asserts a speed.

**Parse cost** (`benchmarks/parse_cost.py`). By Airflow 3.3's dag-processor code itself: one worker
process imports the dag-processor's modules, freezes the garbage collector as the processor does before
its parsing loop, pre-imports the `airflow.*` modules every measured file imports
(`parsing_pre_import_modules`), then forks one child per sample; the child times
`airflow.dag_processing.processor._parse_file` (the DAG stability check, a `DagBag` of the one file, the
serialization of its DAGs) plus the encoding of the result frame the processor receives, nothing else
(no interpreter start-up, no Airflow import). The baseline is a one-task TaskFlow DAG (no schedule, no
params) written to a temp folder, parsed the same way; samples of all files are interleaved round by
round and the median is taken. The ratio is with bytecode cached (a deployment's steady state; the `.pyc`
go to a temp `PYTHONPYCACHEPREFIX`, never into the repository); the figures also give it without a
bytecode cache (`PYTHONDONTWRITEBYTECODE=1` and no `__pycache__`, as in the dev environment, or a
read-only code mount without precompiled `.pyc`), where every parse compiles our modules from source.
The *parse breakdown* rows time single snippets in forks of the same worker, to show where a file's time
goes: anything a DAG file imports through `include.gir_ops` (not `airflow.*` modules it imports itself,
which the processor pre-imports) is paid again on every parse.

*What was removed, and what is left.* Found by profiling parses in the processor's state and removed:
`requests` at import (about 1.1x a trivial parse on its own; now loaded at the first RWS call); a custom
Asset URI scheme that made Airflow scan every provider; pure-Python YAML (libyaml now); the logic modules
imported by DAG files for a constant or a class (`rws`, `windows`, `keystore`, `backup`, `failover`: the
tasks import them when they run, and `tests/dags/test_dag_integrity.py` pins what a parse may import);
`Field(default_factory=list)` in the topology, which made pydantic copy `sys.modules` (~2 ms a field); a
validator compiled for each topology section at import (the models now defer it: the one validation of
the whole topology builds one validator); the
JSON Schema 2020-12 metaschema check Airflow runs on every Param many times per parse (the trigger forms
declare draft-07: see the two *100 Param schema checks* rows). No DAG file calls the network or reads a
file beyond the topology (also tested). What is left above the trivial DAG, and why it stays: the
validated topology (the *topology import + load_topology()* row) is paid by every file, because
a bad topology must fail parsing with a clear message and the processor keeps no project
module between parses; and the DAGs themselves: a DAG with a cron timetable, params and several tasks
costs Airflow more to build and serialize than a one-task DAG without them (Airflow re-checks each Param
per task while serializing). `gir_eservices_failover.py` builds 11 tasks, two HITL included, with 5 params;
`gir_es_reindex.py` builds one DAG per DC (each with 5 params; a DC without re-index enabled gets an
unscheduled one), so its cost grows with every DC. The target is 1.75x the trivial DAG per file, and the
*cost of each added re-index DC* row parses the same file against the example topology reduced or grown
to 1, 5 and 20 re-index DCs beside the primary (copies of DC2 with their own site names,
`parse_cost.reindex_topology`): the slope from 1 to 20 DCs, over the trivial parse, must stay at or under
0.35 (the figures also give the slope from 1 to 5). The plugins folder is the project's (its custom
timetable must be found to serialize the re-index DAGs), loaded lazily in the parse that needs it, as
Airflow does by default. A missed file row is split, under the table, into the trivial DAG's cost, a probe
timing the file's own module-level project imports plus `load_topology()` in a fork of the same worker
(Airflow's decorators imported untimed, since the trivial DAG pays them), and the rest: its DAGs.

**DAG folder reserialize** (`benchmarks/dag_reserialize.py`). One whole `airflow dags reserialize` process
(interpreter start, the Airflow import, parsing every file of the DAGs folder, writing the serialized DAGs
to a migrated SQLite database in a temp AIRFLOW_HOME with the project's plugins folder; bytecode cached)
of the project's `dags/` against one of a folder holding only the trivial DAG, for the example topology
and for a topology with 20 re-index DCs; 3 samples each, interleaved, medians compared. No target (the
issue sets none): information beside the per-file rows, showing what a whole folder costs over the least
any DAGs folder costs.

**Shipping** (`benchmarks/shipping.py`). A backup generated by the demo data generator
(`generate_index_backups`: an empty file, a 7-byte file, a non-ASCII name, then sizes growing
geometrically; 200 files, the largest ~139 MiB at 2 GiB) is shipped by the DAG's own functions
(`manifest_task`, `copy_task`, `verify_and_publish_task`) in a whole `python -m benchmarks.shipping --ship`
process: interpreter start and every import (Airflow's included) count, as they do for the peers. The
peers, each as whole processes: `rclone copy --checksum` followed by `rclone check --one-way` (compares
hashes) or by `rclone check --download --one-way` (reads the copy back and compares bytes, as ours reads
its copy back), Debian's `rclone` (`make bench` installs it when missing and run as root; without it the
rclone rows say so); and `cp -r` followed by `sync`, no verification: what the disk can do. Neither rclone
mode fsyncs its copy; ours fsyncs every file and folder, writes `MANIFEST.json` and publishes with one
rename. Page cache: before every run the previous copy is deleted, `sync` flushes dirty pages and the
source files are dropped from the page cache (`posix_fadvise(DONTNEED)`), so every run starts from the
same cold source. The four sides run in one order, then in the reverse order; each ratio compares the
means of the same run; MB/s is the backup's size over the mean wall time, CPU is the processes' user +
system time. Only the faster rclone mode is judged (<= 1.0); the other is shown beside it. The *profile*
row splits our process into interpreter start and exit, imports, listing, copy (with its CPU time) and
read-back + manifest + publish, and gives hashlib's SHA-256 speed on this CPU: the two SHA-256 passes the
guarantees need (the source while copying, the copy when read back) are the floor no peer pays (rclone
hashes with MD5 on both sides, or compares bytes; `cp` hashes nothing). Peak RSS is our process's own
`ru_maxrss` at 512 MiB, 2 GiB and 8 GiB (the 8 GiB row is skipped, saying so, when the disk has less than
20 GiB free). The *bandwidth cap* rows ship the 512 MiB backup with `bandwidth_limit_mbps: 200` and
without, 3 times each, alternating: copy rate (bytes over the copy task's wall time) against the cap,
and the copy's CPU time (all threads, `RUSAGE_SELF`) capped over uncapped, medians compared (one copy's
CPU time moves by a third from one run to the next, so one run of each says little). Temp data lives
under the folder named in the rows and is
deleted afterwards; `--workdir` (or `GIR_BENCH_WORKDIR`) puts it elsewhere.

*What was found and fixed in ours.* Profiled on 2 GiB (wall time of each step of the old loop, then the
CPU time of each process and phase), the old copy did read, SHA-256, write and fsync one after another in
one thread: the CPU idled during every per-file fsync and the disk idled while a chunk was hashed; the
read-back hashed one file at a time; a cold source was read with the default readahead; and the process
spent seconds tearing down the interpreter after its work. Now the copy reads in one thread, hashes in
another and writes in a third, with fsync in four background threads (each file kept open until its
fsync succeeded, so a writeback error still reaches our fsync; at most 64 files wait); the source is
read with `POSIX_FADV_SEQUENTIAL` (about half the time to read the cold backup in a test of its own);
the read-back hashes two files at a time (hashlib releases the GIL); and the benchmark's shipping process
ends as an Airflow task process ends (`os._exit` after its atexit functions; the task SDK's supervisor
does the same). What stays ours by design: two SHA-256 passes, an fsync of every file and folder, and a
Python process that imports Airflow (about 2 s of CPU before the first byte on this machine; a task
process forked by a Celery worker has it already, a fresh process does not).

**Re-index overhead** (`benchmarks/reindex_overhead.py`). A manual run of `gir_es_reindex_dc2`
(`dag.test(run_conf={from, to})`, isolated AIRFLOW_HOME with a migrated SQLite DB, connections from
`AIRFLOW_CONN_*`) with a topology override giving DC2 3 contact centers, screen recording and 24-hour
windows, against the simulator with 20 ms of latency on every API call; the simulator runs in the parent
process, the DAG run and the baseline in child processes. The baseline sends the same POSTs (same paths,
bodies and order) one after another from a plain `requests.Session`. The POST count comes from the
simulator's record and is compared, window by window, with `reindex.windows.split_windows`. Full mode runs the
bare loop before and after the DAG and takes the mean. The 1.5 target is ours; the issue gives none.
`dag.test()` runs the 7 tasks (plan + 6 mapped) one after another in one process, each with Airflow's
per-task start/finish calls through the in-process execution API; the scheduler and executor of a real
deployment are not in the measurement.

**Engine backfill** (`benchmarks/engine_backfill.py`). The engine tests' stack (`tests/engine/
engine_stack.py`: API server, scheduler, dag-processor, triggerer, one Celery worker with concurrency 4
and the deployments' Celery configuration (`include/gir_ops/celery_worker.py`: `requests` and the HTTP
provider's hook preloaded before the worker forks), `[core] parallelism` 8, this machine's PostgreSQL and
Redis, a throw-away database; it takes
`/tmp/gir/engine.lock` as the engine tests do, or set `GIR_ENGINE_LOCK_HELD=1` when the caller holds it),
with DC2 given 3 contact centers, screen recording (2 kinds), 24-hour windows and an RWS pool of 4 slots,
and its simulator answering every call 20 ms late. After unpausing `gir_es_reindex_dc2` and letting its
scheduled run finish (unmeasured), `POST /api/v2/backfills` over the 30 days before it (`max_active_runs`
4); the wall time runs from that POST until every backfill run is finished and the backfill completed.
Against `dag.test()` of the same 30 runs (logical date = each engine run's data-interval end, which gives
the same interval; checked) one after another in one process on SQLite, with an in-process simulator with
the same latency. Both sides' forceIndex POSTs are counted by their simulator. The per-task-instance row
gives the engine's extra wall time over `dag.test()` per task instance, and from Airflow's own records the
mean scheduled -> queued and queued -> running waits and the mean task duration on both sides. Engine
start-up is not counted.

**Keystore fan-out** (`benchmarks/keystore_fanout.py`). `keystore.check_replication` over 100 RCS
instances whose PKCS12 keystores (from `generate_keystores`) are read through an `opener` that waits
50 ms before opening each file, against one instance's read (`read_keystore` with the same opener, median
of 5). Ratio = wall time / (100 x one read): 1.0 would mean no parallelism; the target is 1.5x the ideal
ceil(100 / parallel_reads) / 100 at the DAG's default `parallel_reads`.

**Readiness status** (`benchmarks/readiness_status.py`). A child process with its own AIRFLOW_HOME and a
migrated SQLite DB gets a year of history inserted in bulk (for this benchmark only; the readiness tests
use real DAG runs): 365 runs per scheduled DAG per DC (the re-index DAGs of DC2 and DC3, the backup
shipping, the keystore check once per DC) with their task instances, 50 contact centers per re-indexing DC
(DC2 both kinds, DC3 recordings only) and the return value of every mapped `send`, an Asset event per
keystore check and per shipped backup, and weekly failover drills with their audit record. Then
`GET /gir-readiness/api/status` is asked through Airflow's API app (the plugin mounted as the API server
mounts it, a JWT in the header) 60 times after 3 warm-up requests; the RWS probes answer from a stub (the
live probe is a separate, cached cost: one short GET per DC at most every 30 s). Ratio = p95 / 300 ms,
the issue's budget. The figures also give Airflow's own `GET /api/v2/dags/~/dagRuns?limit=100` on the same
database, measured the same way, for scale.
"""


def _machine() -> dict[str, str]:
    try:
        from importlib.metadata import version

        airflow_version = version("apache-airflow")
    except Exception:
        airflow_version = "unknown"
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "memory": memory,
        "python": platform.python_version(),
        "airflow": airflow_version,
        "platform": platform.platform(),
        "load": load,
    }


def _run_one(name: str, quick: bool, workdir: Path | None) -> tuple[list[Row], float]:
    module = importlib.import_module(f"benchmarks.{name}")
    started = time.perf_counter()
    kwargs: dict[str, object] = {"quick": quick}
    if name == "shipping" and workdir is not None:
        kwargs["workdir"] = workdir
    try:
        rows = module.run(**kwargs)
    except Exception as exc:
        traceback.print_exc()
        rows = [Row(name, f"{name}: did not run", None, "-", False, f"ERROR: {type(exc).__name__}: {exc}")]
    if quick:
        for row in rows:
            if row.timing and not row.info:
                row.passed = None  # smoke sizes say nothing about speed
    return rows, time.perf_counter() - started


def _load_remark(machine: dict[str, str]) -> str:
    """Whether other work shared the cores: a load average above the core count says it did."""
    loads = [
        float(value)
        for text in (machine.get("load_at_start", ""), machine["load"])
        for value in text.split(" / ")
        if value.replace(".", "", 1).isdigit()
    ]
    if loads and max(loads) > float(machine["cores"]):
        return (
            f" (above {machine['cores']}: other work shared the cores with this run; each ratio still "
            "compares two things measured side by side, the absolute figures are slower)"
        )
    return f" (at most {machine['cores']}: the cores were not shared with other work)"


def _missed_section(missed: Sequence[Row]) -> list[str]:
    """Each missed target with where its time goes, in this run's own figures (``Row.why_missed``)."""
    if not missed:
        return []
    lines = ["## Missed targets: where the time goes", ""]
    for row in missed:
        why = row.why_missed or "the benchmark did not run far enough to profile it (see its figures)."
        lines.append(f"- **{row.name}** ({format_ratio(row.ratio)}, target {row.target}): {why}")
    return [*lines, ""]


def render(rows: Sequence[Row], machine: dict[str, str], *, quick: bool, durations: dict[str, float]) -> str:
    judged = [row for row in rows if row.passed is not None and not row.info]
    missed = [row for row in judged if not row.passed]
    ran = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in durations.items())
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`); do not edit by hand.",
        "",
        f"- Date: {machine['date']}{' (QUICK smoke sizes: not a measurement)' if quick else ''}",
        f"- Machine: {machine['cores']} cores (`os.cpu_count()`), {machine['memory']} memory, "
        f"{machine['platform']}",
        f"- Python {machine['python']}, Apache Airflow {machine['airflow']}",
        f"- Load average (1/5/15 min) when it started: {machine.get('load_at_start', '-')}; when it "
        f"finished: {machine['load']}{_load_remark(machine)}",
        f"- Benchmarks run: {ran}",
        "",
        format_table(rows),
        "",
        f"**{len(judged) - len(missed)} of {len(judged)} targets met.**"
        + (" Missed: " + "; ".join(row.name for row in missed) + "." if missed else ""),
        "",
        *_missed_section(missed),
        HOW_MEASURED,
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke sizes (what make test runs)")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only this one (repeatable)")
    parser.add_argument("--output", type=Path, help=f"where to write the table (default {DEFAULT_OUTPUT})")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--workdir", type=Path, help="where the shipping benchmark writes its GiBs")
    args = parser.parse_args(argv)

    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    load_at_start = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    rows: list[Row] = []
    durations: dict[str, float] = {}
    for name in names:
        print(f"== {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        found, elapsed = _run_one(name, args.quick, args.workdir)
        rows += found
        durations[name] = elapsed
    document = render(
        rows, _machine() | {"load_at_start": load_at_start}, quick=args.quick, durations=durations
    )
    print(document.split("## How it is measured")[0].rstrip())
    output = args.output or (None if args.quick or args.only else DEFAULT_OUTPUT)
    if output is not None and not args.no_write:
        output.write_text(document + "\n", encoding="utf-8")
        print(f"\nwritten to {output}", file=sys.stderr)
    failed = [row for row in rows if row.passed is False and not row.info]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
