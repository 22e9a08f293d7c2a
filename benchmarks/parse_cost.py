"""Benchmark 1, DAG parse cost: each DAG file against a trivial one-task TaskFlow DAG, parsed the same way.

Parsed by Airflow 3.3's dag-processor code itself (``airflow/dag_processing/processor.py``): the
long-lived processor pre-imports the ``airflow.*`` modules a file imports (``parsing_pre_import_modules``),
then forks a child per parse, which runs ``_parse_file`` (the DAG stability check, a ``DagBag`` of that
one file, the serialization of its DAGs) and sends the result to the processor in one frame. Here one
worker process imports Airflow's dag-processor modules (what the processor holds before it forks) and
pre-imports the ``airflow.*`` modules of every file measured (the processor's steady state), then forks
one child per sample; the child times ``_parse_file`` plus the encoding of the result frame (not the
socket write). Interpreter start-up and the Airflow import are outside the measurement; everything a DAG
file imports beyond that (our ``include`` package and what it imports, the topology read and validation)
is inside. Samples of the files are interleaved round by round, so load from other processes hits all
files alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import PYTHON, REPO_ROOT, Row, at_most, median, ms, subprocess_env

TARGET_RATIO = 1.75  # each DAG file / the trivial TaskFlow DAG
PER_DC_TARGET = 0.35  # each re-index DC added to the topology costs gir_es_reindex.py at most this / trivial
SCALING_DCS = (1, 5, 20)  # re-index DCs in the topologies of the scaling row
FULL_SAMPLES = 15
QUICK_SAMPLES = 1
DAGS_FOLDER = REPO_ROOT / "dags"
_MARK = "PARSE_BENCH "
_PROBE = "probe:"
_SETUP_END = " #untimed-setup-ends-here# "  # in a probe: what comes before it runs untimed
_TOPOLOGY_SEP = "\t"  # "<file>\t<topology>": parse the file with GIR_TOPOLOGY pointing there
REINDEX_FILE = "gir_es_reindex.py"

# Where a DAG file's parse time goes, beyond what the trivial DAG also pays: each snippet is timed in a
# fresh fork of the same worker, and shown against the trivial DAG (full mode only).
_PARAM_SCHEMA = (
    "import jsonschema; from include.gir_ops.shared import ISO_WITH_OFFSET_PATTERN as P; "
    "s = {{{dialect}'type': ['null', 'string'], 'format': 'date-time', 'pattern': P, 'title': 'From', "
    "'description': 'Start of a custom range'}}; "
    "[jsonschema.validate(None, s, format_checker=jsonschema.FormatChecker()) for _ in range(100)]"
)
PROBES = {
    "airflow.sdk dag/task decorators (the trivial DAG pays this too)": "from airflow.sdk import dag, task",
    "include.gir_ops.topology import + load_topology() (every DAG file)": (
        "from include.gir_ops.topology import load_topology; load_topology()"
    ),
    "import include.gir_ops.topology alone (its pydantic model classes)": "import include.gir_ops.topology",
    "YAML of the topology, libyaml CSafeLoader": (
        "import yaml, os; yaml.load(open(os.environ['GIR_TOPOLOGY'], encoding='utf-8').read(), "
        "Loader=yaml.CSafeLoader)"
    ),
    "100 Param schema checks as Airflow runs them, JSON Schema 2020-12 (jsonschema's default)": (
        _PARAM_SCHEMA.format(dialect="")
    ),
    "100 Param schema checks as Airflow runs them, draft-07 (what include.gir_ops.params declares)": (
        _PARAM_SCHEMA.format(dialect="'$schema': 'http://json-schema.org/draft-07/schema#', ")
    ),
    "import include.gir_ops.failover.spec + .operators (what the failover DAG file imports)": (
        "import include.gir_ops.failover.spec, include.gir_ops.failover.operators"
    ),
    "import include.gir_ops.failover.steps + .audit (tasks import them when they run, not the DAG file)": (
        "import include.gir_ops.failover.steps, include.gir_ops.failover.audit"
    ),
    "import include.gir_ops.backup.tasks (tasks only)": "import include.gir_ops.backup.tasks",
    "import include.gir_ops.keystore.check (tasks only)": "import include.gir_ops.keystore.check",
    "import requests (include.gir_ops.rws defers it to the first RWS call)": "import requests",
}

TRIVIAL_DAG = '''\
"""The baseline: one TaskFlow task, nothing imported beyond Airflow."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="bench_trivial", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["bench"])
def bench_trivial() -> None:
    @task
    def hello() -> str:
        return "hello"

    hello()


