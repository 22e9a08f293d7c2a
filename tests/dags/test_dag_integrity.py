"""Every DAG file parses cleanly, cheaply and carries what an operator needs to run it safely."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops.topology import load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"

# Audit hooks cannot be removed, so one hook serves every test and only records while armed.
_AUDIT: dict[str, Any] = {"armed": False, "opens": [], "connects": []}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _AUDIT["armed"]:
        return
    if event == "open" and args and isinstance(args[0], str | Path):
        _AUDIT["opens"].append(str(args[0]))
    elif event == "socket.connect":
        _AUDIT["connects"].append(repr(args[1:]))


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def dagbag(airflow_db: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def expected_dag_ids() -> set[str]:
    topology = load_topology()
    ids = {f"gir_es_reindex_{dc.site_slug}" for dc in topology.reindex_data_centers}
    return ids | {
        "gir_speechminer_backup_ship",
        "gir_rcs_keystore_check",
        "gir_eservices_failover",
        "gir_rcs_keystore_replicate",
    }


def test_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}


def test_every_dag_of_the_default_topology_is_there(dagbag: Any) -> None:
    assert expected_dag_ids() <= set(dagbag.dags), sorted(dagbag.dags)


def test_every_dag_has_tags_owner_and_operator_docs(dagbag: Any) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert "gir" in dag.tags, f"{dag_id} should carry the 'gir' tag so operators can filter"
        assert dag.owner not in ("", "airflow"), f"{dag_id} has no owner"
        assert dag.doc_md and len(dag.doc_md) > 200, (
            f"{dag_id} needs a doc_md telling operators how to run it"
        )


def test_a_reindex_dag_is_scheduled_only_where_reindex_is_enabled(dagbag: Any) -> None:
    """Elsewhere its timetable gives the cron's intervals to backfills and manual runs, never a run."""
    from airflow.sdk import CronDataIntervalTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable

    from include.gir_ops.reindex.timetable import ManualAndBackfillOnlyTimetable

    for dc in load_topology().data_centers:
        dag = dagbag.dags[f"gir_es_reindex_{dc.site_slug}"]
        expected = CronDataIntervalTimetable if dc.reindex.enabled else ManualAndBackfillOnlyTimetable
        assert type(dag.timetable) is expected, f"{dag.dag_id}: {type(dag.timetable).__name__}"
        assert dag.timetable.can_be_scheduled is dc.reindex.enabled
        assert coerce_to_core_timetable(dag.timetable).periodic  # backfills allowed everywhere
        assert dag.catchup is False and dag.end_date is None  # what keeps the scheduler away (timetable.py)
    assert any(not dc.reindex.enabled for dc in load_topology().data_centers)  # the example has one


def test_tasks_are_retried_unless_a_retry_is_unsafe_and_says_why(dagbag: Any) -> None:
    """Network tasks retry (>= 2); a task that must not retry (a non-idempotent POST) documents why."""
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            if task.retries >= 2:
                continue
            doc = (task.doc_md or "").lower()
            assert "never retried" in doc, (
                f"{dag_id}.{task.task_id} has retries={task.retries}: give it retries >= 2, or document in "
                "its doc_md why it is never retried"
            )


def test_parsing_touches_no_network_and_no_files_beyond_the_topology(airflow_db: Path) -> None:
    """As the dag-processor parses every few seconds, a DAG file must not read data or call RWS."""
    from airflow.dag_processing.dagbag import DagBag

    topology_file = str(Path(os.environ.get("GIR_TOPOLOGY") or REPO_ROOT / "include/config/topology.yaml"))
    data_dir = os.environ["GIR_DATA_DIR"]
    _AUDIT.update(opens=[], connects=[], armed=True)
    try:
        bag = DagBag(dag_folder=str(DAGS_FOLDER))
    finally:
        _AUDIT["armed"] = False
    assert bag.dags, "nothing was parsed"
    assert _AUDIT["connects"] == []
    suspicious = [
        path
        for path in _AUDIT["opens"]
        if (path.startswith((str(REPO_ROOT), data_dir)))
        # Installed packages' own files (e.g. cron_descriptor's locale for a timetable's description) are
        # not project data, even when the venv sits inside the clone.
        and not path.startswith(sys.prefix + os.sep)
        and not path.endswith((".py", ".pyc", ".airflowignore"))
        and os.path.realpath(path) != os.path.realpath(topology_file)
        and "__pycache__" not in path
        and not Path(path).is_dir()
    ]
    assert suspicious == []


