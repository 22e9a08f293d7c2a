"""gir_rcs_keystore_replicate adopts notifications in one line (``verdict_task``): a failed run tells the
on-call, from its ``outcome`` task, through a real local Apprise receiver. The DAG's own harness (its
simulated keystores, the API app, the run helper) comes from its test module."""

from __future__ import annotations

from typing import Any

from include.gir_ops.keystore import spec
from include.gir_sim.demo_data import keystore_paths
from include.gir_sim.notify_receiver import NotificationReceiver
from tests.conftest import SimulatedGir
from tests.dags import test_keystore_replicate_dag as replicate
from tests.include.notifications import notification_support
from tests.include.notifications.notification_support import full_text, wait_for_messages

# The fixtures: the replication's simulated deployment and parsed DAGs, the API app, the receiver.
gir = replicate.gir
dags = replicate.dags
api = replicate.api
receiver = notification_support.receiver
pytestmark = replicate.pytestmark


def test_a_refused_replication_tells_the_on_call_which_task_failed_and_why(
    gir: SimulatedGir, dags: dict[str, Any], receiver: NotificationReceiver
) -> None:
    replicate.run_check(dags)
    reference = keystore_paths(gir.topology)["rcs-dc1-a"]
    reference.write_bytes(reference.read_bytes()[:-40])

    dag_run = replicate.Run(dags[spec.REPLICATE_DAG_ID], {"reason": replicate.REASON}).run()
    assert str(dag_run.state) == "failed"

    (message,) = wait_for_messages(receiver, 1, title_contains="FAILED: gir_rcs_keystore_replicate")
    text = full_text(message)
    assert message["type"] == "failure"
    assert f"Run: {dag_run.run_id}" in text
    (preflight,) = [line for line in text.splitlines() if line.startswith(f"- {spec.PREFLIGHT}: ")]
    assert "rcs-dc1-a is unreadable" in preflight
    assert any(line.startswith(f"- {spec.OUTCOME}: ") for line in text.splitlines())
    for secret in (gir.keystore_password, gir.ops_password):
        assert secret not in text
    assert not [m for m in receiver.received() if "APPROVAL WAITING" in (m["title"] or "")], (
        "nobody is asked when pre-flight refuses"
    )
