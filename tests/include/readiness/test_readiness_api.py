"""The readiness page's HTTP API in Airflow's API app, on data made by real DAG runs against the simulator.

The plugin loads from ``plugins/`` (the test harness points ``[core] plugins_folder`` there); the routes are
called through Airflow's API app (``create_app(apps="core")``) exactly as the browser and Prometheus
call them. The keystore check, the backup shipping, the re-index and the failover really run
(``dag.test()``) against the simulated DCs; nothing in the metadata database is written by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from include.gir_ops.readiness.spec import URL_PREFIX
from include.gir_ops.readiness.status import coverage_window
from include.gir_ops.shared import format_utc as _utc
from include.gir_ops.topology import load_topology
from tests.conftest import DEFAULT_TOPOLOGY, SimulatedGir
from tests.include.readiness.readiness_support import (
    Dags,
    bearer,
    clean_project_metadata,
    now_utc,
    readiness_app,
)

# The re-index and failover DAGs start with check_pools, which asks the in-process REST API for pools.
pytestmark = pytest.mark.usefixtures("airflow_api")

STATUS = f"{URL_PREFIX}/api/status"
METRICS = f"{URL_PREFIX}/metrics"
PAGE = f"{URL_PREFIX}/"
# DC2's contact centers in the example topology the simulator serves.
CC_A, CC_B = load_topology(DEFAULT_TOPOLOGY).site("DC2").rws.contact_centers[:2]


@pytest.fixture
def sim(gir_factory: Callable[..., SimulatedGir], tmp_path: Path) -> SimulatedGir:
    """The default three DCs; shipping polls fast and trusts the ready marker; the failover's approval
    times out in a minute."""
    gir = gir_factory(
        {
            # With SpeechMiner's completion marker a finished backup ships at once (without it, only
            # after quiet_minutes of no change).
            "shipping": {"poll_seconds": 0.2, "ready_marker": "_BACKUP_COMPLETE"},
            "failover": {
                "approvers": [{"id": "approver", "name": "On-call approver"}],
                "response_timeout_minutes": 1,
                "dr_monitoring_delay_seconds": 1,
                "verify_margin_seconds": 2,
                "audit_log": f"file://{tmp_path}/audit/failover",
            },
        },
        dr_monitoring_delay_seconds=0.5,
    )
    clean_project_metadata()
    return gir


@pytest.fixture
def api(sim: SimulatedGir, airflow_db: Path) -> Iterator[Any]:
    """Airflow's API app with the plugin mounted; the RWS probe cache emptied (it outlives one test)."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    app = create_app(apps="core")
    readiness_app(app).state.probes.clear()
    with TestClient(app) as client:
        yield client


@pytest.fixture
def dags(sim: SimulatedGir) -> Dags:
    return Dags(sim)


def status(api: Any) -> dict[str, Any]:
    response = api.get(STATUS, headers=bearer())
    assert response.status_code == 200, response.text
    return response.json()


def dc(state: dict[str, Any], site: str) -> dict[str, Any]:
    return next(d for d in state["data_centers"] if d["site"] == site)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text, by metric name and exact labels."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if found == labels:
            return float(match.group(2))
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def full_coverage(dags: Dags, site: str) -> tuple[Any, Any]:
    start, end = coverage_window(dags.gir.topology.site(site), now_utc())
    return dags.reindex(site, start, end), (start, end)


# --- authentication: no valid session or token, no data ---------------------------------------------------


def test_without_a_valid_token_or_session_nothing_is_served(api: Any, dags: Dags) -> None:
    assert str(dags.keystore_check().state) == "success"  # there is data to leak
    for path in (PAGE, STATUS, METRICS, f"{URL_PREFIX}/reindex?site=DC2"):
        anonymous = api.get(path)
        assert anonymous.status_code == 401, (path, anonymous.status_code)
        assert "rcs-dc2-a" not in anonymous.text and "DC2" not in anonymous.text
        forged = api.get(path, headers={"Authorization": "Bearer not-a-jwt"})
        assert forged.status_code == 403, (path, forged.status_code)
        assert "rcs-dc2-a" not in forged.text
        api.cookies.set("_token", "expired-or-forged")
        assert api.get(path).status_code == 403
        api.cookies.clear()
    # The UI's own session cookie (what the browser sends inside Airflow's page) is accepted.
    token = bearer()["Authorization"].removeprefix("Bearer ")
    api.cookies.set("_token", token)
    page = api.get(PAGE)
    api.cookies.clear()
    assert page.status_code == 200
    assert "rcs-dc2-a" in page.text


# --- green: every signal from real runs ------------------------------------------------------------------


