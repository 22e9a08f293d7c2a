"""gir_eservices_failover end to end: dag.test() against the simulator, approvals through the REST API.

dag.test() does not answer Human-in-the-loop requests: it waits while ``approve_failover`` is
``awaiting_input``. Each test runs dag.test() in a thread and answers from the test thread through the
real Airflow API app (``PATCH .../taskInstances/approve_failover/-1/hitlDetails``, FastAPI TestClient,
a JWT of the answering user issued by the configured SimpleAuthManager), the code path the UI's
Required Actions page uses. Timeouts go through the scheduler's own ``check_awaiting_input_timeouts``.
Every wait is bounded, so a bug fails the test instead of hanging the suite.

Each test asserts how many multimedia-switch POSTs the simulated RWS nodes received and what the audit
record says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from include.gir_ops import shared
from include.gir_ops.failover import spec as failover_spec
from tests.conftest import REPO_ROOT, SimulatedGir, default_topology_dict, parse_dags
from tests.dags.failover_dag_support import fast_failover_gir

DAG_ID = failover_spec.DAG_ID
SWITCH_PATH = "multimedia-switch"
# The DAG's check_pools asks Airflow's REST API (the in-process test server) for gir_rws_switch.
pytestmark = pytest.mark.usefixtures("airflow_api")
RUN_TIMEOUT_SECONDS = 90
APPROVERS = [{"id": "approver", "name": "On-call approver"}, {"id": "second", "name": "Second approver"}]


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def fast_gir(gir_factory: Callable[..., SimulatedGir], tmp_path: Path) -> SimulatedGir:
    """The default three DCs with a short drMonitoringDelay, a one-minute approval timeout."""
    return fast_failover_gir(gir_factory, tmp_path, APPROVERS)


@pytest.fixture
def failover_dag(fast_gir: SimulatedGir, airflow_db: Path) -> Any:
    """Only this DAG file is parsed, so another DAG being edited cannot break these tests.

    Asset events that other test modules' runs (backup shipping, keystore check) left in the shared test
    DB are removed first: each test states what the pre-flight should find.
    """
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    with create_session() as session:
        gir_assets = select(AssetModel.id).where(AssetModel.name.like("gir_%"))
        session.execute(delete(AssetEvent).where(AssetEvent.asset_id.in_(gir_assets)))
    bag = parse_dags(REPO_ROOT / "dags" / "gir_eservices_failover.py")
    assert not bag.import_errors, bag.import_errors
    return bag.dags[DAG_ID]


@pytest.fixture(scope="module")
def api(airflow_db: Path) -> Iterator[Any]:
    """The Airflow API server app in-process (core API, SimpleAuthManager), on the test's metadata DB."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    app = create_app(apps="core")
    with TestClient(app) as client:
        yield client
    purge_cached_app()


