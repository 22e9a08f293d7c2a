"""gir_rcs_keystore_replicate end to end: dag.test() on the simulator's keystores, approvals through REST.

As in the failover's tests, dag.test() does not answer Human-in-the-loop requests: it runs in the main
thread and a helper thread answers ``approve_replication`` through the real Airflow API app (``PATCH
.../hitlDetails`` with the answering user's JWT), the code path of the UI's Required Actions page. Every
wait is bounded. Each test asserts what is on disk afterwards and what the audit record says.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from include.gir_ops.keystore import spec
from include.gir_sim.demo_data import drift_keystore, generate_keystores, keystore_paths
from tests.conftest import REPO_ROOT, SimulatedGir, parse_dags

DAG_ID = spec.REPLICATE_DAG_ID
pytestmark = pytest.mark.usefixtures("airflow_api")
RUN_TIMEOUT_SECONDS = 120
APPROVERS = [{"id": "approver", "name": "On-call approver"}, {"id": "second", "name": "Second approver"}]
REASON = "rcs-dc2-a drifted after a manual copy; dc3 rebuilt"


@pytest.fixture
def gir(gir_factory: Callable[..., SimulatedGir], tmp_path: Path) -> SimulatedGir:
    """The default three DCs, a one-minute approval timeout, the audit log under ``tmp_path``; keystores
    generated identical, then rcs-dc2-a drifted and rcs-dc3-a's removed."""
    simulated = gir_factory(
        {
            "keystore_replication": {
                "approvers": APPROVERS,
                "response_timeout_minutes": 1,
                "audit_log": f"file://{tmp_path}/audit/keystore-replication",
            }
        }
    )
    topology = simulated.topology
    generate_keystores(topology, simulated.keystore_password)
    drift_keystore(topology, "rcs-dc2-a", simulated.keystore_password)
    keystore_paths(topology)["rcs-dc3-a"].unlink()
    return simulated


@pytest.fixture
def dags(gir: SimulatedGir, airflow_db: Path) -> dict[str, Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    with create_session() as session:
        gir_assets = select(AssetModel.id).where(AssetModel.name.like("gir_%"))
        session.execute(delete(AssetEvent).where(AssetEvent.asset_id.in_(gir_assets)))
    found = {}
    for name in ("gir_rcs_keystore_check.py", "gir_rcs_keystore_replicate.py"):
        bag = parse_dags(REPO_ROOT / "dags" / name)
        assert not bag.import_errors, bag.import_errors
        found.update(bag.dags)
    return found


@pytest.fixture(scope="module")
def api(airflow_db: Path) -> Iterator[Any]:
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(apps="core")) as client:
        yield client
    purge_cached_app()


def bearer(username: str) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role="admin"))
    return {"Authorization": f"Bearer {token}"}


class Run:
    """dag.test() in the main thread, the human (and watchdog) in a helper thread."""

    def __init__(self, dag: Any, conf: dict[str, Any], *, triggered_by: str = "oncall") -> None:
        self.dag, self.conf, self.triggered_by = dag, conf, triggered_by
        self.started = datetime.now(UTC)
        self.error: BaseException | None = None
        self.timed_out = False
        self._finished = threading.Event()

    def run(self, human: Callable[[Run], None] | None = None) -> Any:
        import airflow.models.dagrun as dagrun_module
        from airflow.utils.types import DagRunTriggeredByType

        create = dagrun_module.get_or_create_dagrun

        def as_user(*args: Any, **kwargs: Any) -> Any:
            return create(
                *args,
                **{
                    **kwargs,
                    "triggered_by": DagRunTriggeredByType.REST_API,
                    "triggering_user_name": self.triggered_by,
                },
            )

        helper = threading.Thread(target=self._help, args=(human,), daemon=True)
        helper.start()
        try:
            with mock.patch.object(dagrun_module, "get_or_create_dagrun", as_user):
                dag_run = self.dag.test(run_conf=self.conf)
        finally:
            self._finished.set()
            helper.join(30)
        if self.error is not None:
            raise self.error
        assert not self.timed_out, f"the run did not finish within {RUN_TIMEOUT_SECONDS}s"
        return dag_run

    def _help(self, human: Callable[[Run], None] | None) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        try:
            if human is not None:
                human(self)
        except BaseException as exc:
            self.error = exc
            self.abort()
            return
        while not self._finished.wait(0.5):
            if time.monotonic() > deadline:
                self.timed_out = True
                self.abort()
                return

    def dag_run(self) -> Any:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            return session.scalar(
                select(DagRun)
                .where(DagRun.dag_id == DAG_ID, DagRun.start_date >= self.started - timedelta(seconds=1))
                .order_by(DagRun.id.desc())
                .limit(1)
            )

    def task_state(self, task_id: str) -> str | None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        run = self.dag_run()
        if run is None:
            return None
        with create_session() as session:
            return session.scalar(
                select(TaskInstance.state).where(
                    TaskInstance.dag_id == DAG_ID,
                    TaskInstance.run_id == run.run_id,
                    TaskInstance.task_id == task_id,
                )
            )

    def wait_for_approval_request(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.task_state(spec.APPROVE_REPLICATION) == "awaiting_input":
                return
            if self._finished.is_set():
                raise AssertionError("the run ended before asking for approval")
            time.sleep(0.2)
        raise AssertionError(f"approve_replication was not awaiting input within {timeout}s")

    def respond(self, api: Any, user: str, option: str) -> Any:
        run_id = self.dag_run().run_id
        return api.patch(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{spec.APPROVE_REPLICATION}/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": {}},
            headers=bearer(user),
        )

    def expire_approval(self) -> None:
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import update

        run = self.dag_run()
        with create_session() as session:
            session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.dag_id == DAG_ID,
                    TaskInstance.run_id == run.run_id,
                    TaskInstance.task_id == spec.APPROVE_REPLICATION,
                )
                .values(trigger_timeout=datetime.now(UTC) - timedelta(seconds=1))
            )
        SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()

    def abort(self) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import update

        run = self.dag_run()
        if run is None:
            return
        with create_session() as session:
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run.run_id)
                .where(TaskInstance.state.not_in(["success", "failed", "skipped", "upstream_failed"]))
                .values(state="failed")
            )
            session.execute(update(DagRun).where(DagRun.id == run.id).values(state="failed"))


