"""The catch-up re-index after a switch-back: the outage window from the audit log, one run each."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops.failover import catchup
from include.gir_ops.failover.spec import Outcome
from include.gir_ops.topology import Topology, load_topology

LEFT = datetime(2026, 11, 20, 2, 10, 30, tzinfo=UTC)
BACK = datetime(2026, 11, 20, 9, 40, tzinfo=UTC)


def topology_with_audit(tmp_path: Path) -> Topology:
    base = load_topology()
    failover = base.failover.model_copy(update={"audit_log": f"file://{tmp_path}/audit"})
    return base.model_copy(update={"failover": failover})


def write_record(tmp_path: Path, name: str, **record: Any) -> None:
    folder = tmp_path / "audit"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")


def away(switched_at: datetime | None, *, posted: bool = True, target: str = "DC2", **extra: Any) -> dict:
    return {
        "run_id": f"run-{target}-{switched_at}",
        "target_site": target,
        "outcome": "verified",
        "run_started_at": (switched_at or LEFT).isoformat(),
        "switch": {"posted": posted, "switched_at": switched_at.isoformat() if switched_at else None},
        **extra,
    }


def plan(topology: Topology, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "target_site": "DC1",
        "outcome": Outcome.VERIFIED,
        "switched_at": BACK.timestamp(),
        "failover_run_id": "manual__2026-11-20T09:35:00+00:00",
        "now": BACK + timedelta(hours=2),
    }
    return catchup.plan_catch_up(topology, **{**arguments, **overrides})


def test_the_window_runs_from_the_newest_failover_away_to_the_switch_back_in_whole_hours(
    tmp_path: Path,
) -> None:
    topology = topology_with_audit(tmp_path)
    write_record(tmp_path, "older", **away(LEFT - timedelta(days=3)))
    write_record(tmp_path, "newest", **away(LEFT))
    write_record(tmp_path, "not-sent", **away(LEFT + timedelta(hours=1), posted=False))
    write_record(tmp_path, "a-switch-back", **away(LEFT + timedelta(hours=2), target="DC1"))
    write_record(tmp_path, "later", **away(BACK + timedelta(hours=1)))
    (tmp_path / "audit" / "garbage.json").write_text("{", encoding="utf-8")

    result = plan(topology)

    assert result["status"] == "trigger"
    assert result["dag_id"] == "gir_es_reindex_dc1"
    assert result["dag_run_id"] == "gir_failover_catch_up__manual__2026-11-20T09_35_00_00_00"
    assert (result["from"], result["to"]) == ("2026-11-20T02:00:00+00:00", "2026-11-20T10:00:00+00:00")
    assert result["outage"]["failover_run_id"] == f"run-DC2-{LEFT}"
    assert result["outage"]["left_at"] == LEFT.isoformat()


def test_to_is_the_switch_back_itself_while_its_hour_is_still_running(tmp_path: Path) -> None:
    """The re-index DAG refuses a 'to' in the future; it widens the exact time to the same whole hour."""
    topology = topology_with_audit(tmp_path)
    write_record(tmp_path, "away", **away(LEFT))
    result = plan(topology, now=BACK + timedelta(minutes=5))
    assert result["to"] == BACK.isoformat() and result["window"][1] == "2026-11-20T10:00:00+00:00"


def test_an_old_record_without_switched_at_uses_its_run_start(tmp_path: Path) -> None:
    topology = topology_with_audit(tmp_path)
    record = away(None)
    record["run_started_at"] = "2026-11-20T01:59:00+00:00"
    write_record(tmp_path, "old-format", **record)
    assert plan(topology)["from"] == "2026-11-20T01:00:00+00:00"


@pytest.mark.parametrize(
    ("overrides", "status", "text"),
    [
        ({"target_site": "DC2"}, "not-needed", "not a switch back to the primary DC1"),
        ({"outcome": Outcome.UNVERIFIED}, "not-needed", "ended unverified, not verified or confirmed"),
        ({"outcome": Outcome.CONFIRMED}, "trigger", "re-index of DC1 for the outage"),
    ],
    ids=["failover-away", "unverified-switch-back", "confirmed-switch-back"],
)
def test_only_a_verified_or_confirmed_switch_back_triggers(
    tmp_path: Path, overrides: dict[str, Any], status: str, text: str
) -> None:
    topology = topology_with_audit(tmp_path)
    write_record(tmp_path, "away", **away(LEFT))
    result = plan(topology, **overrides)
    assert result["status"] == status and text in result["detail"]


def test_without_a_failover_in_the_audit_log_it_says_how_to_trigger_by_hand(tmp_path: Path) -> None:
    result = plan(topology_with_audit(tmp_path))
    assert result["status"] == "no-failover-found"
    assert "holds no failover away from DC1" in result["detail"]
    assert "/api/v2/dags/gir_es_reindex_dc1/dagRuns" in result["detail"]


class FakeApi:
    def __init__(self, existing: bool = False, paused: bool = False) -> None:
        self.existing = existing
        self.paused = paused
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def trigger_dag_run(self, dag_id: str, run_id: str, conf: dict[str, Any], *, note: str | None = None):
        self.calls.append((dag_id, run_id, conf))
        return (not self.existing, {"dag_run_id": run_id, "state": "queued"})

    def dag(self, dag_id: str) -> dict[str, Any]:
        return {"dag_id": dag_id, "is_paused": self.paused}


def test_trigger_sends_the_window_as_from_to_and_409_reports_already_triggered(tmp_path: Path) -> None:
    topology = topology_with_audit(tmp_path)
    write_record(tmp_path, "away", **away(LEFT))
    planned = plan(topology)
    api = FakeApi()
    first = catchup.trigger_catch_up(planned, api, "manual__x")
    assert first["status"] == "triggered"
    assert api.calls == [
        (
            "gir_es_reindex_dc1",
            planned["dag_run_id"],
            {"from": "2026-11-20T02:00:00+00:00", "to": "2026-11-20T10:00:00+00:00"},
        )
    ]
    again = catchup.trigger_catch_up(planned, FakeApi(existing=True, paused=True), "manual__x")
    assert again["status"] == "already-triggered"
    assert "already triggered earlier (409), not again" in again["detail"]
    assert "PAUSED: unpause it" in again["detail"]


def test_a_failed_paused_check_does_not_make_a_triggered_run_look_failed(tmp_path: Path) -> None:
    from include.gir_ops.airflow_api import AirflowApiAuthError

    class NoDagRead(FakeApi):
        def dag(self, dag_id: str) -> dict[str, Any]:
            raise AirflowApiAuthError("may not read DAGs (HTTP 403)")

    topology = topology_with_audit(tmp_path)
    write_record(tmp_path, "away", **away(LEFT))
    result = catchup.trigger_catch_up(plan(topology), NoDagRead(), "manual__x")
    assert result["status"] == "triggered"
    assert "could not read whether gir_es_reindex_dc1 is paused" in result["detail"]


def test_a_short_outage_inside_the_running_hour_still_gives_the_reindex_dag_an_hour(tmp_path: Path) -> None:
    """from/to must be an hour apart for the re-index DAG: the window then starts an hour earlier."""
    from include.gir_ops.reindex.windows import manual_range

    topology = topology_with_audit(tmp_path)
    left, back = BACK.replace(minute=5), BACK.replace(minute=40)
    write_record(tmp_path, "away", **away(left))
    result = plan(topology, switched_at=back.timestamp(), now=back + timedelta(minutes=2))
    assert (result["from"], result["to"]) == ("2026-11-20T08:00:00+00:00", back.isoformat())
    assert result["window"] == ["2026-11-20T08:00:00+00:00", "2026-11-20T10:00:00+00:00"]
    start, end = manual_range(result["from"], result["to"], now=back + timedelta(minutes=2))
    assert start <= left and end >= back