def bearer(username: str) -> dict[str, str]:
    """A JWT for ``username`` from the configured auth manager, as POST /auth/token would issue it."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role="admin"))
    return {"Authorization": f"Bearer {token}"}


# --- running the DAG ----------------------------------------------------------------------------------


class FailoverRun:
    """dag.test() in the main thread (task runners install signal handlers), the human in a helper thread.

    ``human`` runs in the helper thread: it waits for the approval request and answers it, as a person
    in the UI would. The helper is also the watchdog: past ``timeout`` it fails every unfinished task
    instance and the run, so dag.test() returns and the test fails instead of hanging.
    """

    def __init__(
        self,
        dag: Any,
        conf: dict[str, Any],
        *,
        triggered_by: str | None = None,
        triggered_via: str = "rest_api",
        timeout: float = RUN_TIMEOUT_SECONDS,
    ) -> None:
        self.dag = dag
        self.conf = conf
        self.triggered_by = triggered_by
        self.triggered_via = triggered_via
        self.timeout = timeout
        self.started = datetime.now(UTC)
        self.error: BaseException | None = None
        self.timed_out = False
        self._finished = threading.Event()

    def run(self, human: Callable[[FailoverRun], None] | None = None) -> Any:
        helper = threading.Thread(target=self._help, args=(human,), name="failover-human", daemon=True)
        helper.start()
        try:
            with self._triggering_user():
                dag_run = self.dag.test(run_conf=self.conf)
        finally:
            self._finished.set()
            helper.join(30)
        if self.error is not None:
            raise self.error
        assert not self.timed_out, f"the run did not finish within {self.timeout}s and was aborted"
        return dag_run

    @contextlib.contextmanager
    def _triggering_user(self) -> Iterator[None]:
        """dag.test() creates its run as user "dag_test", triggered_by TEST; the UI/REST API records the
        signed-in user and REST_API / UI instead.

        The run is created with ``triggered_by`` as its triggering_user_name and ``triggered_via`` as its
        triggered_by, as the trigger endpoint does (changing the row later does not work: dag.test() holds
        the DagRun and writes it back).
        """
        import airflow.models.dagrun as dagrun_module
        from airflow.utils.types import DagRunTriggeredByType

        create = dagrun_module.get_or_create_dagrun
        overrides: dict[str, Any] = {"triggered_by": DagRunTriggeredByType(self.triggered_via)}
        if self.triggered_by is not None:
            overrides["triggering_user_name"] = self.triggered_by

        def create_as_user(*args: Any, **kwargs: Any) -> Any:
            return create(*args, **{**kwargs, **overrides})

        with mock.patch.object(dagrun_module, "get_or_create_dagrun", create_as_user):
            yield

    def _help(self, human: Callable[[FailoverRun], None] | None) -> None:
        deadline = time.monotonic() + self.timeout
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

    def wait_for_approval_request(self, timeout: float = 60) -> str:
        """Block until approve_failover is awaiting input; returns the run_id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.task_state(failover_spec.APPROVE_FAILOVER) == "awaiting_input":
                return self.dag_run().run_id
            if self._finished.is_set():
                raise AssertionError("the run ended before asking for approval")
            time.sleep(0.2)
        raise AssertionError(f"approve_failover was not awaiting input within {timeout}s")

    def abort(self) -> None:
        """Fail every unfinished task instance and the run, so the dag.test() loop ends."""
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

    def respond(
        self,
        api: Any,
        user: str,
        option: str,
        task_id: str = failover_spec.APPROVE_FAILOVER,
        params_input: dict[str, Any] | None = None,
    ) -> Any:
        run_id = self.dag_run().run_id
        return api.patch(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": params_input or {}},
            headers=bearer(user),
        )

    def wait_for_confirm_request(self, timeout: float = 60) -> bool:
        """Block until confirm_switch awaits input (True), or it ended without asking / the run ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.task_state(failover_spec.CONFIRM)
            if state == "awaiting_input":
                return True
            if state in ("skipped", "success", "failed", "upstream_failed") or self._finished.is_set():
                return False
            time.sleep(0.2)
        raise AssertionError(f"confirm_switch did not ask within {timeout}s")

    def confirm(
        self, api: Any, user: str = "approver", option: str = "Confirmed", answers: str = "done"
    ) -> Any:
        """Answer confirm_switch as a person would: the option, and one answer per checklist item."""
        run_id = self.dag_run().run_id
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{failover_spec.CONFIRM}/-1/hitlDetails"
        asked = api.get(path, headers=bearer(user)).json()
        response = self.respond(
            api,
            user,
            option,
            task_id=failover_spec.CONFIRM,
            params_input=dict.fromkeys(asked.get("params") or {}, answers),
        )
        assert response.status_code == 200, response.text
        return asked

    def expire_approval(self, task_id: str = failover_spec.APPROVE_FAILOVER) -> float:
        """Let the scheduler's timeout sweep resolve a HITL request (the approval by default); returns the
        configured wait (s)."""
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select, update

        run = self.dag_run()
        where = (
            TaskInstance.dag_id == DAG_ID,
            TaskInstance.run_id == run.run_id,
            TaskInstance.task_id == task_id,
        )
        with create_session() as session:
            timeout_at, start = session.execute(
                select(TaskInstance.trigger_timeout, TaskInstance.start_date).where(*where)
            ).one()
            configured = (timeout_at - start).total_seconds()
            # Move the deadline into the past instead of waiting the configured minute.
            session.execute(
                update(TaskInstance)
                .where(*where)
                .values(trigger_timeout=datetime.now(UTC) - timedelta(seconds=1))
            )
        SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()
        return configured


def switch_posts(gir: SimulatedGir) -> dict[str, list[dict[str, Any]]]:
    """Every multimedia-switch POST each DC's RWS received (read from the shared simulator state)."""
    return {
        site: [
            r
            for r in gir.simulator.state.requests(site)
            if r["method"] == "POST" and SWITCH_PATH in r["path"]
        ]
        for site in gir.topology.sites
    }


def applied_switches(gir: SimulatedGir) -> list[dict[str, Any]]:
    return list(gir.simulator.state.environment.switches)


def audit_records(gir: SimulatedGir) -> list[dict[str, Any]]:
    folder = Path(gir.topology.failover.audit_log.removeprefix("file://"))
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def conf(target: str = "DC2", **extra: Any) -> dict[str, Any]:
    return {"target_site": target, "reason": "DC1 Interaction Server down since 02:10", **extra}


# --- the DAG's shape: what makes misuse impossible ------------------------------------------------------


def test_dag_shape_guards_against_misuse(failover_dag: Any, fast_gir: SimulatedGir) -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from include.gir_ops import bootstrap

    assert failover_dag.timetable.can_be_scheduled is False, "manual runs only"
    assert failover_dag.start_date == shared.DAG_START_DATE
    assert failover_dag.owner == "gir-ops"
    assert failover_dag.max_active_runs == 1
    switch = failover_dag.get_task(failover_spec.SWITCH)
    assert (switch.retries, switch.pool, switch.pool_slots) == (0, "gir_rws_switch", 1)
    assert "never retried" in switch.doc_md.lower()
    assert any(
        (pool.name, pool.slots) == (shared.RWS_SWITCH_POOL, 1)
        for pool in bootstrap.pool_specs(fast_gir.topology)
    ), "the bootstrap must create the switch task's pool, or the switch is never scheduled"
    approve = failover_dag.get_task(failover_spec.APPROVE_FAILOVER)
    assert isinstance(approve, ApprovalOperator)
    assert approve.assigned_users == APPROVERS
    assert approve.response_timeout == timedelta(minutes=1)
    assert (approve.defaults, approve.fail_on_reject, approve.retries) == (["Reject"], False, 0)
    assert failover_dag.get_task(failover_spec.VERIFY).retries >= 2, "verification only reads"
    # Tasks that skip their direct downstream must not have the audit there, or it would be skipped too.
    for skipping in (failover_spec.APPROVAL_NEEDED, failover_spec.APPROVE_FAILOVER):
        assert failover_spec.AUDIT not in failover_dag.get_task(skipping).downstream_task_ids
    for task_id in (failover_spec.AUDIT, failover_spec.OUTCOME):
        assert failover_dag.get_task(task_id).trigger_rule == "all_done"
    assert [t.task_id for t in failover_dag.topological_sort()] == list(failover_spec.TASK_IDS)