def test_green_after_real_runs_everything_is_shown_and_dc2_is_ready(
    api: Any, dags: Dags, sim: SimulatedGir
) -> None:
    keystore_run = dags.keystore_check()
    backup_run = dags.ship_backup()
    reindex_run, _ = full_coverage(dags, "DC2")
    dc3_run, _ = full_coverage(dags, "DC3")
    for run in (keystore_run, backup_run, reindex_run, dc3_run):
        assert str(run.state) == "success", run.dag_id

    state = status(api)
    assert state["verdict"] == {"ready": True, "text": "DC2 ready to take over", "reasons": []}
    assert (state["primary_site"], state["standby_site"]) == ("DC1", "DC2")

    # RWS, live: every DC answers and reports the primary as the eServices site.
    for site in ("DC1", "DC2", "DC3"):
        rws = dc(state, site)["rws"]
        assert rws["reachable"] is True and rws["eservices_site"] == "DC1", (site, rws)
    assert state["rws"]["current_site"] == "DC1"

    # Keystore: when, overall state, every instance per DC, a link to the run that reported it.
    keystore = state["keystore"]
    assert keystore["state"] == "ok" and keystore["ok"] is True
    assert keystore["run_id"] == keystore_run.run_id
    assert keystore["run_url"] == f"/dags/gir_rcs_keystore_check/runs/{keystore_run.run_id}".replace(
        "+", "%2B"
    ).replace(":", "%3A")
    assert dc(state, "DC1")["keystore"]["instances"] == {"rcs-dc1-a": "match", "rcs-dc1-b": "match"}
    assert dc(state, "DC2")["keystore"]["instances"] == {"rcs-dc2-a": "match"}
    assert keystore["age_hours"] < 0.1

    # Backup: the newest verified backup at DC2, its age against max_age_hours, a link.
    backup = dc(state, "DC2")["backup"]
    assert backup["state"] == "ok" and backup["applies"] is True
    assert backup["backup_name"] == f"index-{now_utc().date().isoformat()}"
    assert backup["age_hours"] < 0.1 and backup["max_age_hours"] == 26
    assert backup_run.run_id.replace("+", "%2B").replace(":", "%3A") in backup["run_url"]
    assert dc(state, "DC1")["backup"]["applies"] is False

    # Re-index: 30 days of whole hours per contact center and kind, nothing missing.
    reindex = dc(state, "DC2")["reindex"]
    assert reindex["expected_hours"] == reindex["covered_hours"] == 30 * 24 * 4
    assert {(p["contact_center_id"], p["kind"]) for p in reindex["pairs"]} == {
        (cc, kind) for cc in (CC_A, CC_B) for kind in ("recordings", "screen-recordings")
    }
    assert all(p["missing"] == [] and p["ratio"] == 1 for p in reindex["pairs"])
    # DC3 discovers its contact centers: the ones its runs reported are the ones expected.
    dc3 = dc(state, "DC3")["reindex"]
    assert dc3["ratio"] == 1 and len(dc3["pairs"]) == 3
    assert dc(state, "DC1")["reindex"] == {"enabled": False}

    # Failover: nothing waiting, nothing yet.
    assert state["failover"]["approvals_waiting"] == [] and state["failover"]["last"] is None

    # The same in Prometheus text.
    text = api.get(METRICS, headers=bearer()).text
    assert metric(text, "gir_readiness_ready", standby_site="DC2") == 1
    assert metric(text, "gir_readiness_rws_up", site="DC2") == 1
    assert metric(text, "gir_readiness_eservices_site", site="DC2", eservices_site="DC1") == 1
    assert metric(text, "gir_readiness_keystore_ok") == 1
    assert (
        metric(text, "gir_readiness_keystore_instance_ok", site="DC2", instance="rcs-dc2-a", state="match")
        == 1
    )
    assert metric(text, "gir_readiness_backup_age_hours", site="DC2") < 0.1
    assert metric(text, "gir_readiness_backup_max_age_hours", site="DC2") == 26
    assert metric(text, "gir_readiness_reindex_coverage_ratio", site="DC2") == 1
    assert (
        metric(
            text,
            "gir_readiness_reindex_pair_coverage_ratio",
            site="DC2",
            contact_center_id=CC_A,
            kind="recordings",
        )
        == 1
    )

    # And on the page.
    page = api.get(PAGE, headers=bearer()).text
    assert "DC2 ready to take over" in page
    assert keystore_run.run_id in page or "rcs-dc2-a" in page

    # Cached: a second read within 30 s does not ask RWS again.
    before = len(sim.requests("DC2"))
    again = status(api)
    assert len(sim.requests("DC2")) == before
    assert dc(again, "DC2")["rws"]["cached"] is True


# --- every reason for "not ready" -----------------------------------------------------------------------


