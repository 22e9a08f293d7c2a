"""The gir_es_reindex_<site> DAGs, run with dag.test() against the simulated DCs: what RWS received.

Every test asserts on the simulator's record (the POSTs RWS received, the hours it re-indexed), not on
what the DAG believes it did. dag.test() runs tasks in this process, so the client's backoff is shortened
here and the tasks' retry_delay set to 0: Airflow's own retries still happen, just without waiting.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.gir_ops import shared
from include.gir_ops.reindex.windows import to_ms
from include.gir_ops.shared import CONTACT_CENTER_ID_PATTERN
from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH
from include.gir_sim.server import simulated_contact_centers
from include.gir_sim.state import SimError

# Each DAG starts with check_pools, which asks Airflow's REST API (the in-process test server) for its pools.
pytestmark = pytest.mark.usefixtures("airflow_api")

REPO_ROOT = Path(__file__).resolve().parents[2]
CC_A, CC_B = "625a5cf1-dea8-4e46-b18b-831d4b254488", "0c7e2b9d-4f13-4a8e-9b6d-2e5f8a1c3d70"
HOUR_MS = 3_600_000
KINDS = ("recordings", "screen-recordings")
ONE_PAIR = {"contact_centers": [CC_A], "kinds": ["recordings"]}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's 1 s / 2 s / 4 s backoff, shortened: the retries still happen, in milliseconds."""
    from include.gir_ops import rws
    from include.gir_ops.reindex import send
    from include.gir_ops.rws import RetryPolicy

    monkeypatch.setattr(send, "RETRY_POLICY", RetryPolicy(initial_backoff_seconds=0.01))
    monkeypatch.setattr(rws, "REACHABILITY_PROBE", RetryPolicy(attempts=3, initial_backoff_seconds=0.01))


def run(dag: Any, **kwargs: Any) -> Any:
    """dag.test() with Airflow's retries kept (retries=2) but without the 5-minute wait between them."""
    for task in dag.tasks:
        task.retry_delay = timedelta(0)
    return dag.test(**kwargs)


def task_instances(dag_run: Any) -> dict[tuple[str, int], Any]:
    return {(ti.task_id, ti.map_index): ti for ti in dag_run.get_task_instances()}


def force_index_posts(gir: Any, site: str) -> list[dict[str, Any]]:
    """Every forceIndex POST the DC's RWS received, in order, in GIR words."""
    posts = []
    for request in gir.posts(site, "/contact-centers/"):
        _, contact_center_id, kind = request["path"].rsplit("/", 2)
        body = request["body"]
        posts.append(
            {
                "cc": contact_center_id,
                "kind": kind,
                "from": body["from"],
                "to": body["to"],
                "purgeOld": body["purgeOld"],
                "http_status": request["http_status"],
            }
        )
    return posts


def windows_of(posts: list[dict[str, Any]]) -> Counter[tuple[str, str, int, int, bool]]:
    return Counter((p["cc"], p["kind"], p["from"], p["to"], p["purgeOld"]) for p in posts)


def hours(start: datetime, end: datetime) -> dict[int, int]:
    """Each hour of [start, end) re-indexed exactly once, as the simulator's /_sim/indexed reports it."""
    return {hour: 1 for hour in range(to_ms(start), to_ms(end), HOUR_MS)}


def checkpoint_variables() -> list[str]:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        keys = session.scalars(select(Variable.key)).all()
    return [key for key in keys if key.startswith("gir_es_reindex_checkpoint")]


