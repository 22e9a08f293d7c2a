"""gir_doctor on the real engine: green on a working deployment, then one broken item per check, each named.

Runs on the Celery worker and in the real triggerer (the readability check defers there). The broken
items are made the way they break in a deployment: the topology edited (a connection id that does not
exist, an approver the auth manager does not know, an audit log that cannot be written, a keystore that
is gone, a SpeechMiner share that is not mounted) and a pool resized through the REST API. Everything is
restored afterwards. Checks that cannot be broken on a shared engine without breaking the other tests
(the triggerer stopped, the demo topology outside the demo, RWS disagreeing on the environment) are
broken in tests/include/doctor and tests/dags/test_doctor_dag.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine_stack import EngineStack

pytestmark = pytest.mark.engine

DOCTOR = "gir_doctor"


def _run_doctor(engine: EngineStack) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    admin = engine.api("admin")
    admin.unpause(DOCTOR)
    run = admin.trigger(DOCTOR)
    finished = admin.wait_run_finished(DOCTOR, run["dag_run_id"], timeout=300)
    report = admin.xcom(DOCTOR, run["dag_run_id"], "report", key="doctor_report")
    if isinstance(report, str):
        report = json.loads(report)
    return finished, {row["check"]: row for row in report["rows"]}


@pytest.mark.timeout(600)
def test_the_doctor_is_green_then_names_each_broken_item(engine: EngineStack) -> None:
    run, rows = _run_doctor(engine)
    failed = {check: row["result"] for check, row in rows.items() if row["status"] == "FAIL"}
    assert failed == {} and run["state"] == "success", failed
    assert rows["triggerer"]["status"] == "OK"
    assert rows["audit log"]["result"].endswith("1 Celery worker(s) answered a ping"), rows["audit log"]
    assert rows["keystore rcs-dc2-a (DC2) from the triggerer"]["status"] == "OK"

    admin = engine.api("admin")
    original = engine.topology_path.read_text(encoding="utf-8")
    document = yaml.safe_load(original)
    dcs = {dc["site"]: dc for dc in document["data_centers"]}
    dcs["DC3"].setdefault("rws", {})["conn_id"] = "gir_rws_nowhere"
    document["failover"]["approvers"].append({"id": "ghost"})
    blocker = Path(engine.data_dir) / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    document["failover"]["audit_log"] = f"file://{blocker}/audit"
    rcs = next(r for r in dcs["DC2"]["rcs"] if r["name"] == "rcs-dc2-a")
    rcs["keystore"] = rcs["keystore"].replace("keystore.p12", "gone.p12")
    dcs["DC1"]["speechminer"]["index_backup"] = f"file://{engine.data_dir}/unmounted-share/dc1/index-backup"
    pool = admin.get("/pools/gir_rws_dc2")
    try:
        engine.topology_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        resized = {"name": "gir_rws_dc2", "slots": 3, "include_deferred": pool["include_deferred"]}
        admin.request("PATCH", "/pools/gir_rws_dc2", json=resized)
        run, rows = _run_doctor(engine)
    finally:
        engine.topology_path.write_text(original, encoding="utf-8")
        restored = {
            "name": "gir_rws_dc2",
            "slots": pool["slots"],
            "include_deferred": pool["include_deferred"],
        }
        admin.request("PATCH", "/pools/gir_rws_dc2", json=restored)
        blocker.unlink()
    assert run["state"] == "failed"
    expected = {
        "RWS DC3": "connection 'gir_rws_nowhere' does not exist",
        "genesys environment": "(not compared, no answer: DC3)",
        "pool gir_rws_dc2": "has 3 slot(s), the topology intends 1",
        "approver ghost": "not a user of SimpleAuthManager",
        "audit log": "not writable",
        "keystore rcs-dc2-a (DC2) from the worker": "file does not exist",
        "keystore rcs-dc2-a (DC2) from the triggerer": "file does not exist",
        "SpeechMiner source (DC1) from the worker": "the share is not mounted on this worker",
        "SpeechMiner source (DC1) from the triggerer": "the share is not mounted on this worker",
    }
    failed = {check: row["result"] for check, row in rows.items() if row["status"] == "FAIL"}
    assert set(failed) == set(expected), failed
    for check, text in expected.items():
        assert text in failed[check], (check, failed[check])
        assert rows[check]["fix"], check