bench_trivial()
'''


assert not any("\n" in code for code in PROBES.values()), "a probe travels to the worker as one line"


def project_imports_probe(path: Path) -> str:
    """A probe importing what ``path`` imports from ``include`` (its project modules), then loading the
    topology as every DAG file does: what the file pays before Airflow builds any of its DAGs."""
    import ast

    statements = [
        ast.unparse(node)
        for node in ast.parse(path.read_text(encoding="utf-8")).body  # module level: what a parse runs
        if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("include"))
        or (isinstance(node, ast.Import) and any(a.name.startswith("include") for a in node.names))
    ]
    # Airflow's decorators untimed: the trivial DAG pays them too, and a file importing a module that
    # uses them would otherwise count them twice.
    setup = "from airflow.sdk import dag, task" + _SETUP_END
    return setup + "; ".join(
        [*statements, "from include.gir_ops.topology import load_topology", "load_topology()"]
    )


def dag_files() -> list[Path]:
    return sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))


# --- the worker (a child process) ------------------------------------------------------------------


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(_MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _parse_once(path: str) -> dict[str, Any]:
    """In a forked child: what the dag-processor's child does for one file, timed."""
    from pathlib import Path

    import structlog
    from airflow.dag_processing.processor import DagFileParseRequest, _parse_file
    from airflow.sdk.execution_time.comms import _RequestFrame

    request = DagFileParseRequest(file=path, bundle_path=Path(path).parent, bundle_name="dags-folder")
    started = time.perf_counter()
    result = _parse_file(request, structlog.get_logger(logger_name="task"))
    parsed = time.perf_counter()
    frame = _RequestFrame(id=0, body=result.model_dump()).as_bytes()
    done = time.perf_counter()
    return {
        "parse": parsed - started,
        "encode": done - parsed,
        "total": done - started,
        "dags": sorted(dag.dag_id for dag in result.serialized_dags),
        "frame_bytes": len(frame),
        "import_errors": {str(k): str(v)[-500:] for k, v in (result.import_errors or {}).items()},
    }


def _probe_once(code: str) -> dict[str, Any]:
    """In a forked child: time one snippet (an import, the topology load) in the processor's state; what
    comes before ``_SETUP_END`` runs first, untimed."""
    setup, _, code = code.rpartition(_SETUP_END)
    scope: dict[str, Any] = {}
    exec(compile(setup, "<probe setup>", "exec"), scope)
    started = time.perf_counter()
    exec(compile(code, "<probe>", "exec"), scope)
    elapsed = time.perf_counter() - started
    return {"parse": elapsed, "encode": 0.0, "total": elapsed, "dags": [], "import_errors": {}}


def _sample_in_fork(path: str) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse, report through the pipe, leave without running any cleanup
        os.close(read_end)
        try:
            if path.startswith(_PROBE):
                result = _probe_once(path[len(_PROBE) :])
            else:
                file, _, topology = path.partition(_TOPOLOGY_SEP)
                if topology:  # a variant: the same file parsed against another topology
                    os.environ["GIR_TOPOLOGY"] = topology
                result = _parse_once(file)
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(json.dumps(result))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(text) if text else {"error": "the parsing child died without an answer"}


def worker(files: list[str]) -> int:
    """Import Airflow, pre-import what the files import from it, then parse on request (stdin lines)."""
    import importlib

    # What the dag-processor's own process has imported before it forks a parsing child.
    import airflow.dag_processing.manager
    import airflow.dag_processing.processor  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag  # noqa: F401
    from airflow.serialization.serialized_objects import DagSerialization  # noqa: F401
    from airflow.utils.file import iter_airflow_imports

    # DagFileProcessorManager.before_run freezes the GC once, before its parsing loop, "to prevent COW in
    # forked process parsing dag file"; the pre-imports below come later, as in its loop.
    gc.freeze()
    for path in files:
        for module in iter_airflow_imports(path):
            try:
                importlib.import_module(module)
            except Exception:  # the processor also just warns and goes on
                continue
    _emit({"ready": True})
    for line in sys.stdin:
        path = line.rstrip("\n")
        if not path:
            break
        _emit(_sample_in_fork(path))
    return 0


# --- the benchmark ---------------------------------------------------------------------------------


def run(*, quick: bool = False, samples: int | None = None, files: list[Path] | None = None) -> list[Row]:
    """One row per DAG file. The ratio is with bytecode cached (a deployment's steady state); the figures
    also give the ratio without a bytecode cache (every parse compiles our modules from source, as with
    PYTHONDONTWRITEBYTECODE=1 or a read-only code mount without precompiled ``.pyc``), except in quick mode.
    """
    samples = samples or (QUICK_SAMPLES if quick else FULL_SAMPLES)
    targets = files or dag_files()
    with tempfile.TemporaryDirectory(prefix="gir-bench-parse-") as tmp:
        trivial = Path(tmp) / "bench_trivial_dag.py"
        trivial.write_text(TRIVIAL_DAG, encoding="utf-8")
        home = Path(tmp) / "airflow-home"
        home.mkdir()
        env = subprocess_env(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
                "GIR_TOPOLOGY": os.environ.get(
                    "GIR_TOPOLOGY", str(REPO_ROOT / "include/config/topology.yaml")
                ),
                "GIR_DATA_DIR": str(Path(tmp) / "gir-data"),
            }
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # Bytecode goes to a temp folder, never into the repository.
        cached_env = env | {"PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        files_only = [str(trivial), *(str(p) for p in targets)]
        own_imports = {path: _PROBE + project_imports_probe(path) for path in targets}
        paths = files_only + ([] if quick else [_PROBE + code for code in PROBES.values()])
        paths += [] if quick else sorted(set(own_imports.values()) - set(paths))
        reindex = next((p for p in targets if p.name == REINDEX_FILE), None)
        scaling: dict[int, str] = {}
        if reindex is not None:
            for count in SCALING_DCS:
                topology = reindex_topology(Path(tmp), env["GIR_TOPOLOGY"], count)
                scaling[count] = str(reindex) + _TOPOLOGY_SEP + str(topology)
            paths += list(scaling.values())
        if not quick:
            _collect(paths, 1, cached_env, warm_up=False)  # a first worker fills the bytecode cache
        cached = _collect(paths, samples, cached_env, warm_up=True)
        uncached = None
        if not quick:
            # Airflow's own .pyc (written by pip) are still used; only our modules compile on every parse.
            uncached_env = dict(env, PYTHONDONTWRITEBYTECODE="1")
            uncached_env.pop("PYTHONPYCACHEPREFIX", None)
            uncached = _collect(files_only, samples, uncached_env, warm_up=True)
    base_median = median([s["total"] for s in cached[str(trivial)]])
    uncached_base = median([s["total"] for s in uncached[str(trivial)]]) if uncached else None
    rows = [
        _file_row(
            path,
            cached[str(path)],
            base_median=base_median,
            samples=samples,
            uncached=uncached,
            uncached_base=uncached_base,
        )
        for path in targets
    ]
    scaling_row = (
        _scaling_row({count: cached[path] for count, path in scaling.items()}, base_median)
        if scaling
        else None
    )
    if not quick:
        per_dc = scaling_row.details["per_dc_seconds"] if scaling_row else None
        for path, row in zip(targets, rows, strict=True):
            row.why_missed = _why_file_missed(
                row, median([s["total"] for s in cached[own_imports[path]]]), base_median, per_dc
            )
    if scaling_row:
        rows.append(scaling_row)
    if not quick:
        for label, code in PROBES.items():
            probe = median([s["total"] for s in cached[_PROBE + code]])
            figures = f"median {ms(probe)} in a fork of the worker vs trivial DAG {ms(base_median)}"
            rows.append(_info_row(label, probe, base_median, figures))
    return rows


def _file_row(
    path: Path,
    found: list[dict[str, Any]],
    *,
    base_median: float,
    samples: int,
    uncached: dict[str, list[dict[str, Any]]] | None,
    uncached_base: float | None,
) -> Row:
    """The judged row of one DAG file."""
    errors = found[0].get("import_errors") or {}
    total = median([s["total"] for s in found])
    parse = median([s["parse"] for s in found])
    encode = median([s["encode"] for s in found])
    ratio = total / base_median if base_median > 0 else None
    figures = (
        f"median {ms(total)} (stability check + DagBag + serialization {ms(parse)}, result frame "
        f"{ms(encode)}; {len(found[0]['dags'])} DAG(s)) vs trivial {ms(base_median)}; "
        f"{samples} sample(s) each"
    )
    details: dict[str, object] = {
        "file": path.name,
        "median_seconds": total,
        "trivial_median_seconds": base_median,
        "samples": samples,
        "dags": found[0]["dags"],
        "import_errors": errors,
    }
    if uncached and uncached_base:
        cold = median([s["total"] for s in uncached[str(path)]])
        details["uncached_median_seconds"] = cold
        details["uncached_trivial_median_seconds"] = uncached_base
        ratio_cold = cold / uncached_base
        figures += f"; without bytecode cache {ms(cold)} vs trivial {ms(uncached_base)} = {ratio_cold:.2f}x"
    if errors:
        figures += f"; IMPORT ERRORS: {'; '.join(errors.values())}"
    return Row(
        benchmark="parse_cost",
        name=f"parse {path.name}",
        ratio=ratio,
        target=f"<= {TARGET_RATIO}",
        passed=False if errors else at_most(ratio, TARGET_RATIO),
        figures=figures,
        details=details,
    )


def _why_file_missed(row: Row, own_imports: float, base_median: float, per_dc: object) -> str:
    """Split a file's parse, from this run's figures: what the trivial DAG also pays, the project's
    imports and topology, and the DAGs themselves (each one's tasks, params and serialization)."""
    total = float(row.details["median_seconds"])  # type: ignore[arg-type]
    dags = len(row.details["dags"])  # type: ignore[arg-type]
    rest = total - base_median - own_imports
    text = (
        f"{ms(total)} = the trivial DAG's {ms(base_median)} (Airflow's decorators and one DAG: any file pays "
        f"it) + the file's project imports and load_topology() {ms(own_imports)} "
        f"({own_imports / base_median:.2f} of a trivial parse) + {ms(rest)} for building and serializing its "
        f"{dags} DAG(s) beyond what the trivial one costs ({rest / base_median:.2f})"
    )
    if isinstance(per_dc, float) and row.details["file"] == REINDEX_FILE:
        text += (
            f"; one DAG per DC of the topology, each added DC {ms(per_dc)} ({per_dc / base_median:.2f} of a "
            f"trivial parse, the scaling row): with {dags} DCs the file cannot stay under {TARGET_RATIO} "
            f"unless a first DAG and the topology together cost less than "
            f"{TARGET_RATIO - (dags - 1) * per_dc / base_median:.2f} of a trivial parse"
        )
    return text + (
        ". Within the DAGs, Airflow re-validates each Param's JSON schema several times per task while "
        "serializing (the *100 Param schema checks* rows give the cost of one check)."
    )


def _info_row(label: str, seconds: float, base_median: float, figures: str) -> Row:
    """A breakdown row: explains a judged row, never judged itself."""
    return Row(
        benchmark="parse_cost",
        name=f"parse breakdown: {label}",
        ratio=seconds / base_median if base_median > 0 else None,
        target="-",
        passed=None,
        figures=figures,
        info=True,
        details={"median_seconds": seconds},
    )


def _scaling_row(found: dict[int, list[dict[str, Any]]], base_median: float) -> Row:
    """What each re-index DC added to the topology costs a parse of gir_es_reindex.py (one DAG per DC)."""
    medians = {count: median([s["total"] for s in samples]) for count, samples in sorted(found.items())}
    fewest, most = min(medians), max(medians)
    per_dc = (medians[most] - medians[fewest]) / (most - fewest)
    ratio = per_dc / base_median if base_median > 0 else None
    dags = {count: len(samples[0]["dags"]) for count, samples in found.items()}
    steps = ", ".join(f"{count} DC(s) {ms(value)} ({dags[count]} DAGs)" for count, value in medians.items())
    middle = sorted(medians)[1] if len(medians) > 2 else None
    first_step = (
        f"; from {fewest} to {middle} DCs {ms((medians[middle] - medians[fewest]) / (middle - fewest))} a DC"
        if middle is not None
        else ""
    )
    return Row(
        benchmark="parse_cost",
        name=f"parse {REINDEX_FILE}: cost of each added re-index DC / trivial parse",
        ratio=ratio,
        target=f"<= {PER_DC_TARGET}",
        passed=at_most(ratio, PER_DC_TARGET),
        figures=(
            f"medians {steps}: {ms(per_dc)} per added DC from {fewest} to {most}{first_step}; trivial "
            f"{ms(base_median)}"
        ),
        details={"medians": medians, "dags": dags, "per_dc_seconds": per_dc},
        why_missed=(
            f"each added DC is one more DAG in the file, {ms(per_dc)} to build and serialize: its "
            "three tasks each carry the DAG's five trigger-form Params, which Airflow re-validates "
            "against their JSON schema several times per task while serializing (the *100 Param schema "
            "checks* rows give the cost of one check), plus its timetable, deadline alerts and operator "
            f"docs; the topology grows by a section per DC (the slope from {fewest} to {middle} DCs is in "
            "the figures)"
            if middle is not None
            else ""
        ),
    )


def reindex_topology(folder: Path, topology_path: str, count: int) -> Path:
    """The measured topology with ``count`` re-index DCs: the primary (whose DAG is built unscheduled)
    plus copies of its first re-index DC (site DC2, DC3, ...; their RCS instances renamed), written to
    ``folder``."""
    import copy

    import yaml

    document = yaml.safe_load(Path(topology_path).read_text(encoding="utf-8"))
    primary = next(dc for dc in document["data_centers"] if dc["site"] == document["primary_site"])
    template = next(dc for dc in document["data_centers"] if (dc.get("reindex") or {}).get("enabled"))
    centers = [primary]
    for number in range(2, count + 2):
        dc = copy.deepcopy(template)
        dc["site"] = f"DC{number}"
        dc.get("rws", {}).pop("conn_id", None)
        dc["rcs"] = [
            dict(rcs, name=f"rcs-dc{number}-{index}") for index, rcs in enumerate(dc.get("rcs") or [])
        ]
        centers.append(dc)
    document["data_centers"] = centers
    target = folder / f"reindex-{count}-dcs.yaml"
    target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return target


def _collect(
    paths: list[str], samples: int, env: dict[str, str], *, warm_up: bool
) -> dict[str, list[dict[str, Any]]]:
    """Start the worker, then ask for ``samples`` rounds over every file, interleaved.

    ``warm_up`` parses every file once first, unmeasured: the first parse in a worker also pays one-time
    lazy initialisations of Airflow (e.g. the providers manager) that the dag-processor has long done.
    """
    process = subprocess.Popen(
        [PYTHON, "-m", "benchmarks.parse_cost", "--worker", *paths],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    assert process.stdin is not None and process.stdout is not None

    def answer() -> dict[str, Any]:
        for line in process.stdout:
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK) :])
        raise RuntimeError(f"the parse worker exited (code {process.wait()}) without answering")

    timings: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
    try:
        answer()  # ready
        for round_number in range(samples + (1 if warm_up else 0)):
            for path in paths:
                process.stdin.write(path + "\n")
                process.stdin.flush()
                result = answer()
                if "error" in result:
                    raise RuntimeError(f"parsing {path} failed: {result['error']}")
                if not (warm_up and round_number == 0):
                    timings[path].append(result)
        process.stdin.write("\n")
        process.stdin.flush()
    finally:
        process.stdin.close()
        if process.wait(timeout=60) != 0:
            raise RuntimeError(f"the parse worker exited with code {process.returncode}")
    return timings


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs="+", metavar="FILE")
    arguments = parser.parse_args()
    sys.exit(worker(arguments.worker))