def topology_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The default topology document with one DC changed (gir_factory's overrides replace whole lists)."""
    document = yaml.safe_load(DEFAULT_TOPOLOGY_PATH.read_text(encoding="utf-8"))
    change({dc["site"]: dc for dc in document["data_centers"]})
    return document


@pytest.fixture
def as_run_type(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make dag.test() create a run of another type (it always creates manual runs)."""

    def patch(run_type: str) -> None:
        import airflow.models.dagrun as dagrun_module
        from airflow.utils.types import DagRunType

        original = dagrun_module.get_or_create_dagrun

        def create(**kwargs: Any) -> Any:
            dag_run = original(**kwargs)
            dag_run.run_type = DagRunType(run_type)
            kwargs["session"].commit()
            return dag_run

        monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create)

    return patch


@pytest.fixture
def task_output(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[[], str]]:
    """What the tasks logged: dag.test() runs them in this process, so Airflow's task log lines land on
    stdout and the project's (stdlib) log records in caplog."""
    caplog.set_level(logging.INFO)
    collected: list[str] = []

    def read() -> str:
        captured = capfd.readouterr()
        collected.append(captured.out + captured.err)
        return "".join(collected) + caplog.text

    yield read


# --- the DAGs as the dag-processor sees them ---------------------------------------------------------


def test_one_dag_per_reindex_dc_with_a_data_interval_in_the_dcs_timezone(gir: Any, load_dag: Any) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import CronDataIntervalTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable

    from include.gir_ops.bootstrap import pool_specs

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "gir_es_reindex.py"))
    # Every DC has its DAG; DC1 (reindex.enabled false) an unscheduled one (see the tests below).
    assert sorted(bag.dags) == ["gir_es_reindex_dc1", "gir_es_reindex_dc2", "gir_es_reindex_dc3"]
    pools = {spec.name for spec in pool_specs(gir.topology)}
    for site, cron, timezone in (("DC2", "0 2 * * *", "Europe/Paris"), ("DC3", "30 1 * * *", "Asia/Kolkata")):
        dag = load_dag(f"gir_es_reindex_{site.lower()}")
        assert isinstance(dag.timetable, CronDataIntervalTimetable)
        timetable = coerce_to_core_timetable(dag.timetable)
        assert (timetable._expression, str(timetable._timezone)) == (cron, timezone)
        # Consecutive runs tile time: each interval starts where the previous one ended, 24 h long.
        intervals = [
            timetable.infer_manual_data_interval(run_after=utc(2026, 11, day)) for day in (19, 20, 21)
        ]
        for earlier, later in itertools.pairwise(intervals):
            assert earlier.end == later.start
            assert later.end - later.start == timedelta(hours=24)
        assert dag.catchup is False
        assert dag.max_active_runs == 1
        assert dag.start_date == shared.DAG_START_DATE  # the earliest date a backfill may cover
        assert dag.owner == "gir-ops"
        assert set(dag.params) == {"from", "to", "contact_centers", "kinds", "purge_old"}
        # The trigger form offers only the kinds this DC uses, and its contact centers when listed.
        kinds_used = ["recordings", "screen-recordings"] if site == "DC2" else ["recordings"]
        assert dag.params.get_param("kinds").schema["examples"] == kinds_used
        contact_centers = dag.params.get_param("contact_centers").schema
        assert contact_centers.get("examples") == (gir.topology.site(site).rws.contact_centers or None)
        assert contact_centers["items"]["pattern"] == CONTACT_CENTER_ID_PATTERN  # the one shared pattern
        plan, send = dag.get_task("plan"), dag.get_task("send")
        dc = gir.topology.site(site)
        assert plan.pool == send.pool == dc.rws_pool
        assert dc.rws_pool in pools  # created by the project's bootstrap, else tasks would never run
        assert send.map_index_template.count("op_kwargs") == 2
        assert plan.retries >= 2
        assert send.retries >= 2
        assert plan.downstream_task_ids == {"send"}