def test_nothing_has_run_yet_says_why_for_each_signal(api: Any, sim: SimulatedGir) -> None:
    state = status(api)
    reasons = state["verdict"]["reasons"]
    assert state["verdict"]["ready"] is False
    assert state["verdict"]["text"].startswith("DC2 not ready: ")
    assert "no RCS keystore check has reported yet (gir_rcs_keystore_check)" in reasons
    assert "no verified SpeechMiner backup has been shipped to DC2 yet" in reasons
    assert any(r.startswith("Elasticsearch index at DC2 misses 2880 h of the last 30 days") for r in reasons)
    assert len(reasons) == 3, reasons


def test_each_reason_for_not_ready_appears(api: Any, dags: Dags, sim: SimulatedGir) -> None:
    # The keystore of DC2's RCS drifted; the check reports it (red).
    keystore_run = dags.keystore_check(drift=("rcs-dc2-a",))
    assert str(keystore_run.state) == "failed"  # enforce_replication fails the run; the event is out
    # A backup is shipped; the re-index leaves the last day out for every pair.
    assert str(dags.ship_backup().state) == "success"
    start, end = coverage_window(sim.topology.site("DC2"), now_utc())
    gap_start = end - timedelta(hours=24)
    assert str(dags.reindex("DC2", start, gap_start).state) == "success"
    # DC2's RWS stops answering (every request dropped).
    sim.fault("DC2", mode="drop", count=1000)

    state = status(api)
    reasons = state["verdict"]["reasons"]
    assert state["verdict"]["ready"] is False
    assert state["verdict"]["text"] == "DC2 not ready: " + "; ".join(reasons)
    by_topic = {
        "rws": [r for r in reasons if r.startswith("RWS DC2 does not answer")],
        "keystore": [r for r in reasons if r.startswith("RCS keystores not replicated (rcs-dc2-a ")],
        "reindex": [
            r
            for r in reasons
            if r.startswith("Elasticsearch index at DC2 misses 96 h of the last 30 days (4 of 4 ")
        ],
    }
    assert all(len(found) == 1 for found in by_topic.values()), (by_topic, reasons)
    assert len(reasons) == 3, reasons
    assert dc(state, "DC2")["rws"]["reachable"] is False
    assert dc(state, "DC2")["keystore"]["instances"]["rcs-dc2-a"] not in ("match", "ok")
    assert state["keystore"]["state"] == "failed"

    # The missing range of each pair, with a link that opens a re-index of exactly that range.
    pairs = dc(state, "DC2")["reindex"]["pairs"]
    for pair in pairs:
        assert pair["covered_hours"] == 30 * 24 - 24
        assert [(g["from"], g["to"], g["hours"]) for g in pair["missing"]] == [
            (_utc(gap_start), _utc(end), 24)
        ]
    text = api.get(METRICS, headers=bearer()).text
    assert metric(text, "gir_readiness_ready", standby_site="DC2") == 0
    assert metric(text, "gir_readiness_rws_up", site="DC2") == 0
    assert metric(text, "gir_readiness_keystore_ok") == 0
    assert metric(text, "gir_readiness_reindex_coverage_ratio", site="DC2") == pytest.approx(696 / 720)

    # The same records read 30 h later: the backup is older than max_age_hours (nothing shipped since).
    later = judged_later(sim, hours=30)
    assert any(
        re.fullmatch(r"SpeechMiner backup at DC2 is 30\.\d+ h old \(limit 26 h\)", r) for r in later
    ), later


def judged_later(sim: SimulatedGir, *, hours: float) -> list[str]:
    """The reasons the metadata the runs left would give ``hours`` from now (RWS answering)."""
    from airflow.utils.session import create_session

    from include.gir_ops.readiness.probe import RwsProbe
    from include.gir_ops.readiness.status import collect, judge

    topology = sim.topology
    later = now_utc() + timedelta(hours=hours)
    with create_session() as session:
        inputs = collect(session, topology, now_utc())
    answering = {
        site: RwsProbe(site, True, topology.primary_site, ("env",), None, later) for site in topology.sites
    }
    return judge(topology, inputs, answering, now=later)["verdict"]["reasons"]


def test_a_keystore_check_that_stopped_running_is_stale(api: Any, dags: Dags, sim: SimulatedGir) -> None:
    assert str(dags.keystore_check().state) == "success"
    assert not [r for r in judged_later(sim, hours=1) if "keystore" in r]
    stale = [r for r in judged_later(sim, hours=3) if "keystore" in r]
    assert len(stale) == 1 and re.fullmatch(
        r"RCS keystore check is stale: last 3\.\d h ago, expected at least every 2 h", stale[0]
    ), stale


