"""The doctor's checks, one broken item at a time, each named in its row with what to do.

RWS checks run against the simulator; the pool, triggerer and approver checks against Airflow's own API
(served in-process) or a fake client where the auth manager differs; paths against real folders.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.gir_ops.doctor import checks
from include.gir_ops.doctor.report import format_table, summary, to_dict
from include.gir_ops.doctor.spec import Row, Status
from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH, TopologyError, load_topology, parse_topology
from tests.conftest import SimulatedGir, default_topology_dict


def _row(rows: list[Row], check: str) -> Row:
    found = [row for row in rows if row.check == check]
    assert found, f"no row {check!r} among {[r.check for r in rows]}"
    return found[0]


def _topology(tmp_path: Path, **overrides: Any) -> Any:
    document = default_topology_dict()
    document.update(overrides)
    return parse_topology(yaml.safe_dump(document), str(tmp_path / "t.yaml"))


# --- topology ---------------------------------------------------------------------------------------------


def test_without_gir_topology_the_demo_file_is_loaded_only_in_the_demo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GIR_TOPOLOGY", raising=False)
    monkeypatch.delenv("GIR_DEMO", raising=False)
    with pytest.raises(TopologyError, match=r"GIR_TOPOLOGY is not set: set it to your deployment's topology"):
        load_topology()
    monkeypatch.setenv("GIR_DEMO", "1")
    assert load_topology().primary_site == "DC1"


def test_the_bundled_topology_outside_the_demo_is_refused_by_path_and_by_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GIR_DEMO", raising=False)
    refused = checks.topology_in_use(DEFAULT_TOPOLOGY_PATH).row
    assert refused.status is Status.FAIL
    assert "the bundled demo topology is in use outside the demo" in refused.result
    assert "set GIR_TOPOLOGY to the copy" in refused.fix
    copy = tmp_path / "prod.yaml"
    shutil.copy(DEFAULT_TOPOLOGY_PATH, copy)
    assert checks.topology_in_use(copy).row.status is Status.FAIL
    monkeypatch.setenv("GIR_DEMO", "1")
    demo = checks.topology_in_use(DEFAULT_TOPOLOGY_PATH).row
    assert demo.status is Status.OK and "[the demo topology, GIR_DEMO=1]" in demo.result


def test_a_topology_of_its_own_is_named_with_path_and_short_hash(tmp_path: Path) -> None:
    import hashlib

    own = tmp_path / "prod.yaml"
    own.write_text(DEFAULT_TOPOLOGY_PATH.read_text(encoding="utf-8") + "\n# production\n", encoding="utf-8")
    row = checks.topology_in_use(own).row
    digest = hashlib.sha256(own.read_bytes()).hexdigest()[:12]
    assert row.status is Status.OK
    assert row.result.startswith(f"{own} (sha256 {digest}), primary DC1")


def test_a_broken_topology_is_one_failed_row_and_nothing_else_runs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("primary_site: DC9\ndata_centers: []\n", encoding="utf-8")
    rows = checks.worker_rows(bad, api_client_factory=lambda: pytest.fail("must not ask the API"))
    assert [(r.check, r.status) for r in rows] == [("topology", Status.FAIL)]
    assert "data_centers" in rows[0].result


# --- RWS ----------------------------------------------------------------------------------------------


def test_every_rws_answers_and_agrees_on_one_environment(gir: SimulatedGir) -> None:
    rows = checks.rws_rows(gir.topology)
    for site in gir.topology.sites:
        row = _row(rows, f"RWS {site}")
        assert row.status is Status.OK, row
        assert "answers GET genesys-environments as 'ops'" in row.result
    environment = _row(rows, "genesys environment")
    assert environment.status is Status.OK and "all answering DCs agree" in environment.result
    assert all(
        r["path"] == "/api/v2/ops/genesys-environments" and r["method"] == "GET" for r in gir.requests("DC2")
    )


def test_a_stopped_rws_a_missing_connection_and_a_wrong_password_are_each_named(
    gir: SimulatedGir, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    gir.simulator.stop_site("DC1")
    monkeypatch.delenv("AIRFLOW_CONN_GIR_RWS_DC2")
    dc3 = json.loads(gir.env["AIRFLOW_CONN_GIR_RWS_DC3"])
    monkeypatch.setenv("AIRFLOW_CONN_GIR_RWS_DC3", json.dumps({**dc3, "password": "wrong-password"}))
    rows = checks.rws_rows(gir.topology)
    dc1, dc2, dc3_row = (_row(rows, f"RWS {site}") for site in ("DC1", "DC2", "DC3"))
    assert dc1.status is Status.FAIL and "could not be reached" in dc1.result and "DC1's RWS is up" in dc1.fix
    assert dc2.status is Status.FAIL and dc2.result == "connection 'gir_rws_dc2' does not exist"
    assert "create HTTP connection 'gir_rws_dc2'" in dc2.fix
    assert dc3_row.status is Status.FAIL and "refused the credentials" in dc3_row.result
    assert _row(rows, "genesys environment").status is Status.FAIL


class _FakeRws:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def __enter__(self) -> _FakeRws:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def genesys_environments(self, **_: Any) -> tuple[None, list[str]]:
        return None, self.ids


def test_dcs_that_disagree_on_the_environment_fail_naming_each_id(tmp_path: Path) -> None:
    topology = _topology(tmp_path)
    listed = {"DC1": ["env-a"], "DC2": ["env-b"], "DC3": ["env-a"]}
    rows = checks.rws_rows(
        topology, client_factory=lambda site, conn: _FakeRws(listed[site]), login_of=lambda conn: "ops"
    )
    row = _row(rows, "genesys environment")
    assert row.status is Status.FAIL
    assert row.result == "the DCs disagree on the environment ID (DC1: env-a, DC2: env-b, DC3: env-a)"
    listed["DC2"] = ["env-a", "env-c"]
    rows = checks.rws_rows(
        topology, client_factory=lambda site, conn: _FakeRws(listed[site]), login_of=lambda conn: "ops"
    )
    assert "DC2 lists 2: env-a, env-c" in _row(rows, "genesys environment").result


# --- pools, triggerer, approvers (Airflow's API) -----------------------------------------------------------


def test_pools_missing_or_resized_are_named_with_the_intended_slots(airflow_api: Any) -> None:
    from airflow.models import Pool
    from airflow.utils.session import create_session

    from include.gir_ops.airflow_api import AirflowApiClient

    topology = load_topology(DEFAULT_TOPOLOGY_PATH)
    with AirflowApiClient() as client:
        assert checks.api_row(client).status is Status.OK
        rows = checks.pool_rows(topology, client)
    assert {r.check: r.status for r in rows} == {
        "pool gir_rws_dc1": Status.OK,
        "pool gir_rws_dc2": Status.OK,
        "pool gir_rws_dc3": Status.OK,
        "pool gir_rws_switch": Status.OK,
    }
    try:
        Pool.create_or_update_pool("gir_rws_switch", slots=3, description="resized", include_deferred=False)
        with create_session() as session:
            session.query(Pool).filter(Pool.pool == "gir_rws_dc3").delete()
        with AirflowApiClient() as client:
            rows = checks.pool_rows(topology, client)
    finally:
        from include.gir_ops.bootstrap import ensure_pools

        Pool.create_or_update_pool("gir_rws_switch", slots=1, description="restored", include_deferred=False)
        ensure_pools(topology)
    switch, dc3 = _row(rows, "pool gir_rws_switch"), _row(rows, "pool gir_rws_dc3")
    assert switch.status is Status.FAIL and switch.result == "has 3 slot(s), the topology intends 1"
    assert switch.fix.startswith("airflow pools set gir_rws_switch 1")
    assert dc3.status is Status.FAIL and dc3.result.startswith("does not exist")
    assert "bootstrap pools" in dc3.fix


def test_an_unusable_api_connection_fails_its_row_and_the_rows_that_need_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.gir_ops.airflow_api import AirflowApiClient

    monkeypatch.delenv("AIRFLOW_CONN_GIR_AIRFLOW_API", raising=False)
    monkeypatch.setattr(checks, "path_rows", lambda paths, where, **kw: [])
    rows = checks.worker_rows(DEFAULT_TOPOLOGY_PATH, api_client_factory=AirflowApiClient)
    api = _row(rows, "Airflow API connection")
    assert api.status is Status.FAIL and "'gir_airflow_api' does not exist" in api.result
    assert _row(rows, "pools").status is Status.FAIL and _row(rows, "triggerer").status is Status.FAIL


class _FakeApi:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def get(self, path: str, **_: Any) -> Any:
        self.asked.append(path)
        answer = self.answers.get(path)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_triggerer_row_reads_airflows_health() -> None:
    healthy = {"triggerer": {"status": "healthy", "latest_triggerer_heartbeat": "2026-11-30T12:00:00Z"}}
    assert checks.triggerer_row(_FakeApi({checks.HEALTH_PATH: healthy})).status is Status.OK
    down = {"triggerer": {"status": None, "latest_triggerer_heartbeat": None}}
    row = checks.triggerer_row(_FakeApi({checks.HEALTH_PATH: down}))
    assert row.status is Status.FAIL and "approval wait and switch verification" in row.result
    assert "airflow triggerer" in row.fix


def test_approvers_unknown_to_simpleauthmanager_and_fewer_than_two_fail(tmp_path: Path) -> None:
    topology = _topology(
        tmp_path,
        failover={"approvers": [{"id": "approver"}, {"id": "ghost"}], "audit_log": f"file://{tmp_path}/a"},
    )

    def simple() -> str:
        return "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

    rows = checks.approver_rows(
        topology, None, auth_manager=simple, simple_users=lambda: {"approver": "admin", "admin": "admin"}
    )
    assert _row(rows, "approver approver").status is Status.OK
    ghost = _row(rows, "approver ghost")
    assert ghost.status is Status.FAIL and "not a user of SimpleAuthManager" in ghost.result
    assert "`ghost:user`" in ghost.fix
    two = _row(rows, "approvers (two-person rule)")
    assert two.status is Status.FAIL and two.result.startswith("1 known approver(s) (approver)")

    def all_admins() -> dict[str, str]:
        raise PermissionError("all admins")

    rows = checks.approver_rows(topology, None, auth_manager=simple, simple_users=all_admins)
    assert rows[0].status is Status.FAIL and "simple_auth_manager_all_admins" in rows[0].result


def test_approvers_are_looked_up_in_fab_and_other_managers_say_cannot_check(tmp_path: Path) -> None:
    from include.gir_ops.airflow_api import AirflowApiAuthError

    topology = _topology(
        tmp_path,
        failover={"approvers": [{"id": "alice"}, {"id": "bob"}, {"id": "eve"}], "audit_log": "file:///x"},
    )
    fab = _FakeApi(
        {
            "/auth/fab/v1/users/alice": {"username": "alice", "roles": [{"name": "Op"}]},
            "/auth/fab/v1/users/bob": {"username": "bob", "roles": [{"name": "Admin"}]},
            "/auth/fab/v1/users/eve": None,
        }
    )
    rows = checks.approver_rows(
        topology,
        fab,
        auth_manager=lambda: "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
    )
    assert _row(rows, "approver alice").result == "FAB user, roles Op"
    assert _row(rows, "approver eve").status is Status.FAIL
    assert _row(rows, "approvers (two-person rule)").status is Status.OK
    forbidden = _FakeApi(
        {f"/auth/fab/v1/users/{u}": AirflowApiAuthError("403") for u in ("alice", "bob", "eve")}
    )
    rows = checks.approver_rows(topology, forbidden, auth_manager=lambda: "x.FabAuthManager")
    assert {r.status for r in rows} == {Status.CANNOT_CHECK}
    other = checks.approver_rows(topology, None, auth_manager=lambda: "corp.KeycloakAuthManager")
    assert [(r.check, r.status) for r in other] == [("failover approvers", Status.CANNOT_CHECK)]
    assert "corp.KeycloakAuthManager" in other[0].result and "alice, bob, eve" in other[0].result


# --- audit log ----------------------------------------------------------------------------------------------


def test_the_audit_log_must_be_writable_and_shared_when_several_workers_exist(tmp_path: Path) -> None:
    def audit(url: str) -> Any:
        return _topology(tmp_path, failover={"approvers": [{"id": "a"}], "audit_log": url})

    one = checks.audit_log_row(audit(f"file://{tmp_path}/audit"), workers=lambda: (1, "LocalExecutor"))
    assert one.status is Status.OK and one.result.startswith(f"writable: {tmp_path}/audit")
    assert list((tmp_path / "audit").iterdir()) == []  # the probe is gone
    (tmp_path / "a-file").write_text("x")
    blocked = checks.audit_log_row(audit(f"file://{tmp_path}/a-file/audit"), workers=lambda: (1, "x"))
    assert blocked.status is Status.FAIL and blocked.result.startswith("not writable")
    many = checks.audit_log_row(
        audit(f"file://{tmp_path}/audit"), workers=lambda: (3, "3 Celery worker(s)"), fs_type=lambda p: "ext4"
    )
    assert many.status is Status.FAIL and "each worker would keep its own audit records" in many.result
    nfs = checks.audit_log_row(
        audit(f"file://{tmp_path}/audit"), workers=lambda: (3, "3 Celery worker(s)"), fs_type=lambda p: "nfs4"
    )
    assert nfs.status is Status.OK and "shared file system nfs4" in nfs.result


def test_filesystem_type_picks_the_longest_mount_point() -> None:
    mounts = "/dev/sda1 / ext4 rw 0 0\nserver:/audit /mnt/gir nfs4 rw 0 0\n"
    assert checks.filesystem_type("/mnt/gir/audit/failover", mounts) == "nfs4"
    assert checks.filesystem_type("/var/lib/gir", mounts) == "ext4"


# --- paths -------------------------------------------------------------------------------------------------


def test_paths_tell_a_missing_file_from_a_share_not_mounted_and_a_hung_read(tmp_path: Path) -> None:
    (tmp_path / "rcs").mkdir()
    (tmp_path / "rcs" / "ok.p12").write_bytes(b"keystore")
    (tmp_path / "backups").mkdir()

    def reader(url: str, kind: str) -> tuple[Status, str]:
        if "hung" in url:
            time.sleep(5)
        return checks.read_path(url, kind)

    paths = [
        {"label": "keystore ok", "url": f"file://{tmp_path}/rcs/ok.p12", "kind": "file"},
        {"label": "keystore gone", "url": f"file://{tmp_path}/rcs/gone.p12", "kind": "file"},
        {"label": "keystore unmounted", "url": f"file://{tmp_path}/share/rcs/k.p12", "kind": "file"},
        {"label": "source", "url": f"file://{tmp_path}/backups", "kind": "folder"},
        {"label": "destination", "url": f"file://{tmp_path}/backups/replica", "kind": "destination"},
        {"label": "hung", "url": f"file://{tmp_path}/hung", "kind": "folder"},
    ]
    rows = checks.path_rows(paths, "worker", reader=reader, timeout=0.5)
    by = {r.check.removesuffix(" from the worker"): r for r in rows}
    assert by["keystore ok"].status is Status.OK
    assert by["keystore gone"].status is Status.FAIL
    assert by["keystore gone"].result.startswith(f"file does not exist: {tmp_path}/rcs/gone.p12 (its folder")
    assert by["keystore unmounted"].result.startswith("the share is not mounted on this worker")
    assert f"{tmp_path}/share does not exist" in by["keystore unmounted"].result
    assert by["source"].status is Status.OK and by["source"].result.endswith("(0 entries)")
    assert "does not exist yet" in by["destination"].result and by["destination"].status is Status.OK
    assert by["hung"].status is Status.FAIL and "no answer within 0.5 s" in by["hung"].result
    assert "mount the share on every worker" in by["hung"].fix


def test_checked_paths_are_the_speechminer_folders_and_every_keystore() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY_PATH)
    labels = [p["label"] for p in checks.checked_paths(topology)]
    assert labels == [
        "SpeechMiner source (DC1)",
        "SpeechMiner destination (DC2)",
        "keystore rcs-dc1-a (DC1)",
        "keystore rcs-dc1-b (DC1)",
        "keystore rcs-dc2-a (DC2)",
        "keystore rcs-dc3-a (DC3)",
    ]


def test_notifications_say_not_configured_without_a_notifications_section(tmp_path: Path) -> None:
    document = default_topology_dict()
    document.pop("notifications", None)
    topology = parse_topology(yaml.safe_dump(document), str(tmp_path / "t.yaml"))
    [row] = checks.notification_rows(topology)
    assert row.status is Status.NOT_CONFIGURED and "notifications" in row.fix


def test_each_notification_channel_takes_a_real_test_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two channels (the default one and an event routed to its own connection): both get a message."""
    from include.gir_sim.notify_receiver import NotificationReceiver

    document = default_topology_dict()
    document["notifications"] = {"conn_id": "gir_apprise", "deadline_missed": {"conn_id": "gir_apprise_late"}}
    topology = parse_topology(yaml.safe_dump(document), str(tmp_path / "t.yaml"))
    with NotificationReceiver() as oncall, NotificationReceiver() as late:
        monkeypatch.setenv("AIRFLOW_CONN_GIR_APPRISE", oncall.connection_json())
        monkeypatch.setenv("AIRFLOW_CONN_GIR_APPRISE_LATE", late.connection_json())
        rows = checks.notification_rows(topology)
        assert [(r.check, r.status) for r in rows] == [
            ("notifications gir_apprise", Status.OK),
            ("notifications gir_apprise_late", Status.OK),
        ]
        deadline = time.monotonic() + 20
        while (not oncall.received() or not late.received()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "gir_doctor" in oncall.received()[0]["title"]
        assert "deadline_missed" in late.received()[0]["message"]
        assert "deadline_missed" not in oncall.received()[0]["message"]


def test_a_channel_that_refuses_the_test_message_is_a_named_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import socket

    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIR_APPRISE",
        json.dumps({"conn_type": "apprise", "extra": {"config": {"path": f"json://127.0.0.1:{port}"}}}),
    )
    document = default_topology_dict()
    document["notifications"] = {"conn_id": "gir_apprise"}
    topology = parse_topology(yaml.safe_dump(document), str(tmp_path / "t.yaml"))
    [row] = checks.notification_rows(topology)
    assert row.status is Status.FAIL
    assert row.check == "notifications gir_apprise" and "run_failed" in row.result
    assert "gir_apprise" in row.fix