def test_a_dc_without_reindex_enabled_gets_a_dag_for_backfill_and_manual_runs_only(
    gir: Any, load_dag: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The guide wants the indexes up to date in every DC: the primary too has a DAG, never scheduled."""
    from airflow.serialization.encoders import coerce_to_core_timetable

    from include.gir_ops.bootstrap import pool_specs
    from include.gir_ops.reindex.timetable import ManualAndBackfillOnlyTimetable

    with caplog.at_level(logging.WARNING):
        dag = load_dag("gir_es_reindex_dc1")
    assert not [r for r in caplog.records if "gir_es_reindex" in r.getMessage()]  # no "not configured"
    assert dag.timetable == ManualAndBackfillOnlyTimetable("0 2 * * *", "UTC")  # DC1's reindex.schedule
    assert dag.timetable.can_be_scheduled is False  # the scheduler never creates a run of it
    assert coerce_to_core_timetable(dag.timetable).periodic is True  # so it can be backfilled (see below)
    assert "manual-only" in dag.tags
    assert "backfill and manual runs only" in dag.description
    assert "**backfill and manual only**" in dag.doc_md
    assert "airflow backfill create --dag-id\n  gir_es_reindex_dc1" in dag.doc_md
    assert "ONE manual run with `from` and `to`" in dag.doc_md
    dc1 = gir.topology.site("DC1")
    assert dag.get_task("plan").pool == dc1.rws_pool
    assert dc1.rws_pool in {spec.name for spec in pool_specs(gir.topology)}  # bootstrap creates it
    assert set(dag.params) == {"from", "to", "contact_centers", "kinds", "purge_old"}


def test_a_topology_where_no_dc_reindexes_still_defines_one_dag_per_dc(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    document = topology_with(lambda dcs: [dc.pop("reindex", None) for dc in dcs.values()])
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("GIR_TOPOLOGY", str(path))
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "gir_es_reindex.py"))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == ["gir_es_reindex_dc1", "gir_es_reindex_dc2", "gir_es_reindex_dc3"]
    assert all(not dag.timetable.can_be_scheduled for dag in bag.dags.values())


def test_the_unscheduled_dag_reindexes_a_manual_range_of_the_primary(gir: Any, load_dag: Any) -> None:
    """The catch-up after an outage: one manual run with from/to, every contact center and kind of DC1."""
    conf = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-04T00:00:00Z"}
    dag_run = run(load_dag("gir_es_reindex_dc1"), logical_date=None, run_conf=conf)
    assert dag_run.state == "success"
    days = [utc(2026, 11, day) for day in (1, 2, 3, 4)]
    assert windows_of(force_index_posts(gir, "DC1")) == Counter(
        {
            (cc, kind, to_ms(start), to_ms(end), False): 1
            for cc in (CC_A, CC_B)
            for kind in KINDS
            for start, end in itertools.pairwise(days)
        }
    )
    assert gir.requests("DC2") == [] and gir.requests("DC3") == []


def test_the_unscheduled_dag_without_from_to_reindexes_the_cron_period_before_its_logical_date(
    gir: Any, load_dag: Any
) -> None:
    """The cron interval logic stays available: reindex.schedule (0 2 * * * UTC for DC1) gives the period."""
    dag_run = run(load_dag("gir_es_reindex_dc1"), logical_date=utc(2026, 11, 20), run_conf=ONE_PAIR)
    assert dag_run.state == "success"
    start, end = utc(2026, 11, 18, 2), utc(2026, 11, 19, 2)
    assert windows_of(force_index_posts(gir, "DC1")) == Counter(
        {(CC_A, "recordings", to_ms(start), to_ms(end), False): 1}
    )


def test_airflow_backfills_the_unscheduled_dag_with_its_cron_intervals_and_the_ui_offers_it(
    gir: Any, load_dag: Any, airflow_api: Any
) -> None:
    """Checked against Airflow 3.3's own backfill code and REST API, on the DAG as the API server holds it."""
    import requests
    from airflow.models import DagRun
    from airflow.models.backfill import _create_backfill
    from airflow.utils.session import create_session

    dag_run = run(load_dag("gir_es_reindex_dc1"), logical_date=utc(2026, 11, 20), run_conf=ONE_PAIR)
    assert dag_run.state == "success"  # dag.test() wrote the serialized DAG the backfill code reads
    backfill = _create_backfill(
        dag_id="gir_es_reindex_dc1",
        from_date=utc(2026, 11, 1),
        to_date=utc(2026, 11, 4),
        max_active_runs=1,
        reverse=False,
        dag_run_conf=None,
        triggering_user_name="test",
    )
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.backfill_id == backfill.id).order_by(DagRun.run_after)
        windows = [(r.run_type, r.data_interval_start, r.data_interval_end) for r in runs]
    assert windows == [
        ("backfill", utc(2026, 11, day, 2), utc(2026, 11, day + 1, 2)) for day in (1, 2, 3)
    ]  # DC1's reindex.schedule 0 2 * * * UTC

    # The UI's Trigger dialog enables "Backfill" when GET /api/v2/dags/{dag_id} says is_backfillable.
    token = requests.post(
        f"{airflow_api.url}/auth/token",
        json={"username": airflow_api.login, "password": airflow_api.password},
        timeout=30,
    ).json()["access_token"]
    details = requests.get(
        f"{airflow_api.url}/api/v2/dags/gir_es_reindex_dc1/details",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    assert details["is_backfillable"] is True
    assert details["timetable_summary"] == "Backfill and manual only (0 2 * * *)"
    assert details["timetable_description"].startswith("Backfill and manual only: the scheduler never")
    assert details["next_dagrun_run_after"] is None  # nothing planned: the scheduler never starts a run

    # The scheduler's own query for DAGs to create runs of (dag.test() synced every DAG of the folder, as
    # the dag-processor does): unpaused, DC2's scheduled DAG is due, DC1's never.
    from airflow.models.dag import DagModel

    with create_session() as session:
        reindex_dags = session.query(DagModel).filter(DagModel.dag_id.like("gir_es_reindex_%")).all()
        for dag_model in reindex_dags:
            dag_model.is_paused = False
        session.flush()
        due, _ = DagModel.dags_needing_dagruns(session)
        due_ids = {dag_model.dag_id for dag_model in due}
        for dag_model in reindex_dags:
            dag_model.is_paused = True
    assert "gir_es_reindex_dc2" in due_ids
    assert "gir_es_reindex_dc1" not in due_ids


def test_a_topology_that_reads_a_connection_variable_fails_parsing_without_leaking_it(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``${AIRFLOW_CONN_...}`` must not put a connection URI with its password into a DAG's doc_md."""
    from airflow.dag_processing.dagbag import DagBag

    secret = "Ops-Password-Never-In-A-Doc-71"
    document = topology_with(lambda dcs: dcs["DC2"]["rws"].update(conn_id="${AIRFLOW_CONN_GIR_RWS_DC2}"))
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("GIR_TOPOLOGY", str(path))
    monkeypatch.setenv("AIRFLOW_CONN_GIR_RWS_DC2", f"http://ops:{secret}@rws-dc2:8090")
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "gir_es_reindex.py"))
    assert bag.dags == {}
    errors = "\n".join(str(error) for error in bag.import_errors.values())
    assert (
        "data_centers[1].rws.conn_id: ${AIRFLOW_CONN_GIR_RWS_DC2} is not allowed: only GIR_* environment "
        "variables are expanded in a topology"
    ) in errors
    assert secret not in errors