def answer(api: Any, user: str, option: str = "Approve") -> Callable[[Run], None]:
    def human(run: Run) -> None:
        run.wait_for_approval_request()
        response = run.respond(api, user, option)
        assert response.status_code == 200, response.text

    return human


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def audits(gir: SimulatedGir) -> list[dict[str, Any]]:
    folder = Path(gir.topology.keystore_replication.audit_log.removeprefix("file://"))
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def snapshot(gir: SimulatedGir) -> dict[str, bytes | None]:
    return {
        name: (p.read_bytes() if p.exists() else None) for name, p in keystore_paths(gir.topology).items()
    }


def run_check(dags: dict[str, Any]) -> Any:
    return dags["gir_rcs_keystore_check"].test()


# --- the whole story: drift and missing fixed, check green, a second run finds nothing to do ---------------


def test_replication_fixes_a_drifted_and_a_missing_instance(
    gir: SimulatedGir, dags: dict[str, Any], api: Any
) -> None:
    assert str(run_check(dags).state) == "failed"
    before = snapshot(gir)
    reference = before["rcs-dc1-a"]

    dag_run = Run(dags[DAG_ID], {"reason": REASON}).run(answer(api, "approver"))

    assert str(dag_run.state) == "success", states(dag_run)
    after = snapshot(gir)
    assert after == dict.fromkeys(after, reference), "every keystore now equals the reference"
    paths = keystore_paths(gir.topology)
    (backup,) = paths["rcs-dc2-a"].parent.glob("keystore.p12.bak-*")
    assert backup.read_bytes() == before["rcs-dc2-a"], "the drifted keystore is recoverable"
    assert not list(paths["rcs-dc3-a"].parent.glob("*.bak-*")), "nothing to keep where none was"
    (record,) = audits(gir)
    assert record["outcome"] == "replicated" and record["outcome_ok"]
    assert record["approval"]["responded_by_user"]["id"] == "approver"
    assert record["triggered_by"] == "oncall"
    assert [t["instance"] for t in record["preflight"]["targets"]] == ["rcs-dc2-a", "rcs-dc3-a"]
    assert [r["status"] for r in record["replicate"]["results"]] == ["replaced", "created"]
    assert any(f.startswith("restart RCS instance rcs-dc2-a") for f in record["follow_ups"])
    assert any(f.startswith("restart RCS instance rcs-dc3-a") for f in record["follow_ups"])
    assert record["verify"]["ok"] is True
    text = json.dumps(record)
    assert gir.keystore_password not in text
    # The check, run on its own afterwards, is green.
    assert str(run_check(dags).state) == "success"

    # Run twice: the second finds nothing to do, asks nobody and writes nothing.
    again = Run(dags[DAG_ID], {"reason": REASON}).run()
    assert str(again.state) == "success", states(again)
    assert states(again)[spec.APPROVE_REPLICATION] == "skipped"
    assert audits(gir)[-1]["outcome"] == "nothing-to-do"
    assert snapshot(gir) == after
    assert len(list(paths["rcs-dc2-a"].parent.glob("keystore.p12.bak-*"))) == 1


def test_dry_run_lists_what_would_be_replaced_and_writes_nothing(
    gir: SimulatedGir, dags: dict[str, Any]
) -> None:
    run_check(dags)
    before = snapshot(gir)
    dag_run = Run(dags[DAG_ID], {"reason": REASON, "dry_run": True}).run()
    assert str(dag_run.state) == "success"
    assert states(dag_run)[spec.APPROVE_REPLICATION] == "skipped"
    assert snapshot(gir) == before
    (record,) = audits(gir)
    assert record["outcome"] == "dry-run"
    diff = {t["instance"]: t["alias_diff"] for t in record["preflight"]["targets"]}
    assert any("alias missing: gir-recording-2026" in d for d in diff["rcs-dc2-a"])
    assert diff["rcs-dc3-a"] == ["no keystore there: it will be created"]
    assert record["preflight"]["reference"]["entries"], "fingerprints are listed"