def test_without_a_failover_section_the_file_defines_no_dag_and_logs_one_warning(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A topology without ``failover`` means the feature is not configured: no DAG, no import error."""
    document = default_topology_dict()
    del document["failover"]
    topology_path = tmp_path / "topology-without-failover.yaml"
    topology_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("GIR_TOPOLOGY", str(topology_path))

    with caplog.at_level(logging.WARNING):
        bag = parse_dags(REPO_ROOT / "dags" / "gir_eservices_failover.py")

    assert bag.import_errors == {}
    assert DAG_ID not in bag.dags and bag.dags == {}
    warnings = [r.getMessage() for r in caplog.records if "failover section" in r.getMessage()]
    assert warnings == [
        "gir_eservices_failover is not defined: the topology has no failover section (failover.approvers, "
        "failover.audit_log, ...); add one to enable eServices failover, see include/config/topology.yaml"
    ]


# --- the happy path -----------------------------------------------------------------------------------


def test_approved_failover_switches_once_verifies_and_audits(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    seen: dict[str, Any] = {}

    def approve_as_second_user(run: FailoverRun) -> None:
        seen["run_id"] = run.wait_for_approval_request()
        seen["posts_before_approval"] = switch_posts(fast_gir)
        seen["answer"] = run.respond(api, "approver", "Approve")
        assert run.wait_for_confirm_request(), "after a switch a person is asked to confirm"
        seen["confirm_state"] = run.task_state(failover_spec.CONFIRM)
        seen["confirm_request"] = run.confirm(api, "approver", "Confirmed")

    dag_run = FailoverRun(
        failover_dag, conf(change_ticket="CHG-4711", scenario="data-center-lost"), triggered_by="oncall"
    ).run(approve_as_second_user)

    assert seen["posts_before_approval"] == {"DC1": [], "DC2": [], "DC3": []}, "nothing sent before approval"
    assert seen["answer"].status_code == 200, seen["answer"].text
    assert dag_run.state == "success", states(dag_run)
    assert [len(p) for p in switch_posts(fast_gir).values()] == [0, 1, 0], "one POST, to the target's RWS"
    assert switch_posts(fast_gir)["DC2"][0]["body"] == {"eServicesSite": "DC2"}
    assert [s["eServicesSite"] for s in applied_switches(fast_gir)] == ["DC2"]
    assert fast_gir.environment()["current_site"] == "DC2"

    [record] = audit_records(fast_gir)
    assert record["outcome"] == "verified" and record["outcome_ok"] is True
    assert record["run_id"] == seen["run_id"] == dag_run.run_id
    assert record["triggered_by"] == "oncall"
    assert record["decision"]["chosen"] == "Approve"
    assert record["decision"]["by"]["id"] == "approver" and record["decision"]["at"]
    assert record["reason"] == "DC1 Interaction Server down since 02:10"
    assert record["change_ticket"] == "CHG-4711"
    assert (record["site_before"], record["site_after"]) == ("DC1", "DC2")
    assert record["environment_id"] == fast_gir.environment()["environment_id"]
    switch_answers = [a for a in record["rws_answers"] if a["phase"] == "switch" and a["method"] == "POST"]
    assert [(a["site"], a["http_status"], a["statusCode"]) for a in switch_answers] == [("DC2", 200, 0)]
    verify_answers = [a for a in record["rws_answers"] if a["phase"] == "verify"]
    assert {a["site"] for a in verify_answers} == {"DC1", "DC2", "DC3"}
    assert all("statusCode" in a and "http_status" in a for a in record["rws_answers"])
    text = json.dumps(record)
    assert fast_gir.ops_password not in text, "the audit record must never hold a credential"
    assert "no information yet" in record["preflight"]["keystore"]["text"]
    assert "no information yet" in record["preflight"]["backup"]["text"]
    follow_ups = "\n".join(record["follow_ups"])
    assert "disaster-recovery.eservices-site = DC2" in follow_ups
    assert "Screen Recording Service" in follow_ups and "promote the backup index in DC2" in follow_ups
    assert "/api/v2/dags/gir_eservices_failover/dagRuns" in follow_ups
    assert '"conf": {"target_site": "DC1"' in follow_ups and "airflow dags trigger" not in follow_ups
    # The human step after the switch: a checklist of the scenario's follow-ups, answered per item.
    assert seen["confirm_state"] == "awaiting_input", "waits without a worker slot"
    asked = seen["confirm_request"]
    assert asked["options"] == ["Confirmed", "Not confirmed"]
    assert [u["id"] for u in asked["assigned_users"]] == ["approver", "second"]
    assert list(asked["params"]) == [
        "wde_eservices_site",
        "srs_rws",
        "speechminer_index",
        "recording_processing",
        "switch_back_plan",
    ]
    assert "disaster-recovery.eservices-site" in asked["body"]
    assert record["scenario"] == "data-center-lost"
    confirmation = record["confirmation"]
    assert confirmation["chosen"] == "Confirmed" and confirmation["by"]["id"] == "approver"
    assert confirmation["at"] and confirmation["timed_out"] is False
    assert [(i["key"], i["answer"]) for i in confirmation["items"]] == [
        (key, "done") for key in asked["params"]
    ]
    assert record["switch"]["switched_at"], "the switch time is kept for a later catch-up window"
    assert any("screen-recording.htcc.peer_uri" in r for r in record["preflight"]["readiness"])
    assert record["catch_up"]["status"] == "not-needed"
    assert states(dag_run)[failover_spec.CATCH_UP] == "success"


def approve_as(
    user: str, seen: dict[str, Any], api: Any, option: str = "Approve", *, confirm: str | None = "Confirmed"
) -> Callable[..., None]:
    """Approve (or reject) as ``user``; then, if the run asks, answer confirm_switch with ``confirm`` as
    "approver" (None: leave it unanswered, the caller decides)."""

    def human(run: FailoverRun) -> None:
        seen["run_id"] = run.wait_for_approval_request()
        seen["answer"] = run.respond(api, user, option)
        if confirm is not None and run.wait_for_confirm_request():
            seen["confirm_request"] = run.confirm(api, "approver", confirm)

    return human


def no_posts(gir: SimulatedGir) -> bool:
    return all(not posts for posts in switch_posts(gir).values()) and not applied_switches(gir)


def sync_dags_to_db() -> None:
    """What dag.test() does first: serialize the DAGs (and their Assets) into the metadata DB."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)


def add_asset_event(asset_name: str, extra: dict[str, Any], timestamp: datetime) -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.name == asset_name))
        assert asset_id is not None, f"asset {asset_name} is not registered"
        event = AssetEvent(asset_id=asset_id, extra=extra, timestamp=timestamp)
        session.add(event)
        session.flush()
        return event.id