def test_the_default_params_are_valid_for_scheduled_runs(gir: Any, load_dag: Any) -> None:
    dag = load_dag("gir_es_reindex_dc2")
    assert dag.params.validate() == {
        "from": None,
        "to": None,
        "contact_centers": [],
        "kinds": [],
        "purge_old": False,
    }


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"kinds": ["videos"]}, "'videos' is not one of ['recordings', 'screen-recordings']"),
        ({"kinds": "recordings"}, "'recordings' is not of type 'array'"),
        ({"contact_centers": ["9a4c-1e3f"]}, "'9a4c-1e3f' does not match"),
        ({"contact_centers": ["../9a4c"]}, "'../9a4c' does not match"),
        ({"contact_centers": ["f" * 65]}, f"'{'f' * 65}' does not match"),
        # A UUID must be exactly 8-4-4-4-12: a short group, braces or a urn: prefix are refused.
        ({"contact_centers": [CC_A[:-1]]}, f"'{CC_A[:-1]}' does not match"),
        ({"contact_centers": [f"{{{CC_A}}}"]}, f"'{{{CC_A}}}' does not match"),
        ({"contact_centers": [f"urn:uuid:{CC_A}"]}, f"'urn:uuid:{CC_A}' does not match"),
        ({"from": "2026-11-20T00:00:00"}, "'2026-11-20T00:00:00' does not match"),
        ({"to": "yesterday"}, "'yesterday' does not match"),
        ({"purge_old": "yes"}, "'yes' is not of type 'boolean'"),
    ],
)
def test_the_params_schema_rejects_bad_values_when_the_run_is_created(
    gir: Any, load_dag: Any, conf: dict[str, Any], message: str
) -> None:
    """The same check the REST API and the UI trigger form run (HTTP 400 before any run exists)."""
    from airflow.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    dag = load_dag("gir_es_reindex_dc2")
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    with pytest.raises(ParamValidationError) as caught:
        scheduler_dag.params.deep_merge(conf).validate()
    assert message in str(caught.value)


@pytest.mark.parametrize("contact_center", [CC_A, CC_A.upper(), "9a4c1e3f0b", "9A4C1E3F0B"])
def test_the_params_schema_accepts_both_id_forms_in_any_case(
    gir: Any, load_dag: Any, contact_center: str
) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    dag = load_dag("gir_es_reindex_dc2")
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    validated = scheduler_dag.params.deep_merge({"contact_centers": [contact_center]}).validate()
    assert validated["contact_centers"] == [contact_center]


def test_a_manual_run_with_an_upper_case_uuid_sends_it_lower_case(gir: Any, load_dag: Any) -> None:
    """The operator pastes the ID as some tool prints it: the run re-indexes that contact center."""
    conf = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "contact_centers": [CC_B.upper()]}
    conf["kinds"] = ["recordings"]
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=conf)
    assert dag_run.state == "success"
    assert [p["cc"] for p in force_index_posts(gir, "DC2")] == [CC_B]


def test_a_run_with_an_unknown_kind_is_never_created(gir: Any, load_dag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = load_dag("gir_es_reindex_dc2")
    with pytest.raises(ParamValidationError, match="'videos' is not one of"):
        run(dag, logical_date=None, run_conf={"kinds": ["videos"]})
    assert gir.requests("DC2") == []


# --- what RWS receives -------------------------------------------------------------------------------


def test_a_scheduled_run_of_dc2_reindexes_exactly_its_data_interval(gir: Any, load_dag: Any) -> None:
    """02:00 Europe/Paris; logical date 2026-11-20 00:00Z gives the interval [18th 01:00Z, 19th 01:00Z)."""
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=utc(2026, 11, 20))
    assert dag_run.state == "success"
    start, end = utc(2026, 11, 18, 1), utc(2026, 11, 19, 1)
    assert windows_of(force_index_posts(gir, "DC2")) == Counter(
        {(cc, kind, to_ms(start), to_ms(end), False): 1 for cc in (CC_A, CC_B) for kind in KINDS}
    )
    assert gir.indexed("DC2") == {cc: {kind: hours(start, end) for kind in KINDS} for cc in (CC_A, CC_B)}
    # One GET: the reachability check before anything is sent; the contact centers come from the topology.
    assert [r["path"] for r in gir.requests("DC2") if r["method"] == "GET"] == ["/api/v2/ops/contact-centers"]
    sends = {
        ti.rendered_map_index: ti.state for (task, _), ti in task_instances(dag_run).items() if task == "send"
    }
    assert sends == {f"{cc} {kind}": "success" for cc in (CC_A, CC_B) for kind in KINDS}
    assert checkpoint_variables() == []
    assert gir.requests("DC3") == []  # one DC's DAG never touches another DC


@pytest.mark.parametrize(
    ("schedule", "start", "end", "window_hours"),
    [
        # The default: 01:30 IST is 20:00 UTC, whole hours already.
        ("30 1 * * *", utc(2026, 11, 18, 20), utc(2026, 11, 19, 20), [6, 6, 6, 6]),
        # 02:00 IST is 20:30 UTC: the interval [18th 20:30Z, 19th 20:30Z) is widened outward.
        ("0 2 * * *", utc(2026, 11, 18, 20), utc(2026, 11, 19, 21), [6, 6, 6, 6, 1]),
    ],
)
def test_a_utc_0530_dc_discovers_its_contact_centers_and_widens_to_whole_hours(
    gir_factory: Any,
    load_dag: Any,
    *,
    schedule: str,
    start: datetime,
    end: datetime,
    window_hours: list[int],
) -> None:
    gir = gir_factory(topology=topology_with(lambda dcs: dcs["DC3"]["reindex"].update(schedule=schedule)))
    dag_run = run(load_dag("gir_es_reindex_dc3"), logical_date=utc(2026, 11, 20))
    assert dag_run.state == "success"
    assert [r["path"] for r in gir.requests("DC3") if r["method"] == "GET"] == ["/api/v2/ops/contact-centers"]
    discovered = simulated_contact_centers("DC3")
    posts = force_index_posts(gir, "DC3")
    assert {p["kind"] for p in posts} == {"recordings"}  # DC3 has no screen recording
    expected, cursor = [], start
    for length in window_hours:
        expected.append((to_ms(cursor), to_ms(cursor + timedelta(hours=length))))
        cursor += timedelta(hours=length)
    assert cursor == end
    assert windows_of(posts) == Counter(
        {(cc, "recordings", lo, hi, False): 1 for cc in discovered for lo, hi in expected}
    )
    assert gir.indexed("DC3") == {cc: {"recordings": hours(start, end)} for cc in discovered}