def test_every_trigger_param_declares_the_json_schema_dialect(dagbag: Any) -> None:
    """Airflow re-checks each Param schema many times per parse; draft-07 checks 2.5-4x faster (params.py)."""
    from include.gir_ops.params import JSON_SCHEMA_DIALECT

    checked = 0
    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            schema = dag.params.get_param(name).schema
            assert schema.get("$schema") == JSON_SCHEMA_DIALECT, (
                f"{dag_id} param {name!r}: build it with include.gir_ops.params.trigger_param"
            )
            checked += 1
    assert checked >= 10  # re-index (5 per DC), keystore check (1), failover (4)


# What a DAG file may import from the project while the dag-processor parses it: the topology and the
# small modules made for parsing. The logic modules (backup, keystore, reindex, rws, windows, failover)
# are imported inside the tasks; importing one at parse time costs every parse 2-8 ms (``make bench``).
PARSE_TIME_MODULES = {
    "include",
    "include.gir_ops",
    "include.gir_ops.backup",
    "include.gir_ops.backup.sensors",
    "include.gir_ops.backup.spec",
    "include.gir_ops.backup.triggers",
    "include.gir_ops.doctor",
    "include.gir_ops.doctor.operators",
    "include.gir_ops.doctor.spec",
    "include.gir_ops.failover",
    "include.gir_ops.failover.operators",
    "include.gir_ops.failover.spec",
    "include.gir_ops.failover.triggers",
    "include.gir_ops.keystore",
    "include.gir_ops.keystore.spec",
    "include.gir_ops.notifications",  # dag_kwargs / approval_notifiers; building and sending at run time
    "include.gir_ops.notifications.notifiers",
    "include.gir_ops.params",
    "include.gir_ops.pools",  # check_pools only; its API client is imported when the task runs
    "include.gir_ops.reindex",
    "include.gir_ops.reindex.spec",
    "include.gir_ops.reindex.timetable",  # the schedule of a DC without reindex.enabled (core Airflow only)
    "include.gir_ops.shared",
    "include.gir_ops.topology",
}

_IMPORTS_PROBE = """
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
assert not [m for m in sys.modules if m.startswith("include")]
found = {}
for path in sys.argv[1:]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # a fresh child per file, as the dag-processor parses
        bag = DagBag(dag_folder=path)
        mods = sorted(m for m in sys.modules if m.startswith("include"))
        os.write(write_end, json.dumps({"modules": mods, "errors": list(bag.import_errors)}).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        found[os.path.basename(path)] = json.loads(pipe.read())
    os.waitpid(pid, 0)
print(json.dumps(found))
"""


def test_parsing_imports_only_the_parse_time_project_modules(airflow_db: Path) -> None:
    import json
    import subprocess

    files = sorted(str(p) for p in DAGS_FOLDER.glob("*.py"))
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE, *files],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(found) == sorted(Path(f).name for f in files)
    for name, seen in found.items():
        assert seen["errors"] == [], f"{name} did not parse"
        # The doctor reads the topology when it runs: a broken topology is what it must report, not a
        # reason for its own DAG to vanish.
        if name != "gir_doctor.py":
            assert "include.gir_ops.topology" in seen["modules"], f"{name} should read the topology"
        extra = sorted(set(seen["modules"]) - PARSE_TIME_MODULES)
        assert extra == [], f"{name} imports {extra} while parsing; import them inside the task instead"


def test_scheduled_dags_are_created_unpaused(dagbag: Any) -> None:
    """A paused nightly DAG silently does nothing, and backfill runs of a paused DAG stay queued."""
    assert os.environ.get("GIR_DAGS_PAUSED_AT_CREATION", "") != "1"
    scheduled = [dag for dag in dagbag.dags.values() if dag.timetable.can_be_scheduled]
    assert {dag.dag_id for dag in scheduled} >= {
        "gir_es_reindex_dc2",
        "gir_es_reindex_dc3",
        "gir_rcs_keystore_check",
        "gir_speechminer_backup_ship",
    }
    for dag in dagbag.dags.values():
        assert dag.is_paused_upon_creation is False, f"{dag.dag_id} would be created paused"
