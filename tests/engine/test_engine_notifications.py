"""Notifications on the real engine: the HITL notifier of the failover's approval, run by the Celery
worker when the approval is requested, and the outcome sent by the outcome task's callbacks; both read
back from the local Apprise receiver (json://127.0.0.1:PORT) the engine's connection ``gir_apprise``
points at.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import requests
from engine_stack import EngineStack, wait_for

pytestmark = pytest.mark.engine

FAILOVER_DAG = "gir_eservices_failover"


def _messages(engine: EngineStack, title_contains: str, run_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in engine.notifications.received()
        if title_contains in (m["title"] or "")
        and (run_id in (m["message"] or "") or quote(run_id, safe="") in (m["message"] or ""))
    ]


@pytest.mark.timeout(600)
def test_the_approver_is_notified_with_the_link_and_everyone_of_the_outcome(engine: EngineStack) -> None:
    oncall, approver = engine.api("oncall"), engine.api("approver")
    current = requests.get(f"{engine.sim_url('DC1')}/_sim/environment", timeout=10).json()["current_site"]
    target = "DC3" if current != "DC3" else "DC2"
    reason = "engine test: notify the approver of a dry run"
    run = oncall.trigger(
        FAILOVER_DAG, {"target_site": target, "reason": reason, "change_ticket": "CHG-N", "dry_run": True}
    )
    run_id = run["dag_run_id"]
    oncall.wait_task_state(FAILOVER_DAG, run_id, "approve_failover", ["awaiting_input"], timeout=150)

    (approval,) = wait_for(
        "the approval-waiting notification",
        lambda: _messages(engine, "APPROVAL WAITING", run_id) or None,
        timeout=60,
        interval=0.5,
    )
    text = approval["message"]
    assert approval["type"] == "warning"
    assert f"→ {target} (DRY RUN)" in approval["title"]
    assert "Requested by: oncall" in text
    assert f"Target: {target}" in text
    assert f"Reason: {reason}" in text
    assert "Pre-flight warnings:" in text
    link = text.split("Approve or reject: ")[1].splitlines()[0]
    # As the HITL operator's own generate_link_to_ui builds it from [api] base_url.
    assert link == (
        f"{engine.api_url}/dags/{FAILOVER_DAG}/runs/{run_id}/tasks/approve_failover/required_actions?map_index=-1"
    ), link
    # The link opens the UI page of this very request (behind Airflow's login, as every UI page).
    assert requests.get(link, timeout=30).status_code == 200
    for secret in (engine.ops_password, engine.keystore_password, engine.airflow_api_password):
        assert secret not in text

    approver.answer_hitl(FAILOVER_DAG, run_id, "approve_failover", ["Approve"])
    oncall.wait_run(FAILOVER_DAG, run_id, timeout=240)
    (outcome,) = wait_for(
        "the failover-outcome notification",
        lambda: _messages(engine, "FAILOVER", run_id) or None,
        timeout=60,
        interval=0.5,
    )
    assert outcome["type"] == "success"
    assert outcome["title"] == f"[gir-ops] FAILOVER DRY-RUN: {FAILOVER_DAG} to {target}"
    assert "Outcome: dry-run" in outcome["message"] and "Requested by: oncall" in outcome["message"]
    assert "Audit record: " in outcome["message"] and "not written" not in outcome["message"]


@pytest.mark.timeout(420)
def test_a_failed_run_is_notified_by_the_dag_processor_with_the_error_line(
    engine: EngineStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG-level failure callback runs in the dag-processor: it reads the failed tasks and their error
    lines through the REST API (gir_airflow_api) and sends the message."""
    from include.gir_sim import demo_data

    monkeypatch.setenv("GIR_DATA_DIR", str(engine.data_dir))  # the topology's keystore URLs expand it
    keystore = demo_data.keystore_paths(engine.topology())["rcs-dc2-a"]
    original = keystore.read_bytes()
    admin = engine.api("admin")
    dag_id = "gir_rcs_keystore_check"
    try:
        demo_data.drift_keystore(engine.topology(), "rcs-dc2-a", engine.keystore_password)
        run_id = admin.trigger(dag_id)["dag_run_id"]
        admin.unpause(dag_id)
        admin.wait_run(dag_id, run_id, state="failed", timeout=180)
        for other in admin.runs(dag_id):  # a scheduled run the unpause may have started
            admin.wait_run_finished(dag_id, other["dag_run_id"], timeout=180)
        admin.pause(dag_id)
        (message,) = wait_for(
            "the run-failed notification",
            lambda: _messages(engine, "FAILED: gir_rcs_keystore_check", run_id) or None,
            timeout=90,
            interval=1.0,
        )
    finally:
        keystore.write_bytes(original)
    text = message["message"]
    assert message["type"] == "failure"
    assert f"Run: {run_id}" in text
    (error_line,) = [line for line in text.splitlines() if line.startswith("- enforce_replication: ")]
    assert "rcs-dc2-a (DC2): drift" in error_line
    assert f"{engine.api_url}/dags/{dag_id}/runs/{quote(run_id, safe='')}" in text
    for secret in (engine.ops_password, engine.keystore_password, engine.airflow_api_password):
        assert secret not in text
