"""Notifications from real runs (dag.test()) delivered to a real local receiver through Apprise.

Each event's message is read back from the receiver and checked for what the on-call needs (DAG, run,
failed tasks, error line, links; requester, target, reason, warnings for an approval; the outcome) and
for what must never be there: the random passwords of the run's connections, connection URIs, keystore
bytes. A broken channel is shown to change nothing about a run.
"""

from __future__ import annotations

import base64
import logging
import secrets
import textwrap
from pathlib import Path
from typing import Any

import pytest

from include.gir_sim.demo_data import generate_keystores
from include.gir_sim.notify_receiver import NotificationReceiver
from tests.conftest import SimulatedGir
from tests.include.notifications import notification_support
from tests.include.notifications.notification_support import full_text, wait_for_messages

receiver = notification_support.receiver  # the fixture
pytestmark = pytest.mark.usefixtures("airflow_api")  # the run-failed message reads failed tasks via REST


def _load(dag_file: Path, dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_file))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def _assert_no_secret(text: str, secrets_: list[str], keystores: list[Path] = ()) -> None:
    for secret in secrets_:
        assert secret not in text
    for path in keystores:
        assert base64.b64encode(path.read_bytes()).decode()[:40] not in text


def test_a_failed_keystore_check_tells_the_dag_run_task_error_and_link(
    gir: SimulatedGir, receiver: NotificationReceiver
) -> None:
    from tests.conftest import REPO_ROOT

    paths = generate_keystores(gir.topology, gir.keystore_password, drift=["rcs-dc2-a"])
    run = _load(REPO_ROOT / "dags" / "gir_rcs_keystore_check.py", "gir_rcs_keystore_check").test()
    assert str(run.state) == "failed"

    (message,) = wait_for_messages(receiver, 1, title_contains="FAILED")
    text = full_text(message)
    assert message["type"] == "failure"
    assert message["title"] == "[gir-ops] FAILED: gir_rcs_keystore_check (enforce_replication)"
    assert "DAG: gir_rcs_keystore_check" in text and f"Run: {run.run_id}" in text
    # The error line of the failed task, as it raised it.
    (error_line,) = [line for line in text.splitlines() if line.startswith("- enforce_replication: ")]
    assert "AirflowFailException" in error_line and "rcs-dc2-a" in error_line and "drift" in error_line
    assert f"/dags/gir_rcs_keystore_check/runs/{run.run_id.replace('+', '%2B').replace(':', '%3A')}" in text
    _assert_no_secret(text, [gir.keystore_password, gir.ops_password], list(paths.values()))
    assert len(receiver.received()) == 1, "one message per failed run"


PROBE_DAG = """
from __future__ import annotations

from airflow.sdk import BaseHook, dag, task

from include.gir_ops import notifications
from include.gir_ops.topology import load_topology

TOPOLOGY = load_topology()


@dag(
    dag_id="gir_notify_probe",
    schedule=None,
    tags=["gir"],
    **notifications.dag_kwargs(TOPOLOGY, "gir_notify_probe", default_args={{"owner": "gir-ops"}}),
)
def gir_notify_probe():
    @task
    def fine():
        return "ok"

    @task
    def call_rws():
        conn = BaseHook.get_connection("gir_rws_dc2")
        raise RuntimeError(
            f"RWS refused ops:{{conn.password}}@{{conn.host}} "
            "db postgresql://airflow:{db_password}@db.internal:5432/airflow "
            "keystore b'0\\\\x82\\\\x04\\\\xa1\\\\x02\\\\x01\\\\x03' password={other_password}"
        )

    fine() >> call_rws()


gir_notify_probe()
"""


def test_no_message_ever_carries_a_password_a_connection_uri_or_keystore_bytes(
    gir: SimulatedGir, receiver: NotificationReceiver, tmp_path: Path
) -> None:
    """A DAG that adopts notifications in one line and fails with every kind of secret in its error."""
    db_password, other_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    dag_file = tmp_path / "gir_notify_probe.py"
    dag_file.write_text(
        textwrap.dedent(PROBE_DAG.format(db_password=db_password, other_password=other_password))
    )
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()  # the bundle row the DAG belongs to, as dag.test() makes it

    bag = DagBag(dag_folder=str(dag_file))
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)  # outside the dags folder: serialize it as the processor would
    run = bag.dags["gir_notify_probe"].test()
    assert str(run.state) == "failed"

    (message,) = wait_for_messages(receiver, 1, title_contains="FAILED")
    text = full_text(message)
    assert message["title"] == "[gir-ops] FAILED: gir_notify_probe (call_rws)"
    (error_line,) = [line for line in text.splitlines() if line.startswith("- call_rws: ")]
    assert error_line.startswith("- call_rws: RuntimeError: RWS refused")
    _assert_no_secret(text, [gir.ops_password, db_password, other_password])
    assert "postgresql://" not in text and "\\x82" not in text and "0\\x82" not in text
    assert "<URI with credentials removed>" in text and "<bytes removed>" in text