# --- the report -------------------------------------------------------------------------------------------


def test_the_report_is_red_only_for_failures_and_the_table_shows_check_result_fix() -> None:
    rows = [
        Row("topology", Status.OK, "/etc/gir/topology.yaml (sha256 0123456789ab)"),
        Row("approver ghost", Status.FAIL, "not a user", "add it"),
        Row("failover approvers", Status.CANNOT_CHECK, "other manager", "check by hand"),
    ]
    report = to_dict(rows)
    assert report["ok"] is False and report["failed"] == ["approver ghost"]
    assert summary(rows) == "RED: 1 of 3 checks failed: approver ghost, 1 could not be checked"
    table = format_table(rows)
    assert table.splitlines()[0].split() == ["check", "result", "fix"]
    assert "FAIL: not a user" in table and "add it" in table
    assert to_dict(rows[:1] + rows[2:])["ok"] is True


def test_the_cli_prints_the_table_and_exits_1_when_red(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.gir_ops.doctor.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("not: a topology\n", encoding="utf-8")
    assert main(["--topology", str(bad)]) == 1
    out = capsys.readouterr().out
    assert (
        "topology" in out
        and "FAIL: no usable topology" in out
        and out.strip().endswith("could not be checked")
    )


Factory = Callable[..., SimulatedGir]
