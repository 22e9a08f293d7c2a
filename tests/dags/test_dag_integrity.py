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
    return ids | {"gir_speechminer_backup_ship", "gir_rcs_keystore_check", "gir_eservices_failover"}


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
        and not path.endswith((".py", ".pyc", ".airflowignore"))
        and os.path.realpath(path) != os.path.realpath(topology_file)
        and "__pycache__" not in path
        and not Path(path).is_dir()
    ]
    assert suspicious == []