def delete_asset_events(event_ids: list[int]) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(AssetEvent).where(AssetEvent.id.in_(event_ids)))


# --- nothing is switched without a valid second person's approval ---------------------------------------


def test_rejection_switches_nothing_and_the_audit_names_who_rejected(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf()).run(approve_as("second", seen, api, option="Reject"))

    assert seen["answer"].status_code == 200, seen["answer"].text
    assert no_posts(fast_gir)
    assert fast_gir.environment()["current_site"] == "DC1"
    task_states = states(dag_run)
    assert task_states[failover_spec.RECHECK] == task_states[failover_spec.SWITCH] == "skipped"
    assert dag_run.state == "failed", "a rejected failover must not look like a successful one"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "rejected"
    assert record["decision"]["chosen"] == "Reject" and record["decision"]["by"]["id"] == "second"
    assert record["decision"]["at"] and record["decision"]["timed_out"] is False
    assert "nothing was switched" in record["detail"]
    assert record["follow_ups"] == []


def test_no_answer_in_time_counts_as_rejection(failover_dag: Any, fast_gir: SimulatedGir) -> None:
    seen: dict[str, Any] = {}

    def nobody_answers(run: FailoverRun) -> None:
        run.wait_for_approval_request()
        seen["configured_wait"] = run.expire_approval()

    dag_run = FailoverRun(failover_dag, conf()).run(nobody_answers)

    assert 55 <= seen["configured_wait"] <= 65, "response_timeout_minutes (1) must reach the HITL request"
    assert no_posts(fast_gir)
    assert dag_run.state == "failed"
    assert states(dag_run)[failover_spec.SWITCH] == "skipped"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "timed-out"
    assert record["decision"]["timed_out"] is True and record["decision"]["by"] is None
    assert "nobody answered" in record["detail"]