def test_a_manual_three_day_range_is_sent_in_daily_windows(gir: Any, load_dag: Any) -> None:
    conf = {"from": "2026-11-01T00:00:00+01:00", "to": "2026-11-04T00:00:00+01:00"}
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=conf)
    assert dag_run.state == "success"
    days = [utc(2026, 10, 31, 23) + timedelta(days=n) for n in range(4)]
    assert windows_of(force_index_posts(gir, "DC2")) == Counter(
        {
            (cc, kind, to_ms(lo), to_ms(hi), False): 1
            for cc in (CC_A, CC_B)
            for kind in KINDS
            for lo, hi in itertools.pairwise(days)
        }
    )
    assert gir.indexed("DC2") == {
        cc: {kind: hours(days[0], days[-1]) for kind in KINDS} for cc in (CC_A, CC_B)
    }


def fail_window(gir: Any, site: str, from_ms: int, *, times: int, http_status: int, status_code: int) -> None:
    """The simulated RWS refuses the window starting at ``from_ms`` the next ``times`` times."""
    state = gir.simulator.state
    original = state.force_index
    remaining = {"times": times}

    def force_index(dc_site: str, contact_center_id: str, kind: str, body: Any) -> dict[str, Any]:
        if dc_site == site and isinstance(body, dict) and body.get("from") == from_ms and remaining["times"]:
            remaining["times"] -= 1
            raise SimError(http_status, status_code, "injected fault for this window")
        return original(dc_site, contact_center_id, kind, body)

    state.force_index = force_index


def test_purge_goes_first_and_a_retry_resumes_without_resending_or_repurging(
    gir: Any, load_dag: Any, task_output: Callable[[], str]
) -> None:
    """Window 3 fails for a whole try (4 attempts); Airflow's retry resumes there from the checkpoint.

    XComs cannot carry this: Airflow deletes a task's own XComs when its next try starts. The checkpoint
    is an Airflow Variable, written through the Task SDK, read back by the second try.
    """
    days = [utc(2026, 11, 1) + timedelta(days=n) for n in range(5)]
    fail_window(gir, "DC2", to_ms(days[2]), times=4, http_status=503, status_code=4)
    conf = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-05T00:00:00Z", "purge_old": True, **ONE_PAIR}
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=conf)

    assert dag_run.state == "success"
    send = task_instances(dag_run)[("send", 0)]
    assert (send.try_number, send.rendered_map_index) == (2, f"{CC_A} recordings")
    sent = [(p["from"], p["purgeOld"], p["http_status"]) for p in force_index_posts(gir, "DC2")]
    first, second, third, fourth = (to_ms(day) for day in days[:4])
    assert sent == [
        (first, True, 200),  # the purge, alone and first
        (second, False, 200),
        *[(third, False, 503)] * 4,  # try 1 gives up on window 3 ...
        (third, False, 200),  # ... try 2 starts there: windows 1-2 are not sent again, no second purge
        (fourth, False, 200),
    ]
    assert gir.simulator.state.sites["DC2"].purges == [(CC_A, "recordings")]
    assert gir.indexed("DC2") == {CC_A: {"recordings": hours(days[0], days[-1])}}
    assert "windows 1-2 of 4 were sent by an earlier try of this run" in task_output()
    assert checkpoint_variables() == []  # deleted once the pair completed


def test_a_refused_purge_sends_nothing_else(gir: Any, load_dag: Any, task_output: Callable[[], str]) -> None:
    fail_window(gir, "DC2", to_ms(utc(2026, 11, 1)), times=1, http_status=400, status_code=2)
    conf = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-04T00:00:00Z", "purge_old": True, **ONE_PAIR}
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=conf)
    assert dag_run.state == "failed"
    assert [(p["purgeOld"], p["http_status"]) for p in force_index_posts(gir, "DC2")] == [(True, 400)]
    assert task_instances(dag_run)[("send", 0)].try_number == 1  # statusCode 2: no Airflow retry either
    assert "this was the purgeOld POST" in task_output()


# --- faults ------------------------------------------------------------------------------------------

TWO_DAYS = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-03T00:00:00Z", **ONE_PAIR}
DAY_1, DAY_2, DAY_3 = (to_ms(utc(2026, 11, day)) for day in (1, 2, 3))


def sent_windows(gir: Any) -> list[tuple[int, int | None]]:
    return [(p["from"], p["http_status"]) for p in force_index_posts(gir, "DC2")]