def test_a_broken_channel_is_logged_and_the_run_ends_as_it_would(
    gir: SimulatedGir, receiver: NotificationReceiver, caplog: Any
) -> None:
    from tests.conftest import REPO_ROOT

    receiver.fail_with = 503
    generate_keystores(gir.topology, gir.keystore_password, drift=["rcs-dc2-a"])
    with caplog.at_level(logging.ERROR):
        run = _load(REPO_ROOT / "dags" / "gir_rcs_keystore_check.py", "gir_rcs_keystore_check").test()
    assert str(run.state) == "failed"  # failed by enforce_replication, as without notifications
    assert "Notification run_failed NOT delivered" in caplog.text
    assert receiver.received() == []


# --- the failover: approval waiting (HITL notifier) and the outcome -----------------------------------

from tests.dags import test_failover_dag as failover_support  # noqa: E402 - the failover tests' harness

api = failover_support.api  # the fixtures: the API app, the fast simulated deployment, the parsed DAG
fast_gir = failover_support.fast_gir
failover_dag = failover_support.failover_dag


def test_the_approver_is_told_what_waits_and_everyone_how_it_ended(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any, receiver: NotificationReceiver
) -> None:
    seen: dict[str, Any] = {}

    def read_the_message_then_approve(run: failover_support.FailoverRun) -> None:
        seen["run_id"] = run.wait_for_approval_request()
        seen["approval"] = wait_for_messages(receiver, 1, title_contains="APPROVAL WAITING")
        seen["answer"] = run.respond(api, "approver", "Approve")

    run = failover_support.FailoverRun(
        failover_dag,
        failover_support.conf("DC2", dry_run=True, change_ticket="CHG-77"),
        triggered_by="oncall",
    )
    dag_run = run.run(read_the_message_then_approve)
    assert str(dag_run.state) == "success"
    assert seen["answer"].status_code == 200, seen["answer"].text

    (approval,) = seen["approval"]
    text = full_text(approval)
    assert approval["type"] == "warning"
    assert approval["title"].startswith("[gir-ops] APPROVAL WAITING: eServices failover DC1 → DC2 (DRY RUN)")
    assert "Requested by: oncall" in text
    assert "Target: DC2" in text
    assert "Reason: DC1 Interaction Server down since 02:10" in text
    assert "Approvers: approver, second (never the requester)" in text
    assert "No answer within 1 min counts as a rejection." in text
    # Pre-flight found no keystore check and no shipped backup in this fresh deployment: both are warned of.
    warnings = text.split("Pre-flight warnings:")[1].split("Approve or reject:")[0]
    assert warnings.count("\n- ") >= 1 and "keystore" in warnings.lower(), warnings
    link = text.split("Approve or reject: ")[1].splitlines()[0]
    run_id = seen["run_id"]
    assert link.startswith("http")
    assert link.endswith("/tasks/approve_failover/required_actions?map_index=-1"), link
    assert "/dags/gir_eservices_failover/runs/" in link

    (outcome,) = wait_for_messages(receiver, 1, title_contains="FAILOVER")
    text = full_text(outcome)
    assert outcome["type"] == "success"
    assert outcome["title"] == "[gir-ops] FAILOVER DRY-RUN: gir_eservices_failover to DC2"
    assert "Outcome: dry-run" in text and "Requested by: oncall" in text and "Target: DC2" in text
    assert "Audit record: /" in text or "Audit record: file:" in text
    assert run_id.split("+")[0][:10] in text
    assert not [m for m in receiver.received() if "FAILED" in (m["title"] or "")], "a dry run did not fail"
    _assert_no_secret(
        "\n".join(full_text(m) for m in receiver.received()),
        [fast_gir.ops_password, fast_gir.keystore_password],
    )


def test_an_approval_notification_that_cannot_be_delivered_does_not_hold_up_the_approval(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any, receiver: NotificationReceiver, caplog: Any
) -> None:
    receiver.fail_with = 500

    def approve(run: failover_support.FailoverRun) -> None:
        run.wait_for_approval_request()
        run.respond(api, "approver", "Approve")

    with caplog.at_level(logging.ERROR):
        dag_run = failover_support.FailoverRun(
            failover_dag, failover_support.conf("DC2", dry_run=True), triggered_by="oncall"
        ).run(approve)
    assert str(dag_run.state) == "success"
    assert failover_support.states(dag_run)["approve_failover"] == "success"
    assert receiver.received() == []
    logged = caplog.text
    assert "Notification approval_waiting NOT delivered" in logged
    assert "Notification failover_outcome NOT delivered" in logged
