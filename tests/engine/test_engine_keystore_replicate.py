"""Engine test: the RCS keystore replication on the real scheduler, approved through the REST API.

The demo's story (``make demo-drift``, ``make demo-missing``, ``make demo-replicate``) on CeleryExecutor:
one keystore drifted and one missing, the check red; a self-approved replication writes nothing (the
shared two-person rule, as for the failover); one approved by another person fixes both, keeps the
drifted keystore as ``.bak-``, and the check is green afterwards.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from engine_stack import EngineStack

pytestmark = pytest.mark.engine

CHECK_DAG, REPLICATE_DAG = "gir_rcs_keystore_check", "gir_rcs_keystore_replicate"
APPROVE = "approve_replication"


def engine_topology(engine: EngineStack) -> Any:
    """The engine's topology with its data folder expanded (its URLs name ${GIR_DATA_DIR})."""
    previous = os.environ.get("GIR_DATA_DIR")
    os.environ["GIR_DATA_DIR"] = str(engine.data_dir)
    try:
        return engine.topology()
    finally:
        if previous is None:
            os.environ.pop("GIR_DATA_DIR", None)
        else:
            os.environ["GIR_DATA_DIR"] = previous


def audit_records(engine: EngineStack, run_id: str) -> list[dict[str, Any]]:
    folder = engine.data_dir / "audit" / "keystore-replication"
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return [r for r in records if r["run_id"] == run_id]


def run_check(engine: EngineStack) -> str:
    admin = engine.api("admin")
    run = admin.trigger(CHECK_DAG)
    admin.unpause(CHECK_DAG)
    finished = admin.wait_run_finished(CHECK_DAG, run["dag_run_id"], timeout=180)
    for other in admin.runs(CHECK_DAG):  # a scheduled run unpausing started
        admin.wait_run_finished(CHECK_DAG, other["dag_run_id"], timeout=180)
    admin.pause(CHECK_DAG)
    return str(finished["state"])


def test_replication_needs_another_person_then_fixes_drift_and_missing(engine: EngineStack) -> None:
    from include.gir_sim.demo_data import drift_keystore, keystore_paths

    admin, approver, oncall = engine.api("admin"), engine.api("approver"), engine.api("oncall")
    topology = engine_topology(engine)
    paths = keystore_paths(topology)
    drift_keystore(topology, "rcs-dc2-a", engine.keystore_password)
    paths["rcs-dc3-a"].unlink()
    drifted, reference = paths["rcs-dc2-a"].read_bytes(), paths["rcs-dc1-a"].read_bytes()
    assert run_check(engine) == "failed"
    admin.unpause(REPLICATE_DAG)

    # admin triggers and approves it himself: the HITL API accepts (admin is an approver), our rule refuses.
    run_id = admin.trigger(REPLICATE_DAG, {"reason": "engine test: self-approval"})["dag_run_id"]
    admin.wait_task_state(REPLICATE_DAG, run_id, APPROVE, ["awaiting_input"], timeout=180)
    asked = admin.hitl_detail(REPLICATE_DAG, run_id, APPROVE)
    assert "[rcs-dc2-a, rcs-dc3-a]" in asked["subject"]
    refused = oncall.answer_hitl(REPLICATE_DAG, run_id, APPROVE, ["Approve"], expect=(403,))
    assert "not a respondent" in json.dumps(refused)
    admin.answer_hitl(REPLICATE_DAG, run_id, APPROVE, ["Approve"])
    admin.wait_run(REPLICATE_DAG, run_id, state="failed", timeout=180)
    (audit,) = audit_records(engine, run_id)
    assert audit["outcome"] == "self-approval-refused", audit["detail"]
    assert paths["rcs-dc2-a"].read_bytes() == drifted and not paths["rcs-dc3-a"].exists(), "nothing written"

    # admin triggers, approver (another person) approves: both fixed, the drifted one kept as .bak-.
    run_id = admin.trigger(REPLICATE_DAG, {"reason": "engine test: replicate after drift"})["dag_run_id"]
    admin.wait_task_state(REPLICATE_DAG, run_id, APPROVE, ["awaiting_input"], timeout=180)
    answer = approver.answer_hitl(REPLICATE_DAG, run_id, APPROVE, ["Approve"])
    assert answer["responded_by"]["id"] == "approver"
    admin.wait_run(REPLICATE_DAG, run_id, timeout=240)
    (audit,) = audit_records(engine, run_id)
    assert audit["outcome"] == "replicated", audit["detail"]
    assert audit["approval"]["responded_by_user"]["id"] == "approver"
    assert {p.read_bytes() for p in paths.values()} == {reference}
    (backup,) = paths["rcs-dc2-a"].parent.glob("keystore.p12.bak-*")
    assert backup.read_bytes() == drifted
    assert [f for f in audit["follow_ups"] if f.startswith("restart RCS instance")] == [
        f"restart RCS instance rcs-dc2-a ({audit['preflight']['targets'][0]['url']}): RCS reads its keystore "
        "at start",
        f"restart RCS instance rcs-dc3-a ({audit['preflight']['targets'][1]['url']}): RCS reads its keystore "
        "at start",
    ]
    assert run_check(engine) == "success"
    admin.pause(REPLICATE_DAG)
