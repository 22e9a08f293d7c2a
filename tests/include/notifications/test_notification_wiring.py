"""What ``notifications.dag_kwargs`` and ``approval_notifiers`` add, as the topology says."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from include.gir_ops import notifications
from include.gir_ops.notifications.notifiers import (
    ApprovalWaitingNotifier,
    FailoverOutcomeNotifier,
    RunFailedNotifier,
    record_failure,
)
from include.gir_ops.topology import TopologyError, parse_topology
from tests.conftest import DEFAULT_TOPOLOGY, deep_merge, default_topology_dict

DEFAULTS = {"owner": "gir-ops", "retries": 2}


def topology(overrides: dict | None = None, *, without_notifications: bool = False):
    document = deep_merge(default_topology_dict(), overrides or {})
    if without_notifications:
        document.pop("notifications", None)
    return parse_topology(yaml.safe_dump(document), str(DEFAULT_TOPOLOGY))


def test_without_a_notifications_section_only_the_given_default_args_come_back() -> None:
    plain = topology(without_notifications=True)
    for dag_id in ("gir_es_reindex_dc2", "gir_rcs_keystore_check", "gir_eservices_failover"):
        assert notifications.dag_kwargs(plain, dag_id, default_args=DEFAULTS) == {"default_args": DEFAULTS}
    assert notifications.approval_notifiers(plain) == []


def test_every_dag_gets_the_failure_message_and_the_tasks_keep_their_error_line() -> None:
    kwargs = notifications.dag_kwargs(topology(), "gir_speechminer_backup_ship", default_args=DEFAULTS)
    assert kwargs["default_args"] == {**DEFAULTS, "on_failure_callback": record_failure}
    (notifier,) = kwargs["on_failure_callback"]
    assert isinstance(notifier, RunFailedNotifier) and notifier.conn_id == "gir_apprise"
    assert "gir_rws_dc2" in notifier.secret_conn_ids and "gir_rcs_keystore" in notifier.secret_conn_ids
    assert DEFAULTS == {"owner": "gir-ops", "retries": 2}, "the caller's dict is not changed"


def test_the_failover_reports_its_outcome_and_failure_from_its_outcome_task() -> None:
    kwargs = notifications.dag_kwargs(topology(), "gir_eservices_failover", default_args=DEFAULTS)
    assert "on_failure_callback" not in kwargs and "deadline" not in kwargs
    on_failure = kwargs["default_args"]["on_failure_callback"]
    assert on_failure[0] is record_failure
    assert [type(n) for n in on_failure[1:]] == [RunFailedNotifier, FailoverOutcomeNotifier]
    (on_success,) = kwargs["default_args"]["on_success_callback"]
    assert isinstance(on_success, FailoverOutcomeNotifier)
    assert {n.only_task_id for n in [*on_failure[1:], on_success]} == {"outcome"}
    (approval,) = notifications.approval_notifiers(topology(), record_task_id="preflight")
    assert isinstance(approval, ApprovalWaitingNotifier) and approval.record_task_id == "preflight"


def test_per_event_routes_and_switches() -> None:
    routed = topology(
        {
            "notifications": {
                "tag": "oncall",
                "run_failed": {"enabled": False},
                "approval_waiting": {"conn_id": "gir_apprise_approvers", "tag": "approvers"},
                "deadline_missed": {"enabled": False},
            }
        }
    )
    kwargs = notifications.dag_kwargs(routed, "gir_eservices_failover", default_args=DEFAULTS)
    (outcome,) = kwargs["default_args"]["on_failure_callback"]
    assert isinstance(outcome, FailoverOutcomeNotifier) and outcome.tag == "oncall"
    assert notifications.dag_kwargs(routed, "gir_rcs_keystore_check", default_args=DEFAULTS) == {
        "default_args": DEFAULTS
    }
    (approval,) = notifications.approval_notifiers(routed)
    assert (approval.conn_id, approval.tag) == ("gir_apprise_approvers", "approvers")
    assert "deadline" not in notifications.dag_kwargs(routed, "gir_rcs_keystore_check")


def test_deadlines_follow_the_topology() -> None:
    settings = topology({"shipping": {"deadline_hours": 9.5}, "keystore_check": {"schedule": "*/30 * * * *"}})
    document = default_topology_dict()
    document["data_centers"][1]["reindex"]["deadline_hours"] = 3
    settings_dc2 = parse_topology(yaml.safe_dump(document))
    assert notifications.dag_kwargs(settings_dc2, "gir_es_reindex_dc2")["deadline"].interval == timedelta(
        hours=3
    )
    assert notifications.dag_kwargs(settings_dc2, "gir_es_reindex_dc3")["deadline"].interval == timedelta(
        hours=6
    )
    # DC1 does not re-index nightly: its manual-only DAG's catch-up runs may rightly take longer.
    assert not settings_dc2.site("DC1").reindex.enabled
    assert "deadline" not in notifications.dag_kwargs(settings_dc2, "gir_es_reindex_dc1")
    ship = notifications.dag_kwargs(settings, "gir_speechminer_backup_ship")["deadline"]
    assert ship.interval == timedelta(hours=9.5)
    assert ship.reference.reference_name == "DagRunQueuedAtDeadline"
    assert ship.callback.path == "include.gir_ops.notifications.notifiers.deadline_missed"
    assert "not shipped to DC2 in time" in ship.callback.kwargs["what"]
    keystore = notifications.dag_kwargs(settings, "gir_rcs_keystore_check")["deadline"]
    assert keystore.interval == timedelta(hours=1), "two periods of a 30-minute schedule"
    assert "did not run for 2 periods" in keystore.callback.kwargs["what"]


def test_cron_periods() -> None:
    assert notifications.cron_period("0 * * * *", "UTC") == timedelta(hours=1)
    assert notifications.cron_period("30 3 * * *", "Europe/Paris") == timedelta(days=1)
    assert notifications.cron_period("0 2 * * 1-5", "UTC") == timedelta(days=3)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"run_faild": {}}, "notifications.run_faild: unknown key"),
        ({"conn_id": ""}, "notifications.conn_id"),
        ({"approval_waiting": {"enabled": "sometimes"}}, "notifications.approval_waiting.enabled"),
    ],
)
def test_a_wrong_notifications_section_names_the_field(section: dict, expected: str) -> None:
    document = default_topology_dict()
    document["notifications"] = section
    with pytest.raises(TopologyError, match=expected.replace(".", r"\.")):
        parse_topology(yaml.safe_dump(document))


def test_deadline_hours_must_be_positive() -> None:
    document = default_topology_dict()
    document["shipping"]["deadline_hours"] = 0
    with pytest.raises(TopologyError, match=r"shipping\.deadline_hours"):
        parse_topology(yaml.safe_dump(document))


def test_a_dag_with_a_verdict_task_sends_the_failure_from_it() -> None:
    kwargs = notifications.dag_kwargs(
        topology(), "gir_rcs_keystore_replicate", default_args=DEFAULTS, verdict_task="outcome"
    )
    assert "on_failure_callback" not in kwargs and "on_success_callback" not in kwargs["default_args"]
    record, run_failed = kwargs["default_args"]["on_failure_callback"]
    assert record is record_failure
    assert isinstance(run_failed, RunFailedNotifier) and run_failed.only_task_id == "outcome"
