"""Benchmark: one full ``airflow dags reserialize`` of the project against one of a folder holding only the
trivial TaskFlow DAG, for the example topology and for a topology with 20 re-index DCs.

Each is a whole ``airflow dags reserialize`` process (interpreter start, the Airflow import, parsing every
file of the DAGs folder, writing the serialized DAGs to the metadata database), in an isolated
AIRFLOW_HOME with a migrated SQLite database; the three cases run interleaved round by round and the
medians are compared. What it says: how much longer a deployment's parse of all our files takes than the
least a DAGs folder can cost, and how that grows with the number of DCs. The issue sets no target: the
rows are information beside the per-file targets of ``parse_cost``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import PYTHON, REPO_ROOT, Row, median, seconds, subprocess_env
from benchmarks.parse_cost import DAGS_FOLDER, TRIVIAL_DAG, reindex_topology

FULL_SAMPLES = 3
QUICK_SAMPLES = 1
MANY_DCS = 20
AIRFLOW = str(Path(PYTHON).parent / "airflow")


def _reserialize(env: dict[str, str], dags_folder: Path, topology: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [AIRFLOW, "dags", "reserialize"],
        env=env | {"AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder), "GIR_TOPOLOGY": topology},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"airflow dags reserialize of {dags_folder} failed: {result.stderr[-1500:]}")
    return elapsed


def run(*, quick: bool = False, samples: int | None = None) -> list[Row]:
    samples = samples or (QUICK_SAMPLES if quick else FULL_SAMPLES)
    default_topology = os.environ.get("GIR_TOPOLOGY", str(REPO_ROOT / "include/config/topology.yaml"))
    with tempfile.TemporaryDirectory(prefix="gir-bench-reserialize-") as tmp:
        root = Path(tmp)
        trivial = root / "trivial-dags"
        trivial.mkdir()
        (trivial / "bench_trivial_dag.py").write_text(TRIVIAL_DAG, encoding="utf-8")
        home = root / "airflow-home"
        home.mkdir()
        env = subprocess_env(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "GIR_DATA_DIR": str(root / "gir-data"),
                "PYTHONPYCACHEPREFIX": str(root / "pycache"),  # bytecode cached, outside the repository
            }
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True, cwd=REPO_ROOT)
        many = str(reindex_topology(root, default_topology, MANY_DCS))
        cases = {
            "trivial": (trivial, default_topology),
            "default": (DAGS_FOLDER, default_topology),
            "many": (DAGS_FOLDER, many),
        }
        _reserialize(env, trivial, default_topology)  # unmeasured: fills the bytecode cache
        _reserialize(env, DAGS_FOLDER, many)
        timings: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(samples):
            for name, (folder, topology) in cases.items():
                timings[name].append(_reserialize(env, folder, topology))
    base = median(timings["trivial"])
    rows = []
    for name, label in (
        ("default", "the example topology (3 DCs, so 3 re-index DAGs, the primary's unscheduled)"),
        (
            "many",
            f"a topology with {MANY_DCS + 1} DCs ({MANY_DCS} re-index and the primary: "
            f"{MANY_DCS + 1} re-index DAGs)",
        ),
    ):
        value = median(timings[name])
        listed = ", ".join(seconds(t) for t in timings[name])
        rows.append(
            Row(
                benchmark="dag_reserialize",
                name=f"airflow dags reserialize of the project, {label} / of the trivial DAG alone",
                ratio=value / base,
                target="-",
                passed=None,
                info=True,
                figures=(
                    f"project {listed} (median {seconds(value)}) vs trivial folder "
                    f"{', '.join(seconds(t) for t in timings['trivial'])} (median {seconds(base)}); whole "
                    f"processes, {samples} sample(s) each, interleaved"
                ),
                details={"seconds": timings[name], "trivial_seconds": timings["trivial"]},
            )
        )
    return rows
