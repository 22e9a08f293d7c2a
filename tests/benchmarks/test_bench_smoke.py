"""One tiny smoke case of each benchmark, so they cannot rot.

They run the same code as ``make bench`` at smoke sizes (1, 2 and 4 MiB backups and an 8 Mbit/s cap,
2-day ranges, 5 keystores, one parse or reserialize sample) and check that each produces its rows, with a
ratio, and that what was measured really happened (the POSTs the simulator recorded, the files that were
shipped, one DAG per re-index DC). The engine side of ``engine_backfill`` needs the engine stack and its
lock, so only its ``dag.test()`` side runs here; ``make bench`` runs both. No speed is asserted here:
speed is only measured by ``make bench``, on purpose, because test machines are shared and noisy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import Row, format_table
from benchmarks.__main__ import main, render


def _has_ratio(row: Row) -> None:
    assert row.ratio is not None and row.ratio > 0, row
    assert row.figures, row
    assert row.target, row


def test_parse_cost_smoke() -> None:
    from benchmarks import parse_cost

    rows = parse_cost.run(quick=True)
    files = {row.details["file"]: row for row in rows if "file" in row.details}
    assert set(files) == {path.name for path in parse_cost.dag_files()}
    for row in files.values():
        _has_ratio(row)
        assert row.target == "<= 1.75"
        assert row.details["import_errors"] == {}, row.details["import_errors"]
        assert row.details["dags"], f"{row.name} parsed no DAG"
        assert row.details["samples"] == 1
    assert "gir_es_reindex_dc2" in files["gir_es_reindex.py"].details["dags"]
    (scaling,) = [row for row in rows if "per_dc_seconds" in row.details]
    _has_ratio(scaling)
    assert scaling.target == "<= 0.35"
    # One DAG per DC (the primary's unscheduled): the topologies really had 1, 5 and 20 re-index DCs.
    dags = scaling.details["dags"]
    assert (dags[5] - dags[1], dags[20] - dags[1]) == (4, 19)
    assert dags[1] == 2, "the primary's DAG and the one re-index DC's"


def test_shipping_smoke(tmp_path: Path) -> None:
    import shutil

    from benchmarks import shipping

    rows = shipping.run(quick=True, workdir=tmp_path)
    by_peer = {row.details["peer"]: row for row in rows if "peer" in row.details}
    large = shipping.QUICK_SIZES["large"]
    if shutil.which("rclone"):
        assert set(by_peer) == {"rclone-check", "rclone-download", "cp-sync"}
        judged = [by_peer[mode] for mode in ("rclone-check", "rclone-download") if not by_peer[mode].info]
        assert len(judged) == 1 and judged[0].target == "<= 1.0", "exactly the faster rclone mode is judged"
    else:
        assert set(by_peer) == {"cp-sync"}
        (missing,) = [row for row in rows if row.details.get("rclone", "x") is None]
        assert "apt-get install rclone" in missing.figures
    for row in by_peer.values():
        _has_ratio(row)
        # Every run of ours really shipped the whole backup: all files (plus the ready marker) and bytes.
        assert row.details["shipped_bytes"] == [large]
        assert row.details["shipped_files"] == [shipping.QUICK_FILES + 1]
        assert len(row.details["peer_seconds"]) == 1
        # A judged comparison explains a miss with its own run's phases; the info row needs none.
        assert ("importing Airflow" in row.why_missed) == (not row.info), row
    (profile,) = [row for row in rows if row.name.startswith("shipping profile")]
    assert profile.info and profile.details["hash_bytes_per_second"] > 0
    assert profile.details["phases"]["copy_seconds"] > 0
    rss = [row for row in rows if row.name.startswith("shipping peak RSS")]
    assert [row.details["size"] for row in rss] == [large, shipping.QUICK_SIZES["huge"]]
    assert all(row.details["small_shipped_files"] == shipping.QUICK_FILES + 1 for row in rss)
    rate, cpu = [row for row in rows if row.name.startswith("shipping bandwidth cap")]
    _has_ratio(rate)
    _has_ratio(cpu)
    assert rate.details["cap_bytes_per_second"] == shipping.QUICK_CAP_MBPS * 1e6 / 8
    assert "more CPU capped" in cpu.why_missed
    assert list(tmp_path.iterdir()) == [], "the benchmark must delete its temp data"


def test_reindex_overhead_smoke(airflow_db: Path) -> None:
    from benchmarks import reindex_overhead

    overhead, count = reindex_overhead.run(quick=True, reuse_airflow_db=True)
    _has_ratio(overhead)
    assert overhead.details["dag_state"].endswith("success"), overhead.details
    # 2 days in 24h windows x 1 contact center (named in the run's params) x 2 kinds: each window
    # exactly once, and nothing else sent to RWS.
    assert count.details["contact_centers"] == reindex_overhead.CONTACT_CENTERS[:1]
    assert count.details["windows"] == 2 * 1 * 2
    assert count.details["posts"] == 4
    assert count.details["exact"] is True
    assert count.details["api_calls"] == 4 + 1  # the POSTs and the plan's one reachability GET
    assert count.ratio == 1.0
    assert count.passed is True


def test_dag_reserialize_smoke() -> None:
    from benchmarks import dag_reserialize

    rows = dag_reserialize.run(quick=True)
    assert len(rows) == 2
    for row in rows:
        _has_ratio(row)
        assert row.info
        assert len(row.details["seconds"]) == len(row.details["trivial_seconds"]) == 1


def test_engine_backfill_baseline_smoke(tmp_path: Path) -> None:
    """The dag.test() side of the engine benchmark on two days (the engine side needs the engine stack and
    its lock: it runs in make bench only): every run succeeds over the interval it was given, and each sends
    one forceIndex per contact center and kind (24-hour windows)."""
    from datetime import UTC, datetime, timedelta

    from benchmarks import engine_backfill

    end = datetime(2026, 11, 20, 1, tzinfo=UTC)  # 02:00 in Paris, DC2's schedule tick
    runs = [
        {
            "data_interval_start": (end - timedelta(days=d + 1)).isoformat(),
            "data_interval_end": (end - timedelta(days=d)).isoformat(),
        }
        for d in range(2)
    ]
    tested = engine_backfill.dag_tests(runs, tmp_path)
    assert [r["state"] for r in tested["runs"]] == ["success", "success"] or all(
        r["state"].endswith("success") for r in tested["runs"]
    )
    assert engine_backfill._intervals(tested["runs"]) == engine_backfill._intervals(runs)
    assert tested["posts"] == 2 * len(engine_backfill.CONTACT_CENTERS) * 2
    assert tested["seconds"] > 0 and tested["durations"]


def test_keystore_fanout_smoke() -> None:
    from benchmarks import keystore_fanout

    (row,) = keystore_fanout.run(quick=True)
    _has_ratio(row)
    assert row.details["instances"] == 5
    assert row.details["parallel_reads"] == 16
    assert row.details["single_read_seconds"] > 0


def test_readiness_status_smoke() -> None:
    from benchmarks import readiness_status

    (row,) = readiness_status.run(quick=True)
    _has_ratio(row)
    assert row.passed is None  # smoke sizes are never judged
    # The history was really there and really read: 3 days of runs, every pair of DC2 in the status.
    assert row.details["runs"] == 3 * (2 + 1 + 3)
    assert row.details["xcoms"] == 3 * (2 * 2 + 2 * 1)
    assert row.details["dc2_pairs"] == 4
    assert 4 * 2 * 24 <= row.details["dc2_covered_hours"] <= 4 * 3 * 24  # runs end "now", the window earlier
    assert row.details["verdict"].startswith("DC2 not ready: Elasticsearch index at DC2 misses")


def test_report_has_machine_table_and_method() -> None:
    rows = [
        Row("shipping", "shipping 2 GiB", 0.8, "<= 1.0", True, "ours 8 s vs shell 10 s"),
        Row(
            "parse_cost",
            "parse x.py",
            1.7,
            "<= 1.5",
            False,
            "median 70 ms vs trivial 41 ms",
            why_missed="the topology costs 20 ms",
        ),
        Row("parse_cost", "parse breakdown: requests", 1.0, "-", None, "median 41 ms", info=True),
        Row("shipping", "shipping 8 GiB", 0.9, "<= 1.0", True, "", why_missed="not shown: target met"),
    ]
    machine: dict[str, Any] = {
        "date": "2026-11-26 03:00 UTC",
        "cores": "2",
        "memory": "23.4 GiB",
        "python": "3.11.7",
        "airflow": "3.3.2",
        "platform": "Linux",
        "load": "1 / 1 / 1",
        "load_at_start": "0.5 / 0.4 / 0.3",
    }
    text = render(rows, machine, quick=False, durations={"shipping": 1.0})
    assert "2 cores" in text and "Airflow 3.3.2" in text and "2026-11-26" in text
    assert "when it started: 0.5 / 0.4 / 0.3; when it finished: 1 / 1 / 1 (at most 2: the cores were" in text
    busy = render(rows, machine | {"load": "2.5 / 1 / 1"}, quick=False, durations={"shipping": 1.0})
    assert "finished: 2.5 / 1 / 1 (above 2: other work shared the cores with this run" in busy
    assert format_table(rows) in text
    assert "2 of 3 targets met" in text and "Missed: parse x.py" in text
    # Every missed target is explained under the table by its own run's figures; met ones are not.
    missed = text.split("## Missed targets: where the time goes")[1].split("## How it is measured")[0]
    assert "- **parse x.py** (1.70, target <= 1.5): the topology costs 20 ms" in missed
    assert "not shown" not in text
    assert "## How it is measured" in text
    assert "| info |" in text


def test_cli_quick_prints_the_table_and_writes_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "bench.md"
    assert main(["--quick", "--only", "keystore_fanout", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "| keystore check fan-out, 5 RCS x 50 ms |" in printed
    assert "QUICK smoke sizes" in output.read_text(encoding="utf-8")


def test_benchmark_children_find_the_project_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-index DAGs' timetable is registered by plugins/: without it every benchmark that parses or
    runs them fails outside pytest (whose conftest sets the folder for the whole suite)."""
    from benchmarks import REPO_ROOT, subprocess_env

    monkeypatch.delenv("AIRFLOW__CORE__PLUGINS_FOLDER", raising=False)
    env = subprocess_env({"GIR_X": "1"})
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(REPO_ROOT / "plugins")
    assert env["GIR_X"] == "1"
    assert (REPO_ROOT / "plugins" / "gir_timetables.py").is_file()


def test_parse_probe_of_a_files_own_imports_runs_what_its_parse_runs() -> None:
    """The probe behind a parse row's explanation imports exactly the file's module-level project
    imports (not what its tasks import when they run) and loads the topology, decorators untimed."""
    from benchmarks import parse_cost

    probe = parse_cost.project_imports_probe(parse_cost.DAGS_FOLDER / "gir_es_reindex.py")
    setup, _, timed = probe.rpartition(parse_cost._SETUP_END)
    assert setup == "from airflow.sdk import dag, task"
    assert "from include.gir_ops.reindex import spec" in timed
    assert "from include.gir_ops.pools import check_pools" in timed
    assert timed.endswith("load_topology()")
    assert "reindex.plan" not in timed and "rws" not in timed  # imported inside the tasks
    result = parse_cost._probe_once(probe)
    assert result["total"] > 0 and "include.gir_ops.reindex.spec" in sys.modules