def test_503_twice_then_success(gir: Any, load_dag: Any) -> None:
    gir.fault("DC2", count=2, mode="status", http_status=503, status_code=4, method="POST")
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)
    assert dag_run.state == "success"
    assert sent_windows(gir) == [(DAY_1, 503), (DAY_1, 503), (DAY_1, 200), (DAY_2, 200)]
    assert gir.indexed("DC2") == {CC_A: {"recordings": hours(utc(2026, 11, 1), utc(2026, 11, 3))}}
    assert task_instances(dag_run)[("send", 0)].try_number == 1  # the client's retries were enough


def test_429_twice_then_success(gir: Any, load_dag: Any, task_output: Callable[[], str]) -> None:
    """A throttled forceIndex was not processed, so it is resent instead of failing at once."""
    gir.fault("DC2", count=2, mode="status", http_status=429, status_code=19, method="POST")
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)
    assert dag_run.state == "success"
    assert sent_windows(gir) == [(DAY_1, 429), (DAY_1, 429), (DAY_1, 200), (DAY_2, 200)]
    assert gir.indexed("DC2") == {CC_A: {"recordings": hours(utc(2026, 11, 1), utc(2026, 11, 3))}}
    assert task_instances(dag_run)[("send", 0)].try_number == 1
    assert "RWS DC2 is throttling requests and did not process forceIndex of recordings" in task_output()


def test_refused_credentials_fail_at_once_and_say_so(
    gir: Any, load_dag: Any, monkeypatch: pytest.MonkeyPatch, task_output: Callable[[], str]
) -> None:
    wrong = "not-the-ops-password-4711"
    connection = json.loads(gir.env["AIRFLOW_CONN_GIR_RWS_DC2"]) | {"password": wrong}
    monkeypatch.setenv("AIRFLOW_CONN_GIR_RWS_DC2", json.dumps(connection))
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)
    assert dag_run.state == "failed"
    # Refused at the reachability check, before any POST: no client retry, no Airflow retry.
    assert sent_windows(gir) == []
    assert [(r["method"], r["http_status"]) for r in gir.requests("DC2")] == [("GET", 401)]
    plan = task_instances(dag_run)[("plan", -1)]
    assert (plan.state, plan.try_number) == ("failed", 1)
    output = task_output()
    assert "RWS DC2 refused the credentials of connection 'gir_rws_dc2'" in output
    assert "check the connection's login and password" in output
    assert wrong not in output
    assert gir.ops_password not in output


def test_status_code_2_is_not_retried_and_names_the_window(
    gir: Any, load_dag: Any, task_output: Callable[[], str]
) -> None:
    gir.fault("DC2", count=1, mode="status", http_status=400, status_code=2, method="POST")
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)
    assert dag_run.state == "failed"
    assert sent_windows(gir) == [(DAY_1, 400)]
    send = task_instances(dag_run)[("send", 0)]
    assert (send.state, send.try_number) == ("failed", 1)
    assert send.rendered_map_index == f"{CC_A} recordings"  # the UI names the failed pair
    output = task_output()
    assert (
        f"RWS DC2 rejected forceIndex of recordings for contact center {CC_A}, window 1/2 "
        "[2026-11-01T00:00Z, 2026-11-02T00:00Z) (from=1793491200000, to=1793577600000): HTTP 400, "
        "statusCode 2 = a parameter is not valid for the current state"
    ) in output


def test_a_dc_that_is_down_fails_once_naming_it_without_a_retry_storm(
    gir: Any, load_dag: Any, task_output: Callable[[], str]
) -> None:
    gir.simulator.stop_site("DC2")
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)
    assert dag_run.state == "failed"
    tis = task_instances(dag_run)
    assert (tis[("plan", -1)].state, tis[("plan", -1)].try_number) == ("failed", 1)  # no Airflow retry
    assert [(key, ti.state) for key, ti in tis.items() if key[0] == "send"] == [
        (("send", -1), "upstream_failed")  # never expanded: no forceIndex task, no retries of one
    ]
    output = task_output()
    assert len(re.findall(r"failed \(attempt [12]/3\)", output)) == 2  # the probe's own 3 attempts
    assert "data center DC2 unreachable: RWS DC2 did not answer GET /api/v2/ops/contact-centers" in output
    assert "through connection 'gir_rws_dc2' (3 attempt(s))" in output
    assert "connection refused or host unknown" in output
    assert "Nothing was sent." in output
    gir.simulator.start_site("DC2")
    assert gir.requests("DC2") == []  # nothing ever reached RWS


def test_a_dc_that_drops_mid_run_is_retried_then_fails_clearly(
    gir: Any, load_dag: Any, task_output: Callable[[], str]
) -> None:
    """Reachable at the start, then every forceIndex refused: the sends' own retries still apply."""
    gir.fault("DC2", mode="drop", count=1000, path_contains="/recordings")
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)
    assert dag_run.state == "failed"
    send = task_instances(dag_run)[("send", 0)]
    assert send.try_number == 3  # Airflow retried twice after the client's own attempts
    output = task_output()
    assert f"RWS DC2 could not be reached for forceIndex of recordings for contact center {CC_A}" in output
    assert "(gave up after 4 attempts)" in output


