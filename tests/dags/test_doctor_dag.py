"""gir_doctor end to end with dag.test(): the worker checks, the readability check really deferred to a
trigger, and the report that names what is broken.

dag.test() runs no triggerer job, so Airflow's health reports no triggerer: the run is red on exactly that
row, which is what an operator would see on a deployment without one. The triggerer's own readability
rows still come out, because dag.test() runs the deferred trigger inline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops.doctor import spec
from include.gir_sim.demo_data import generate_index_backups, generate_keystores, local_path
from tests.conftest import SimulatedGir

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = REPO_ROOT / "dags" / "gir_doctor.py"


def _run_doctor() -> tuple[Any, dict[str, Any] | None, dict[str, str]]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    run = bag.dags[spec.DAG_ID].test()
    with create_session() as session:
        states = {
            ti.task_id: str(ti.state)
            for ti in session.query(TaskInstance).filter_by(dag_id=spec.DAG_ID, run_id=run.run_id)
        }
        xcoms = {
            row.task_id: row.value
            for row in session.query(XComModel).filter_by(
                dag_id=spec.DAG_ID, run_id=run.run_id, key="return_value"
            )
        }
    value = xcoms.get(spec.TRIGGERER_CHECKS)
    triggerer = json.loads(value) if isinstance(value, str) else value
    worker = xcoms.get(spec.WORKER_CHECKS)
    worker = json.loads(worker) if isinstance(worker, str) else worker
    return run, {"worker": worker, "triggerer": triggerer}, states


@pytest.fixture
def deployment(
    gir: SimulatedGir, airflow_api: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimulatedGir]:
    from include.gir_ops.airflow_api import SERVICE_USER
    from include.gir_sim.notify_receiver import NotificationReceiver

    users = f"admin:admin,approver:admin,{SERVICE_USER}:viewer"
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", users)
    topology = gir.topology
    generate_keystores(topology, gir.keystore_password)
    generate_index_backups(local_path(topology.site("DC1").speechminer.index_backup or ""), days=2)
    assert topology.shipping is not None
    local_path(topology.shipping.destination).mkdir(parents=True)  # the backup DC's share, mounted
    with NotificationReceiver() as receiver:  # the on-call's channel, a real Apprise connection
        monkeypatch.setenv("AIRFLOW_CONN_GIR_APPRISE", receiver.connection_json())
        gir.notifications = receiver  # type: ignore[attr-defined]
        yield gir


def test_a_working_deployment_is_green_except_the_missing_triggerer(deployment: SimulatedGir) -> None:
    _, rows, states = _run_doctor()
    assert states[spec.WORKER_CHECKS] == "success"
    assert states[spec.TRIGGERER_CHECKS] == "success"
    assert states[spec.REPORT] == "failed"
    worker = {row["check"]: row for row in rows["worker"]}
    failed = sorted(check for check, row in worker.items() if row["status"] == "FAIL")
    assert failed == ["triggerer"]
    for check in ("topology", "RWS DC1", "RWS DC2", "RWS DC3", "genesys environment", "pool gir_rws_switch"):
        assert worker[check]["status"] == "OK", worker[check]
    assert worker["approvers (two-person rule)"]["result"] == "2 known approvers: approver, admin"
    assert worker["notifications gir_apprise"]["status"] == "OK", worker["notifications gir_apprise"]
    assert any("gir_doctor" in m["title"] for m in deployment.notifications.received())  # type: ignore[attr-defined]
    triggerer = {row["check"]: row["status"] for row in rows["triggerer"]}
    assert triggerer == {
        "SpeechMiner source (DC1) from the triggerer": "OK",
        "SpeechMiner destination (DC2) from the triggerer": "OK",
        "keystore rcs-dc1-a (DC1) from the triggerer": "OK",
        "keystore rcs-dc1-b (DC1) from the triggerer": "OK",
        "keystore rcs-dc2-a (DC2) from the triggerer": "OK",
        "keystore rcs-dc3-a (DC3) from the triggerer": "OK",
    }


def test_a_missing_keystore_and_an_unmounted_share_are_named_from_worker_and_triggerer(
    deployment: SimulatedGir,
) -> None:
    import shutil

    paths = {
        name: local_path(rcs.keystore) for _, rcs in deployment.topology.rcs_instances for name in [rcs.name]
    }
    paths["rcs-dc2-a"].unlink()
    shutil.rmtree(paths["rcs-dc3-a"].parent.parent)  # the whole dc3 "share" is gone
    _, rows, _ = _run_doctor()
    for where, found in (("worker", rows["worker"]), ("triggerer", rows["triggerer"])):
        by = {row["check"]: row for row in found}
        dc2 = by[f"keystore rcs-dc2-a (DC2) from the {where}"]
        dc3 = by[f"keystore rcs-dc3-a (DC3) from the {where}"]
        assert dc2["status"] == "FAIL" and dc2["result"].startswith("file does not exist:")
        assert dc3["status"] == "FAIL" and dc3["result"].startswith("the share is not mounted on this worker")