def test_a_gap_link_opens_a_reindex_of_exactly_that_range(api: Any, dags: Dags, sim: SimulatedGir) -> None:
    start, end = coverage_window(sim.topology.site("DC2"), now_utc())
    gap = (end - timedelta(hours=30), end - timedelta(hours=6))
    assert str(dags.reindex("DC2", start, gap[0]).state) == "success"
    assert str(dags.reindex("DC2", gap[1], end).state) == "success"
    pair = next(
        p
        for p in dc(status(api), "DC2")["reindex"]["pairs"]
        if (p["contact_center_id"], p["kind"]) == (CC_B, "screen-recordings")
    )
    assert [(g["from"], g["to"], g["hours"]) for g in pair["missing"]] == [(_utc(gap[0]), _utc(gap[1]), 24)]
    link = urlsplit(pair["missing"][0]["trigger_url"])
    assert link.path == f"{URL_PREFIX}/reindex"
    assert parse_qs(link.query) == {
        "site": ["DC2"],
        "contact_center_id": [CC_B],
        "kind": ["screen-recordings"],
        "from": [_utc(gap[0])],
        "to": [_utc(gap[1])],
    }
    # The link's page shows the run conf and POSTs it to the public REST API in the user's session.
    page = api.get(pair["missing"][0]["trigger_url"], headers=bearer())
    assert page.status_code == 200, page.text
    conf = {
        "from": _utc(gap[0]),
        "to": _utc(gap[1]),
        "contact_centers": [CC_B],
        "kinds": ["screen-recordings"],
        "purge_old": False,
    }
    assert "/api/v2/dags/gir_es_reindex_dc2/dagRuns" in page.text
    script_conf = re.search(r"const conf = (.*);", page.text)
    assert script_conf is not None and json.loads(script_conf.group(1)) == conf
    # A bad link is refused with the field named, before anything is offered.
    refused = api.get(
        f"{URL_PREFIX}/reindex?site=DC1&contact_center_id={CC_B}&kind=recordings&from=x&to=y",
        headers=bearer(),
    )
    assert refused.status_code == 400 and "DC1" in refused.json()["detail"]
    # That conf, run, re-indexes exactly the gap of exactly that pair: the pair is complete, the others not.
    posts_before = len(sim.posts("DC2", "/contact-centers/"))
    gap_run = dags.run("gir_es_reindex_dc2", logical_date=gap[1] + timedelta(minutes=1), run_conf=conf)
    assert str(gap_run.state) == "success"
    sent = sim.posts("DC2", "/contact-centers/")[posts_before:]
    assert {r["path"].rsplit("/", 2)[1] for r in sent} == {CC_B}
    assert {r["path"].rsplit("/", 1)[1] for r in sent} == {"screen-recordings"}
    after = {(p["contact_center_id"], p["kind"]): p for p in dc(status(api), "DC2")["reindex"]["pairs"]}
    assert after[(CC_B, "screen-recordings")]["missing"] == []
    assert after[(CC_A, "recordings")]["covered_hours"] == 30 * 24 - 24


def test_a_waiting_failover_approval_and_the_last_failover(api: Any, sim: SimulatedGir, dags: Dags) -> None:
    from tests.dags.test_failover_dag import FailoverRun

    dag = dags.bag.dags["gir_eservices_failover"]
    seen: dict[str, Any] = {}

    def human(run: FailoverRun) -> None:
        run_id = run.wait_for_approval_request()
        seen["status"] = status(api)
        seen["page"] = api.get(PAGE, headers=bearer()).text
        seen["metrics"] = api.get(METRICS, headers=bearer()).text
        seen["run_id"] = run_id
        answer = run.respond(api, "approver", "Reject")
        assert answer.status_code == 200, answer.text

    conf = {"target_site": "DC2", "reason": "DC1 Interaction Server down since 02:10"}
    FailoverRun(dag, conf, triggered_by="oncall").run(human)

    waiting = seen["status"]
    failover = waiting["failover"]
    assert [(a["dag_id"], a["run_id"], a["task_id"]) for a in failover["approvals_waiting"]] == [
        ("gir_eservices_failover", seen["run_id"], "approve_failover")
    ]
    assert "DC2" in failover["approvals_waiting"][0]["subject"]
    assert failover["required_actions_url"] == "/required_actions?response_received=false"
    assert 'href="/required_actions?response_received=false"' in seen["page"]
    assert [r["run_id"] for r in failover["active"]] == [seen["run_id"]]
    assert (
        f"a failover is already in progress (run {seen['run_id']}, to DC2)" in waiting["verdict"]["reasons"]
    )
    assert metric(seen["metrics"], "gir_readiness_failover_approvals_waiting") == 1

    last = status(api)["failover"]
    assert last["approvals_waiting"] == [] and last["active"] == []
    assert last["last"]["run_id"] == seen["run_id"]
    assert (last["last"]["outcome"], last["last"]["state"]) == ("rejected", "failed")
    assert (last["last"]["requested_by"], last["last"]["approved_by"], last["last"]["answer"]) == (
        "oncall",
        "approver",
        "Reject",
    )
    assert last["last"]["target_site"] == "DC2" and last["last"]["ended_at"]