def test_a_timeout_is_resent_and_the_range_completes(
    gir: Any, load_dag: Any, monkeypatch: pytest.MonkeyPatch, task_output: Callable[[], str]
) -> None:
    connection = json.loads(gir.env["AIRFLOW_CONN_GIR_RWS_DC2"]) | {"extra": {"timeout": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_GIR_RWS_DC2", json.dumps(connection))
    gir.fault("DC2", count=1, mode="delay", delay_ms=2500, method="POST")
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)
    assert dag_run.state == "success"
    assert f"RWS DC2 did not answer forceIndex of recordings for contact center {CC_A}" in task_output()
    # The timed-out POST is still processed by RWS, 2.5 s after it arrived: wait for it to be recorded.
    deadline = time.monotonic() + 10
    while len(sent_windows(gir)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Counter(start for start, _ in sent_windows(gir)) == {DAY_1: 2, DAY_2: 1}
    indexed = gir.indexed("DC2")[CC_A]["recordings"]
    assert set(indexed) == set(hours(utc(2026, 11, 1), utc(2026, 11, 3)))


# --- pools: a run whose pool does not exist fails at once -------------------------------------------


@pytest.fixture
def without_pool(airflow_api: Any) -> Iterator[Callable[[str], None]]:
    """Delete a pool for the test; every pool of the default topology exists again afterwards."""
    from airflow.models import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from include.gir_ops.bootstrap import ensure_pools
    from include.gir_ops.topology import load_topology

    def drop(name: str) -> None:
        with create_session() as session:
            session.execute(delete(Pool).where(Pool.pool == name))

    yield drop
    ensure_pools(load_topology(DEFAULT_TOPOLOGY_PATH))


def test_check_pools_runs_first_in_default_pool(gir: Any, load_dag: Any) -> None:
    dag = load_dag("gir_es_reindex_dc2")
    check = dag.get_task("check_pools")
    assert [task.task_id for task in dag.roots] == ["check_pools"]
    assert check.downstream_task_ids == {"plan"}
    assert check.pool == "default_pool"  # in the DC's pool it could never run when that pool is missing
    assert check.retries >= 2


def test_a_missing_pool_fails_the_run_at_check_pools_and_sends_nothing(
    gir: Any, load_dag: Any, without_pool: Callable[[str], None], task_output: Callable[[], str]
) -> None:
    without_pool("gir_rws_dc2")
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)

    assert dag_run.state == "failed"
    tis = task_instances(dag_run)
    check = tis[("check_pools", -1)]
    assert (check.state, check.try_number) == ("failed", 1)  # AirflowFailException: no retry
    assert tis[("plan", -1)].state == "upstream_failed"
    output = task_output()
    assert (
        "Airflow pool(s) missing: gir_rws_dc2. The tasks of gir_es_reindex_dc2 in them would never" in output
    )
    assert "python -m include.gir_ops.bootstrap pools" in output
    assert 'airflow pools set gir_rws_dc2 1 "Concurrent forceIndex POSTs to the RWS of DC2' in output
    assert force_index_posts(gir, "DC2") == []
    assert gir.requests("DC2") == []  # not even the read-only discovery


def fails_at_check_pools_at_once(load_dag: Any, task_output: Callable[[], str]) -> str:
    """Run two days of DC2: the run fails at check_pools on its first try (no retry); what it logged."""
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=TWO_DAYS)

    assert dag_run.state == "failed"
    check = task_instances(dag_run)[("check_pools", -1)]
    assert (check.state, check.try_number) == ("failed", 1)
    return task_output()