def test_self_approval_is_refused_and_switches_nothing(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    seen: dict[str, Any] = {}

    dag_run = FailoverRun(failover_dag, conf(), triggered_by="approver").run(
        approve_as("approver", seen, api)
    )

    assert seen["answer"].status_code == 200, "Airflow accepts it: the two-person rule is ours to enforce"
    assert no_posts(fast_gir)
    task_states = states(dag_run)
    assert task_states[failover_spec.RECHECK] == "failed"
    assert task_states[failover_spec.SWITCH] == "upstream_failed"
    assert dag_run.state == "failed"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "self-approval-refused"
    assert record["triggered_by"] == "approver" and record["decision"]["by"]["id"] == "approver"
    assert "two-person rule" in record["detail"] and "nothing was switched" in record["detail"]
    assert "second" in record["detail"], "the message names who else can approve"


def test_a_non_approver_cannot_answer(failover_dag: Any, fast_gir: SimulatedGir, api: Any) -> None:
    seen: dict[str, Any] = {}

    def outsider_then_approver(run: FailoverRun) -> None:
        run.wait_for_approval_request()
        seen["outsider"] = run.respond(api, "intruder", "Approve")
        seen["answer"] = run.respond(api, "second", "Approve")
        seen["again"] = run.respond(api, "approver", "Reject")
        assert run.wait_for_confirm_request()
        seen["outsider_confirms"] = run.respond(api, "intruder", "Confirmed", task_id=failover_spec.CONFIRM)
        run.confirm(api, "second")

    dag_run = FailoverRun(failover_dag, conf(target="DC3")).run(outsider_then_approver)

    assert seen["outsider"].status_code == 403, seen["outsider"].text
    assert seen["answer"].status_code == 200
    assert seen["again"].status_code == 409, "a decision cannot be changed once given"
    assert seen["outsider_confirms"].status_code == 403, "only the approvers may confirm the switch"
    assert dag_run.state == "success", states(dag_run)
    assert [len(p) for p in switch_posts(fast_gir).values()] == [0, 0, 1]
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "verified" and record["decision"]["by"]["id"] == "second"
    assert "none is shipped to DC3" in record["preflight"]["backup"]["text"]


# --- the site, before and after the wait ---------------------------------------------------------------


def test_target_already_current_asks_nobody_and_switches_nothing(
    failover_dag: Any, fast_gir: SimulatedGir
) -> None:
    dag_run = FailoverRun(failover_dag, conf(target="DC1", reason="switch back after the DC1 repair")).run()

    assert no_posts(fast_gir)
    task_states = states(dag_run)
    assert task_states[failover_spec.APPROVE_FAILOVER] == "skipped", "no approval may be asked"
    assert task_states[failover_spec.SWITCH] == task_states[failover_spec.VERIFY] == "skipped"
    assert dag_run.state == "success"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "already-current" and record["decision"] is None
    assert (record["site_before"], record["site_after"]) == ("DC1", "DC1")


@pytest.mark.parametrize(
    ("changed_to", "verdict"),
    [("DC3", ("site-changed", "failed")), ("DC2", ("already-current", "success"))],
    ids=["to-another-site", "to-the-target"],
)
def test_site_changed_while_waiting_for_approval_sends_nothing(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any, changed_to: str, verdict: tuple[str, str]
) -> None:
    outcome, run_state = verdict
    seen: dict[str, Any] = {}

    def someone_switches_by_hand_then_approval(run: FailoverRun) -> None:
        run.wait_for_approval_request()
        fast_gir.configure_environment(current_site=changed_to)
        seen["answer"] = run.respond(api, "approver", "Approve")

    dag_run = FailoverRun(failover_dag, conf()).run(someone_switches_by_hand_then_approval)

    assert seen["answer"].status_code == 200
    assert no_posts(fast_gir)
    assert fast_gir.environment()["current_site"] == changed_to
    assert dag_run.state == run_state, states(dag_run)
    [record] = audit_records(fast_gir)
    assert record["outcome"] == outcome
    assert "while waiting" in record["detail"] and changed_to in record["detail"]
    assert (record["site_before"], record["site_after"]) == ("DC1", changed_to)


def test_dry_run_posts_nothing_and_shows_the_other_dags_findings(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    now = datetime.now(UTC)
    sync_dags_to_db()
    events = [
        add_asset_event(
            "gir_rcs_keystore_check",
            {
                "ok": True,
                "checked_at": (now - timedelta(minutes=20)).isoformat(),
                "reference": "rcs-dc1-a",
                "states": {"rcs-dc2-a": "match"},
                "warnings": [],
            },
            now - timedelta(minutes=20),
        ),
        add_asset_event(
            "gir_speechminer_backup_dc2",
            {
                "site": "DC2",
                "backup_name": "2026-11-25",
                "bytes": 1234,
                "files": 7,
                "manifest_sha256": "ab",
                "shipped_at": (now - timedelta(hours=3)).isoformat(),
            },
            now - timedelta(hours=3),
        ),
    ]
    seen: dict[str, Any] = {}

    def read_request_then_approve(run: FailoverRun) -> None:
        run_id = run.wait_for_approval_request()
        seen["request"] = api.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{failover_spec.APPROVE_FAILOVER}/-1/hitlDetails",
            headers=bearer("approver"),
        ).json()
        seen["answer"] = run.respond(api, "approver", "Approve")

    try:
        dag_run = FailoverRun(failover_dag, conf(dry_run=True, scenario="data-center-lost")).run(
            read_request_then_approve
        )
    finally:
        delete_asset_events(events)  # later tests expect "no information yet"

    assert no_posts(fast_gir)
    assert dag_run.state == "success", states(dag_run)
    assert states(dag_run)[failover_spec.VERIFY] == "skipped"
    request = seen["request"]
    assert "DC1 → DC2 (DRY RUN)" in request["subject"]
    assert [u["id"] for u in request["assigned_users"]] == ["approver", "second"]
    body = request["body"]
    assert "DC1 Interaction Server down since 02:10" in body and "`dag_test`" in body  # who triggered
    assert "keystores replicated" in body and "2026-11-25" in body and "3.0 h ago" in body
    assert "**Scenario:** `data-center-lost`" in body and "screen-recording.htcc.peer_uri" in body
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "dry-run" and record["dry_run"] is True
    assert "would POST multimedia-switch" in record["detail"]
    assert any("2026-11-25" in item for item in record["follow_ups"])


# --- the switch POST and its faults --------------------------------------------------------------------


def test_503_on_the_switch_is_resent_once_and_switches_once(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    fast_gir.fault("DC2", count=1, http_status=503, status_code=4, path_contains=SWITCH_PATH, method="POST")
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf()).run(approve_as("approver", seen, api))

    assert dag_run.state == "success", states(dag_run)
    posts = switch_posts(fast_gir)["DC2"]
    assert [(p["http_status"], p["status_code"]) for p in posts] == [(503, 4), (200, 0)]
    assert len(applied_switches(fast_gir)) == 1
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "verified"
    [post] = [a for a in record["rws_answers"] if a["phase"] == "switch" and a["method"] == "POST"]
    assert [(t["http_status"], t["statusCode"]) for t in post["tries"]] == [(503, 4), (200, 0)]


def test_status_code_3_on_the_switch_fails_without_retry(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    fast_gir.fault("DC2", count=1, http_status=403, status_code=3, path_contains=SWITCH_PATH, method="POST")
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf()).run(approve_as("approver", seen, api))

    assert [len(p) for p in switch_posts(fast_gir).values()] == [0, 1, 0], "sent once, not retried"
    assert applied_switches(fast_gir) == []
    task_states = states(dag_run)
    assert task_states[failover_spec.SWITCH] == "failed"
    assert task_states[failover_spec.VERIFY] == "upstream_failed"
    assert dag_run.state == "failed"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "switch-failed"
    assert "statusCode 3" in record["detail"]
    [post] = [a for a in record["rws_answers"] if a["method"] == "POST"]
    assert (post["site"], post["http_status"], post["statusCode"]) == ("DC2", 403, 3)


def test_a_dropped_switch_is_never_resent_and_reported_as_unknown(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    fast_gir.fault("DC2", count=1, mode="drop", path_contains=SWITCH_PATH, method="POST")
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf()).run(approve_as("approver", seen, api))

    assert [len(p) for p in switch_posts(fast_gir).values()] == [0, 1, 0], "an unknown outcome is not resent"
    assert dag_run.state == "failed"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "switch-unknown"
    assert record["switch"]["answer"] == "lost"
    assert "check RWS by hand" in record["detail"]


def test_target_rws_down_switches_through_another_dc(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    fast_gir.simulator.stop_site("DC2")
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf()).run(approve_as("approver", seen, api))

    assert dag_run.state == "success", states(dag_run)
    assert [len(p) for p in switch_posts(fast_gir).values()] == [1, 0, 0], "sent once, through DC1"
    assert [(s["via"], s["eServicesSite"]) for s in applied_switches(fast_gir)] == [("DC1", "DC2")]
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "verified"
    assert any("target's RWS DC2 does not answer" in w for w in record["preflight"]["warnings"])
    last = {o["site"]: o for o in record["rws_answers"] if o["phase"] == "verify"}
    assert last["DC2"]["ok"] is False and last["DC1"]["eServicesSite"] == "DC2"


def test_rws_that_never_reports_the_site_and_nobody_confirms_is_unverified(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    """Neither RWS (no site in its answer) nor a person (confirm_switch times out): the run fails and
    says what to check."""
    fast_gir.configure_environment(report_site=False)
    seen: dict[str, Any] = {}

    def approve_then_nobody_confirms(run: FailoverRun) -> None:
        approve_as("approver", seen, api, confirm=None)(run)
        assert run.wait_for_confirm_request()
        seen["configured_wait"] = run.expire_approval(failover_spec.CONFIRM)

    started = time.monotonic()
    dag_run = FailoverRun(failover_dag, conf()).run(approve_then_nobody_confirms)

    assert 55 <= seen["configured_wait"] <= 65, "confirm_timeout_minutes (1) must reach the HITL request"
    assert [len(p) for p in switch_posts(fast_gir).values()] == [0, 1, 0]
    assert len(applied_switches(fast_gir)) == 1
    assert dag_run.state == "failed", "an unverified switch must not look like a verified one"
    assert states(dag_run)[failover_spec.VERIFY] == "success"
    assert states(dag_run)[failover_spec.CONFIRM] == "success"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "unverified" and record["outcome_ok"] is False
    assert record["site_before"] is None and record["site_after"] is None
    assert "does not report eServicesSite" in record["detail"]
    assert "nobody confirmed it under Required Actions" in record["detail"]
    assert "curl -u <ops user>" in record["detail"] and "failover.site_field" in record["detail"]
    assert record["verification"]["elapsed_seconds"] >= 1, "it waits the drMonitoringDelay first"
    assert any("unverified" in w for w in record["preflight"]["warnings"])
    confirmation = record["confirmation"]
    assert confirmation["chosen"] == "Not confirmed" and confirmation["by"] is None
    assert confirmation["timed_out"] is True
    assert {i["answer"] for i in confirmation["items"]} == {"not done"}
    assert time.monotonic() - started < RUN_TIMEOUT_SECONDS


def test_rws_that_never_reports_the_site_but_a_person_confirms_is_confirmed(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    fast_gir.configure_environment(report_site=False)
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf(), triggered_by="oncall").run(approve_as("approver", seen, api))

    assert [len(p) for p in switch_posts(fast_gir).values()] == [0, 1, 0]
    assert dag_run.state == "success", states(dag_run)
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "confirmed" and record["outcome_ok"] is True
    assert "confirmed by hand by approver at " in record["detail"]
    assert record["site_before"] is None, "RWS never reported a site: nothing is assumed"
    assert record["scenario"] == "interaction-server-down"
    assert [i["key"] for i in record["confirmation"]["items"]] == [
        "wde_eservices_site",
        "recording_processing",
        "switch_back_plan",
    ], "with the Interaction Server down only: no SRS redirection, no SpeechMiner promotion"
    assert all(i["answer"] == "done" for i in record["confirmation"]["items"])
    text = "\n".join(record["follow_ups"])
    assert "Screen Recording Service" not in text and "promote" not in text


@pytest.mark.parametrize(
    ("simulator_settings", "site_field"),
    [({"site_format": "top-level"}, None), ({}, "genesysEnvironment.eServicesSite")],
    ids=["top-level", "configured-site-field"],
)
def test_the_site_is_read_back_top_level_or_at_the_configured_path(
    gir_factory: Callable[..., SimulatedGir],
    tmp_path: Path,
    airflow_db: Path,
    api: Any,
    *,
    simulator_settings: dict[str, Any],
    site_field: str | None,
) -> None:
    gir = fast_failover_gir(gir_factory, tmp_path, APPROVERS, site_field=site_field)
    if simulator_settings:
        gir.configure_environment(**simulator_settings)
    dag = parse_dags(REPO_ROOT / "dags" / "gir_eservices_failover.py").dags[DAG_ID]
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(dag, conf()).run(approve_as("approver", seen, api))

    assert dag_run.state == "success", states(dag_run)
    [record] = audit_records(gir)
    assert record["outcome"] == "verified"
    assert (record["site_before"], record["site_after"]) == ("DC1", "DC2")


# --- bad trigger parameters are refused when the run is created -----------------------------------------


@pytest.mark.parametrize(
    ("bad_conf", "message"),
    [
        ({"target_site": "DC9", "reason": "DC1 Interaction Server down"}, "target_site"),
        ({"target_site": "DC2", "reason": "too short"}, "reason"),
        ({"target_site": "DC2", "reason": "   x       "}, "reason"),
        ({"reason": "DC1 Interaction Server down"}, "target_site"),
        ({"target_site": "DC2"}, "reason"),
        ({"target_site": "DC2", "reason": "DC1 Interaction Server down", "dry_run": "yes"}, "dry_run"),
    ],
    ids=[
        "unknown-site",
        "short-reason",
        "blank-reason",
        "missing-target",
        "missing-reason",
        "dry-run-not-bool",
    ],
)
def test_bad_params_are_rejected_at_trigger_time(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any, bad_conf: dict[str, Any], message: str
) -> None:
    sync_dags_to_db()
    response = api.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": bad_conf},
        headers=bearer("approver"),
    )
    assert response.status_code == 400, response.text
    assert message in response.text
    # The same check, on the serialized DAG the API server and scheduler use.
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(failover_dag))
    with pytest.raises(ValueError, match=message):
        serialized.params.deep_merge(bad_conf).validate()
    serialized.params.deep_merge(conf()).validate()