@pytest.mark.parametrize(
    ("how", "outcome"),
    [("reject", "rejected"), ("timeout", "timed-out"), ("self", "self-approval-refused")],
)
def test_no_valid_approval_writes_nothing(
    gir: SimulatedGir, dags: dict[str, Any], api: Any, how: str, outcome: str
) -> None:
    run_check(dags)
    before = snapshot(gir)

    def human(run: Run) -> None:
        run.wait_for_approval_request()
        if how == "timeout":
            run.expire_approval()
        else:
            user = "approver" if how == "self" else "second"
            response = run.respond(api, user, "Reject" if how == "reject" else "Approve")
            assert response.status_code == 200, response.text

    triggered_by = "approver" if how == "self" else "oncall"
    dag_run = Run(dags[DAG_ID], {"reason": REASON}, triggered_by=triggered_by).run(human)

    assert str(dag_run.state) == "failed"
    assert snapshot(gir) == before, "nothing written"
    (record,) = audits(gir)
    assert record["outcome"] == outcome, record["detail"]
    assert "no keystore was replaced" in record["detail"]
    if how == "self":
        assert "two-person rule" in record["detail"]


def test_a_target_changed_while_waiting_for_approval_is_refused_and_the_others_go_on(
    gir: SimulatedGir, dags: dict[str, Any], api: Any
) -> None:
    run_check(dags)
    paths = keystore_paths(gir.topology)
    reference = paths["rcs-dc1-a"].read_bytes()

    def human(run: Run) -> None:
        run.wait_for_approval_request()
        paths["rcs-dc2-a"].write_bytes(b"a keystore someone else copied meanwhile")
        response = run.respond(api, "second", "Approve")
        assert response.status_code == 200, response.text

    dag_run = Run(dags[DAG_ID], {"reason": REASON}).run(human)

    assert str(dag_run.state) == "failed"
    assert paths["rcs-dc2-a"].read_bytes() == b"a keystore someone else copied meanwhile", "not overwritten"
    assert paths["rcs-dc3-a"].read_bytes() == reference, "the other target went on"
    (record,) = audits(gir)
    assert record["outcome"] == "partly-failed"
    results = {r["instance"]: r for r in record["replicate"]["results"]}
    assert results["rcs-dc2-a"]["status"] == "refused"
    assert "changed by someone else since pre-flight" in results["rcs-dc2-a"]["detail"]
    assert results["rcs-dc3-a"]["status"] == "created"
    assert any("restart RCS instance rcs-dc3-a" in f for f in record["follow_ups"])


def test_an_unreadable_reference_is_refused_before_anyone_is_asked(
    gir: SimulatedGir, dags: dict[str, Any]
) -> None:
    run_check(dags)
    ref = keystore_paths(gir.topology)["rcs-dc1-a"]
    ref.write_bytes(ref.read_bytes()[:-40])
    before = snapshot(gir)

    dag_run = Run(dags[DAG_ID], {"reason": REASON, "targets": ["rcs-dc2-a"]}).run()

    assert str(dag_run.state) == "failed"
    assert states(dag_run)[spec.APPROVE_REPLICATION] in ("upstream_failed", "skipped")
    assert snapshot(gir) == before
    (record,) = audits(gir)
    assert record["outcome"] == "preflight-failed"
    assert "the reference rcs-dc1-a is unreadable (truncated" in record["detail"]


def test_a_forged_preflight_record_cannot_redirect_the_write(
    gir: SimulatedGir, dags: dict[str, Any], api: Any, tmp_path: Path
) -> None:
    """Anyone who may edit a run can rewrite its XComs through the REST API: where to write comes from the
    topology, so a pre-flight record pointing a target elsewhere writes nothing there."""
    run_check(dags)
    paths = keystore_paths(gir.topology)
    reference = paths["rcs-dc1-a"].read_bytes()
    elsewhere = tmp_path / "elsewhere" / "keystore.p12"
    elsewhere.parent.mkdir()

    def human(run: Run) -> None:
        run.wait_for_approval_request()
        run_id = run.dag_run().run_id
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{spec.PREFLIGHT}/xcomEntries/record"
        record = api.get(path, headers=bearer("oncall")).json()["value"]
        record = json.loads(record) if isinstance(record, str) else record
        for target in record["targets"]:
            target["url"] = f"file://{elsewhere}"
        record["reference"]["url"] = f"file://{elsewhere}"
        forged = api.patch(path, json={"value": record, "map_index": -1}, headers=bearer("oncall"))
        assert forged.status_code == 200, forged.text
        response = run.respond(api, "second", "Approve")
        assert response.status_code == 200, response.text

    dag_run = Run(dags[DAG_ID], {"reason": REASON}).run(human)

    assert str(dag_run.state) == "success", states(dag_run)
    assert not elsewhere.exists(), "nothing written where the forged record pointed"
    assert paths["rcs-dc2-a"].read_bytes() == paths["rcs-dc3-a"].read_bytes() == reference