def test_without_the_airflow_api_connection_the_run_fails_at_once_saying_how_to_create_it(
    gir: Any, load_dag: Any, monkeypatch: pytest.MonkeyPatch, task_output: Callable[[], str]
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_GIR_AIRFLOW_API")
    output = fails_at_check_pools_at_once(load_dag, task_output)
    assert "the Airflow connection 'gir_airflow_api' does not exist; create the HTTP connection" in output
    assert "python -m include.gir_ops.bootstrap airflow-api --url" in output
    assert gir.requests("DC2") == []


def test_a_wrong_airflow_api_password_fails_at_once_and_is_never_shown(
    gir: Any,
    load_dag: Any,
    airflow_api: Any,
    monkeypatch: pytest.MonkeyPatch,
    task_output: Callable[[], str],
) -> None:
    wrong = "not-the-api-password-0815"
    connection = json.loads(airflow_api.connection_json()) | {"password": wrong}
    monkeypatch.setenv("AIRFLOW_CONN_GIR_AIRFLOW_API", json.dumps(connection))
    output = fails_at_check_pools_at_once(load_dag, task_output)
    assert "refused the login 'gir_pools_reader' of connection 'gir_airflow_api' (HTTP 401" in output
    assert wrong not in output
    assert airflow_api.password not in output
    assert gir.requests("DC2") == []


def test_an_unreachable_airflow_api_is_retried_by_airflow(
    gir: Any,
    load_dag: Any,
    airflow_api: Any,
    monkeypatch: pytest.MonkeyPatch,
    task_output: Callable[[], str],
) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    connection = json.loads(airflow_api.connection_json()) | {"port": closed_port}
    monkeypatch.setenv("AIRFLOW_CONN_GIR_AIRFLOW_API", json.dumps(connection))
    dag = load_dag("gir_es_reindex_dc2")
    dag_run = run(dag, logical_date=None, run_conf=TWO_DAYS)

    assert dag_run.state == "failed"
    check = task_instances(dag_run)[("check_pools", -1)]
    retries = dag.get_task("check_pools").retries
    assert (check.state, check.try_number) == ("failed", 1 + retries)  # every retry was used
    assert f"the Airflow API at http://127.0.0.1:{closed_port} could not be reached" in task_output()
    assert gir.requests("DC2") == []


# --- bad params that only the plan task can judge ----------------------------------------------------


@pytest.mark.parametrize(
    ("run_type", "conf", "message"),
    [
        (
            "manual",
            {"from": "2026-11-05T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
            "param 'to' (2026-11-01T00:00Z) is not after param 'from' (2026-11-05T00:00Z)",
        ),
        ("manual", {"from": "2026-11-05T10:00:00Z", "to": "2026-11-05T10:30:00Z"}, "is only 30 minutes"),
        (
            "manual",
            {"from": "2099-01-01T00:00:00Z", "to": "2099-01-02T00:00:00Z"},
            "param 'from' (2099-01-01T00:00Z) is in the future",
        ),
        (
            "manual",
            {"contact_centers": ["0badc0de"]},
            "param 'contact_centers': 0badc0de is not a contact center of DC2",
        ),
        ("scheduled", {"purge_old": True}, "param 'purge_old' is true on a scheduled run"),
        # to=2036 must be refused (3,644 windows per pair, after a purge with purge_old).
        (
            "manual",
            {"from": "2026-11-01T00:00:00Z", "to": "2036-11-01T00:00:00Z", "purge_old": True},
            "param 'to' (2036-11-01T00:00Z) is in the future",
        ),
        # ... and this was an OverflowError, retried twice.
        (
            "manual",
            {"from": "0001-01-01T00:30+01:00", "to": "2026-11-02T00:00:00Z"},
            "param 'from': '0001-01-01T00:30+01:00' cannot be represented in UTC",
        ),
        # The form's pattern lets a trailing newline through (jsonschema uses re.search); plan does not.
        (
            "manual",
            {"contact_centers": [f"{CC_A}\n"]},
            "param 'contact_centers' must be a list of contact center IDs, each a dashed UUID",
        ),
        (
            "backfill",
            {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"},
            "params 'from'/'to' are set on a backfill run",
        ),
    ],
)
def test_bad_params_fail_the_plan_task_with_the_param_and_the_fix(
    gir: Any,
    load_dag: Any,
    *,
    as_run_type: Callable[[str], None],
    task_output: Callable[[], str],
    run_type: str,
    conf: dict[str, Any],
    message: str,
) -> None:
    as_run_type(run_type)
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=utc(2026, 11, 20), run_conf=conf)
    assert dag_run.state == "failed"
    assert str(dag_run.run_type) in (run_type, f"DagRunType.{run_type.upper()}")
    plan = task_instances(dag_run)[("plan", -1)]
    assert (plan.state, plan.try_number) == ("failed", 1)  # AirflowFailException: no retry
    assert re.search(r"AirflowFailException: .*" + re.escape(message), task_output())
    assert gir.requests("DC2") == []


# --- long ranges -------------------------------------------------------------------------------------


def test_a_400_day_range_for_3_contact_centers_and_both_kinds_completes(
    gir_factory: Any, load_dag: Any
) -> None:
    """2,400 windows in 6 mapped tasks (one per contact center and kind), far below max_map_length."""
    three = [CC_A, CC_B, "3b1d7f2e-8c4a-4e9f-a6b2-5d0c9e7f1a34"]
    gir = gir_factory(topology=topology_with(lambda dcs: dcs["DC2"]["rws"].update(contact_centers=three)))
    conf = {"from": "2025-10-01T00:00:00Z", "to": "2026-11-05T00:00:00Z"}  # 400 days
    dag_run = run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=conf)
    assert dag_run.state == "success"
    sends = {
        ti.rendered_map_index: ti.state for (task, _), ti in task_instances(dag_run).items() if task == "send"
    }
    assert sends == {f"{cc} {kind}": "success" for cc in three for kind in KINDS}
    posts = force_index_posts(gir, "DC2")
    assert len(posts) == 3 * 2 * 400
    assert all(p["http_status"] == 200 and p["to"] - p["from"] == 24 * HOUR_MS for p in posts)
    every_hour = hours(utc(2025, 10, 1), utc(2026, 11, 5))
    assert len(every_hour) == 400 * 24
    assert gir.indexed("DC2") == {cc: {kind: every_hour for kind in KINDS} for cc in three}


# --- the CLI an operator uses ------------------------------------------------------------------------


def test_airflow_dags_test_cli_sends_the_interval_ending_at_the_logical_date(gir: Any, load_dag: Any) -> None:
    """`airflow dags test gir_es_reindex_dc2 2026-11-20` in the same AIRFLOW_HOME, DB and connections."""
    load_dag("gir_es_reindex_dc2")  # the DB is migrated and the DAG parses
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", "gir_es_reindex_dc2", "2026-11-20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    start, end = to_ms(utc(2026, 11, 18, 1)), to_ms(utc(2026, 11, 19, 1))
    assert windows_of(force_index_posts(gir, "DC2")) == Counter(
        {(cc, kind, start, end, False): 1 for cc in (CC_A, CC_B) for kind in KINDS}
    )