def test_good_params_are_accepted_at_trigger_time(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    """The control case for the refusals above: the same request with a valid conf creates a run."""
    sync_dags_to_db()
    response = api.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": conf()},
        headers=bearer("oncall"),
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["triggering_user_name"] == "oncall"
    assert created["conf"]["target_site"] == "DC2"
    api.delete(f"/api/v2/dags/{DAG_ID}/dagRuns/{created['dag_run_id']}", headers=bearer("approver"))


# --- who may cause a switch: a person signed in to Airflow, once per approval ---------------------------


def test_a_cli_triggered_run_cannot_switch_and_asks_nobody(failover_dag: Any, fast_gir: SimulatedGir) -> None:
    """`airflow dags trigger` records the OS user: pre-flight runs, then refuses before anyone is asked."""
    dag_run = FailoverRun(failover_dag, conf(), triggered_by="root", triggered_via="cli").run()

    assert no_posts(fast_gir)
    task_states = states(dag_run)
    assert task_states[failover_spec.PREFLIGHT] == "failed"
    assert task_states[failover_spec.APPROVE_FAILOVER] == "upstream_failed", "nobody may be asked"
    assert dag_run.state == "failed"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "not-authorized"
    assert "triggered via cli" in record["detail"] and "UI or the REST API" in record["detail"]
    assert record["preflight"]["keystore"] is not None, "pre-flight still ran and recorded its findings"


def test_a_cli_triggered_dry_run_runs_through(failover_dag: Any, fast_gir: SimulatedGir, api: Any) -> None:
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf(dry_run=True), triggered_by="root", triggered_via="cli").run(
        approve_as("approver", seen, api)
    )

    assert no_posts(fast_gir)
    assert dag_run.state == "success", states(dag_run)
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "dry-run"


def test_processing_incomplete_on_the_switch_is_never_resent_and_is_unverified(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    """HTTP 500 + statusCode 9: RWS may have applied it. One POST, then check by hand (was: 4 POSTs)."""
    fast_gir.fault("DC2", count=4, http_status=500, status_code=9, path_contains=SWITCH_PATH, method="POST")
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf()).run(approve_as("approver", seen, api))

    assert [len(p) for p in switch_posts(fast_gir).values()] == [0, 1, 0], "sent once, never resent"
    assert dag_run.state == "failed"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "unverified", record["detail"]
    assert record["switch"]["posted"] is True and record["switch"]["answer"] == "unknown"
    assert "NOT resent" in record["switch"]["detail"] and "by hand" in record["detail"]


# --- the switch back: one catch-up re-index of the primary for the outage ---------------------------------


def test_a_verified_switch_back_triggers_one_catch_up_reindex_of_the_primary_for_the_outage(
    gir_factory: Callable[..., SimulatedGir], tmp_path: Path, airflow_db: Path, api: Any
) -> None:
    from include.gir_ops.airflow_api import AirflowApiClient
    from include.gir_ops.failover import catchup

    document = default_topology_dict()
    document["data_centers"][0]["reindex"] = {"enabled": True}  # DC1 gets gir_es_reindex_dc1
    gir = gir_factory(
        {
            "failover": {
                "approvers": APPROVERS,
                "dr_monitoring_delay_seconds": 1,
                "verify_margin_seconds": 2,
                "response_timeout_minutes": 1,
                "confirm_timeout_minutes": 1,
                "audit_log": f"file://{tmp_path}/audit/failover",
            }
        },
        topology=document,
        dr_monitoring_delay_seconds=0.5,
    )
    sync_dags_to_db()  # the API server must know gir_es_reindex_dc1 to create its run
    dag = parse_dags(REPO_ROOT / "dags" / "gir_eservices_failover.py").dags[DAG_ID]
    # Other tests in this process may have run DC1's re-index DAG: count only the runs this test adds.
    dc1_runs = "/api/v2/dags/gir_es_reindex_dc1/dagRuns"
    earlier = {r["dag_run_id"] for r in api.get(dc1_runs, headers=bearer("approver")).json()["dag_runs"]}

    away_run = FailoverRun(dag, conf(scenario="data-center-lost")).run(approve_as("approver", {}, api))
    assert away_run.state == "success", states(away_run)
    back_run = FailoverRun(
        dag, conf(target="DC1", reason="DC1 Interaction Server restored", scenario="data-center-lost")
    ).run(approve_as("second", {}, api))

    assert back_run.state == "success", states(back_run)
    assert [s["eServicesSite"] for s in applied_switches(gir)] == ["DC2", "DC1"]
    away_record, back_record = audit_records(gir)
    assert (away_record["outcome"], back_record["outcome"]) == ("verified", "verified")
    left = datetime.fromisoformat(away_record["switch"]["switched_at"])
    back = datetime.fromisoformat(back_record["switch"]["switched_at"])
    catch_up = back_record["catch_up"]
    assert catch_up["status"] == "triggered", catch_up
    assert catch_up["dag_id"] == "gir_es_reindex_dc1"
    assert catch_up["dag_run_id"] == catchup.catch_up_run_id(back_run.run_id)
    assert catch_up["outage"]["failover_run_id"] == away_run.run_id
    # From the hour the failover was switched (an hour earlier when both fall in the running hour: the
    # re-index DAG wants an hour between from and to) to the switch-back.
    start, end = datetime.fromisoformat(catch_up["from"]), datetime.fromisoformat(catch_up["to"])
    assert start in (catchup.floor_hour(left), catchup.floor_hour(left) - timedelta(hours=1))
    assert start == catchup.floor_hour(left) or end - catchup.floor_hour(left) < timedelta(hours=1)
    assert end in (back, catchup.ceil_hour(back)) and end - start >= timedelta(hours=1)
    assert "re-index of DC1 for the outage" in catch_up["detail"]
    assert back_record["follow_ups"] and all("Switch back" not in f for f in back_record["follow_ups"])

    # What landed in Airflow: exactly one run of DC1's re-index DAG, with the window as manual from/to.
    runs = [
        r
        for r in api.get(dc1_runs, headers=bearer("approver")).json()["dag_runs"]
        if r["dag_run_id"] not in earlier
    ]
    assert [r["dag_run_id"] for r in runs] == [catch_up["dag_run_id"]]
    assert runs[0]["conf"] == {"from": catch_up["from"], "to": catch_up["to"]}
    # A retried or cleared catch-up task asks again with the same run id: Airflow answers 409.
    with AirflowApiClient() as client:
        again = catchup.trigger_catch_up({**catch_up, "detail": "retry"}, client, back_run.run_id)
    assert again["status"] == "already-triggered"
    runs = [
        r
        for r in api.get(dc1_runs, headers=bearer("approver")).json()["dag_runs"]
        if r["dag_run_id"] not in earlier
    ]
    assert len(runs) == 1
    api.delete(f"/api/v2/dags/gir_es_reindex_dc1/dagRuns/{runs[0]['dag_run_id']}", headers=bearer("approver"))


def test_a_switch_back_without_a_failover_in_the_audit_log_is_red_and_says_how_to_catch_up(
    failover_dag: Any, fast_gir: SimulatedGir, api: Any
) -> None:
    """The outage window is unknown (the failover away was done by hand): nothing partial looks done."""
    fast_gir.configure_environment(current_site="DC2")
    seen: dict[str, Any] = {}
    dag_run = FailoverRun(failover_dag, conf(target="DC1", reason="DC1 restored, switched away by hand")).run(
        approve_as("approver", seen, api)
    )

    assert fast_gir.environment()["current_site"] == "DC1"
    assert dag_run.state == "failed", "the indexes of DC1 are not being brought up to date"
    [record] = audit_records(fast_gir)
    assert record["outcome"] == "verified", "the switch itself is fine and recorded so"
    assert record["catch_up"]["status"] == "no-failover-found"
    assert "holds no failover away from DC1" in record["catch_up"]["detail"]
    assert "/api/v2/dags/gir_es_reindex_dc1/dagRuns" in record["catch_up"]["detail"]
    assert states(dag_run)[failover_spec.OUTCOME] == "failed"
