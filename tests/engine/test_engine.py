"""Engine tests: the DAGs on a real scheduler, dag-processor, triggerer, API server and Celery worker.

Each test drives Airflow only through its REST API, as an operator would, and asserts on what the GIR
simulator received (``/_sim/...``) and what landed on disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from engine_stack import EngineStack, hours, parse_time, wait_for

pytestmark = pytest.mark.engine

REINDEX_DAG = "gir_es_reindex_dc2"
KINDS_DC2 = ("recordings", "screen-recordings")


def sim_requests(engine: EngineStack, site: str) -> list[dict[str, Any]]:
    received = requests.get(f"{engine.sim_url(site)}/_sim/requests", timeout=10).json()
    return [r for r in received if r["path"].startswith("/api/")]


def sim_indexed(engine: EngineStack, site: str) -> dict[str, dict[str, dict[int, int]]]:
    raw = requests.get(f"{engine.sim_url(site)}/_sim/indexed", timeout=10).json()
    return {
        cc: {kind: {int(h): n for h, n in hrs.items()} for kind, hrs in kinds.items()}
        for cc, kinds in raw.items()
    }


def force_index_posts(engine: EngineStack, site: str) -> list[dict[str, Any]]:
    return [
        r for r in sim_requests(engine, site) if r["method"] == "POST" and "/contact-centers/" in r["path"]
    ]


def test_keystore_check_runs_on_the_celery_worker(engine: EngineStack) -> None:
    admin = engine.api("admin")
    dag_id = "gir_rcs_keystore_check"
    run = admin.trigger(dag_id)
    admin.unpause(dag_id)
    admin.wait_run(dag_id, run["dag_run_id"], timeout=120)
    # Unpausing may also have started the latest hourly run: let it end, then pause, so no scheduled
    # check runs in the middle of the other tests.
    for other in admin.runs(dag_id):
        admin.wait_run_finished(dag_id, other["dag_run_id"], timeout=120)
    admin.pause(dag_id)
    states = {ti["task_id"]: ti["state"] for ti in admin.task_instances(dag_id, run["dag_run_id"])}
    assert states == {"check_replication": "success", "enforce_replication": "success"}


@pytest.mark.timeout(420)
def test_scheduled_run_and_backfill_reindex_each_hour_once_in_one_dc_only(engine: EngineStack) -> None:
    """Unpausing DC2's DAG lets the scheduler create its scheduled run (catchup off: the latest complete
    interval); then an Airflow backfill over the three days ending with that run's day. The scheduled
    day is not reprocessed (reprocess_behavior none), so every hour of the three days is re-indexed exactly
    once per contact center and kind, and DC1 and DC3 receive no forceIndex at all."""
    admin = engine.api("admin")
    dc2 = next(dc for dc in engine.topology_document["data_centers"] if dc["site"] == "DC2")
    admin.unpause(REINDEX_DAG)
    scheduled = wait_for(
        "the scheduler to create DC2's scheduled re-index run",
        lambda: next((r for r in admin.runs(REINDEX_DAG) if r["run_type"] == "scheduled"), None),
        timeout=90,
    )
    admin.wait_run(REINDEX_DAG, scheduled["dag_run_id"], timeout=180)
    start, end = parse_time(scheduled["data_interval_start"]), parse_time(scheduled["data_interval_end"])
    # Days in DC2's own time zone (a DST day has 23 or 25 hours): the two days before the scheduled one.
    local_start = start.astimezone(ZoneInfo(dc2["timezone"]))
    first, second = local_start - timedelta(days=2), local_start - timedelta(days=1)

    backfill = admin.create_backfill(REINDEX_DAG, first, start)
    wait_for(
        "the backfill to complete",
        lambda: admin.backfill(backfill["id"])["completed_at"],
        timeout=240,
        interval=2,
        on_timeout=lambda: "\n".join(
            admin.describe_run(REINDEX_DAG, r["dag_run_id"]) for r in admin.runs(REINDEX_DAG)
        ),
    )
    runs = admin.runs(REINDEX_DAG)
    for run in runs:
        admin.wait_run(REINDEX_DAG, run["dag_run_id"], timeout=120)
    backfill_runs = [r for r in runs if r["run_type"] == "backfill"]
    assert sorted(parse_time(r["data_interval_start"]) for r in backfill_runs) == [first, second], (
        "the backfill must create the two missing days and skip the day the scheduled run covered"
    )
    # Only if the clock passed DC2's 02:00 (Paris) tick during the test does another scheduled run exist;
    # it then covers the next day, which is expected exactly once as well.
    later = [r for r in runs if r["run_type"] == "scheduled" and r["dag_run_id"] != scheduled["dag_run_id"]]
    assert all(parse_time(r["data_interval_start"]) >= end for r in later), later
    assert len(runs) == 3 + len(later), [(r["run_type"], r["data_interval_start"]) for r in runs]
    intervals = sorted(
        (parse_time(r["data_interval_start"]), parse_time(r["data_interval_end"])) for r in runs
    )
    assert all(a[1] == b[0] for a, b in itertools.pairwise(intervals)), intervals

    expected = dict.fromkeys(hours(first, intervals[-1][1]), 1)
    assert len(expected) >= 71, len(expected)  # three days, one of them possibly a DST day
    indexed = sim_indexed(engine, "DC2")
    assert set(indexed) == set(dc2["rws"]["contact_centers"]), indexed.keys()
    for contact_center_id in dc2["rws"]["contact_centers"]:
        assert set(indexed[contact_center_id]) == set(KINDS_DC2)
        for kind in KINDS_DC2:
            assert indexed[contact_center_id][kind] == expected, (contact_center_id, kind)
    posts = force_index_posts(engine, "DC2")
    # Per day: 2 contact centers x 2 kinds, one window of at most 24h (two on a 25h DST day), every POST
    # accepted the first time.
    window_seconds = dc2["reindex"]["max_window_hours"] * 3600
    windows = sum(-(-int((b - a).total_seconds()) // window_seconds) for a, b in intervals)
    assert len(posts) == 4 * windows, [(p["path"], p.get("http_status")) for p in posts]
    assert all(p.get("http_status") == 200 and p.get("status_code") == 0 for p in posts), posts
    for site in ("DC1", "DC3"):
        assert sim_indexed(engine, site) == {}, site
        assert force_index_posts(engine, site) == [], site


@pytest.mark.timeout(420)
def test_the_unscheduled_dc_dag_is_never_scheduled_but_a_backfill_reindexes_its_cron_periods(
    engine: EngineStack,
) -> None:
    """DC1 (reindex.enabled false): its DAG, unpaused, gets no run from the scheduler; a backfill through
    ``POST /api/v2/backfills`` creates one run per period of DC1's reindex.schedule (0 2 * * * UTC), and DC1's
    RWS receives exactly those windows. The API says what the UI's Trigger dialog needs to offer Backfill."""
    from datetime import UTC, datetime

    admin = engine.api("admin")
    dc1 = next(dc for dc in engine.topology_document["data_centers"] if dc["site"] == "DC1")
    dag_id = "gir_es_reindex_dc1"
    details = admin.get(f"/dags/{dag_id}/details")
    assert details["is_backfillable"] is True  # the Trigger dialog enables "Backfill" on this
    assert details["timetable_summary"] == "Backfill and manual only (0 2 * * *)"
    assert details["next_dagrun_run_after"] is None

    admin.unpause(dag_id)
    # A CronDataIntervalTimetable DAG gets its latest interval as soon as it is unpaused (DC2's scheduled
    # run above appears within seconds, the scheduler looping every ~2 s); this one must get nothing.
    time.sleep(30)
    assert admin.runs(dag_id) == []
    assert admin.get(f"/dags/{dag_id}")["next_dagrun_run_after"] is None

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    backfill = admin.create_backfill(dag_id, today - timedelta(days=3), today - timedelta(days=1))
    wait_for(
        "the backfill of DC1 to complete",
        lambda: admin.backfill(backfill["id"])["completed_at"],
        timeout=240,
        interval=2,
        on_timeout=lambda: "\n".join(admin.describe_run(dag_id, r["dag_run_id"]) for r in admin.runs(dag_id)),
    )
    runs = admin.runs(dag_id)
    for run in runs:
        admin.wait_run(dag_id, run["dag_run_id"], timeout=120)
    periods = [(today - timedelta(days=d, hours=-2), today - timedelta(days=d - 1, hours=-2)) for d in (3, 2)]
    assert sorted(
        (r["run_type"], parse_time(r["data_interval_start"]), parse_time(r["data_interval_end"]))
        for r in runs
    ) == [("backfill", start, end) for start, end in periods]  # no scheduled run, all along

    # DC1's max_window_hours is 24: one forceIndex per period, contact center and kind, with its window.
    kinds = ("recordings", "screen-recordings") if dc1["rws"]["screen_recording"] else ("recordings",)
    posts = force_index_posts(engine, "DC1")
    received = sorted(
        (p["path"].rsplit("/", 2)[1], p["path"].rsplit("/", 2)[2], p["body"]["from"], p["body"]["to"])
        for p in posts
    )
    expected = sorted(
        (cc, kind, int(start.timestamp() * 1000), int(end.timestamp() * 1000))
        for cc in dc1["rws"]["contact_centers"]
        for kind in kinds
        for start, end in periods
    )
    assert received == expected
    assert all(p.get("http_status") == 200 and p.get("status_code") == 0 for p in posts), posts
    indexed = sim_indexed(engine, "DC1")
    every_hour = dict.fromkeys(hours(periods[0][0], periods[-1][1]), 1)
    assert indexed == {cc: dict.fromkeys(kinds, every_hour) for cc in dc1["rws"]["contact_centers"]}
    assert [r["run_type"] for r in admin.runs(dag_id)] == ["backfill", "backfill"]
    admin.pause(dag_id)


# --- eServices failover: two-person approval through the HITL REST endpoint ---------------------------

FAILOVER_DAG = "gir_eservices_failover"
CATCH_UP_DAG = "gir_es_reindex_dc1"


def confirm_switch(engine: EngineStack, person: Any, run_id: str) -> dict[str, Any]:
    """Answer confirm_switch as a person would over REST: read the checklist, answer every item."""
    person.wait_task_state(FAILOVER_DAG, run_id, "confirm_switch", ["awaiting_input"], timeout=150)
    asked = person.hitl_detail(FAILOVER_DAG, run_id, "confirm_switch")
    answers = {key: "done" for key in asked["params"]}
    if "recording_processing" in answers:
        answers["recording_processing"] = "not applicable"
    answer = person.answer_hitl(FAILOVER_DAG, run_id, "confirm_switch", ["Confirmed"], params_input=answers)
    assert answer["responded_by"]["id"] == "approver"
    return asked


def switch_posts(engine: EngineStack) -> list[dict[str, Any]]:
    return [
        r
        for site in engine.sim_ports
        for r in sim_requests(engine, site)
        if r["method"] == "POST" and r["path"].endswith("/multimedia-switch")
    ]


def sim_environment(engine: EngineStack) -> dict[str, Any]:
    return requests.get(f"{engine.sim_url('DC1')}/_sim/environment", timeout=10).json()


def audit_records(engine: EngineStack, run_id: str) -> list[dict[str, Any]]:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in run_id)
    files = sorted(engine.audit_dir().glob(f"*{safe}*.json"))
    return [json.loads(path.read_text(encoding="utf-8")) for path in files]


@pytest.mark.timeout(1080)
def test_failover_switches_once_when_another_user_approves_and_never_on_self_approval(
    engine: EngineStack,
) -> None:
    admin, approver, oncall = engine.api("admin"), engine.api("approver"), engine.api("oncall")
    assert sim_environment(engine)["current_site"] == "DC1"
    assert switch_posts(engine) == []

    # Run 1: admin asks to fail over to DC2; approver (another person) approves.
    conf = {
        "target_site": "DC2",
        "reason": "engine test: DC1 maintenance",
        "change_ticket": "CHG-1",
        "dry_run": False,
    }
    run = admin.trigger(FAILOVER_DAG, conf)
    run_id = run["dag_run_id"]
    assert run["triggering_user_name"] == "admin"
    admin.wait_task_state(FAILOVER_DAG, run_id, "approve_failover", ["awaiting_input"], timeout=150)
    assert switch_posts(engine) == [], "nothing may be switched before the approval"
    # Someone who may use the DAG but is not an assigned approver is refused by the API.
    refused = oncall.answer_hitl(FAILOVER_DAG, run_id, "approve_failover", ["Approve"], expect=(403,))
    assert "not a respondent" in json.dumps(refused)
    answer = approver.answer_hitl(FAILOVER_DAG, run_id, "approve_failover", ["Approve"])
    assert answer["responded_by"]["id"] == "approver"
    # After the switch a person confirms it and answers the follow-ups, as in the UI's Required Actions.
    confirmed = confirm_switch(engine, approver, run_id)
    assert list(confirmed["params"]) == ["wde_eservices_site", "recording_processing", "switch_back_plan"]
    admin.wait_run(FAILOVER_DAG, run_id, timeout=180)

    posts = switch_posts(engine)
    assert len(posts) == 1, posts
    assert posts[0]["body"] == {"eServicesSite": "DC2"} or posts[0]["body"].get("eServicesSite") == "DC2", (
        posts
    )
    assert posts[0]["http_status"] == 200 and posts[0]["status_code"] == 0, posts
    environment = sim_environment(engine)
    assert environment["current_site"] == "DC2"
    assert [s["eServicesSite"] for s in environment["switches"]] == ["DC2"]
    (audit,) = audit_records(engine, run_id)
    assert audit["outcome"] == "verified", audit["detail"]
    assert audit["triggered_by"] == "admin"
    assert audit["decision"]["chosen"] == "Approve" and audit["decision"]["by"]["id"] == "approver"
    assert audit["confirmation"]["chosen"] == "Confirmed" and audit["confirmation"]["by"]["id"] == "approver"
    assert [(i["key"], i["answer"]) for i in audit["confirmation"]["items"]] == [
        ("wde_eservices_site", "done"),
        ("recording_processing", "not applicable"),
        ("switch_back_plan", "done"),
    ]
    assert audit["catch_up"]["status"] == "not-needed"
    approved_run_id = run_id
    failover_switched_at = parse_time(audit["switch"]["switched_at"])

    # Run 1 again: one approval authorizes one POST. Clearing the switch (and what follows) of the
    # approved run and letting it run again must not send a second POST.
    admin.request(
        "POST",
        f"/dags/{FAILOVER_DAG}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": approved_run_id,
            "task_ids": ["switch_eservices_site"],
            "only_failed": False,
            "include_downstream": True,
        },
    )
    admin.wait_run(FAILOVER_DAG, approved_run_id, state="failed", timeout=180)
    assert len(switch_posts(engine)) == 1, "a cleared switch must never POST again"
    switch = admin.task_instance(FAILOVER_DAG, approved_run_id, "switch_eservices_site")
    assert (switch["state"], switch["try_number"]) == ("failed", 2), switch
    assert "approval was already used" in admin.task_log(
        FAILOVER_DAG, approved_run_id, "switch_eservices_site", 2
    )
    audits = audit_records(engine, approved_run_id)
    assert [a["outcome"] for a in audits] == ["verified", "not-authorized"], [a["detail"] for a in audits]
    assert "approval was already used" in audits[-1]["detail"]

    # Run 2: admin asks to switch back and approves it personally; the API accepts the answer (admin is
    # an assigned approver) but the DAG's two-person rule must refuse to switch.
    conf = {
        "target_site": "DC1",
        "reason": "engine test: switch back",
        "change_ticket": "CHG-2",
        "dry_run": False,
    }
    run = admin.trigger(FAILOVER_DAG, conf)
    run_id = run["dag_run_id"]
    admin.wait_task_state(FAILOVER_DAG, run_id, "approve_failover", ["awaiting_input"], timeout=150)
    answer = admin.answer_hitl(FAILOVER_DAG, run_id, "approve_failover", ["Approve"])
    assert answer["responded_by"]["id"] == "admin"
    admin.wait_run(FAILOVER_DAG, run_id, state="failed", timeout=180)
    states = {ti["task_id"]: ti["state"] for ti in admin.task_instances(FAILOVER_DAG, run_id)}
    assert states["recheck"] == "failed", states
    assert states["switch_eservices_site"] != "success", states
    assert states["audit"] == "success", states
    assert len(switch_posts(engine)) == 1, "the self-approved run must not POST a switch"
    assert sim_environment(engine)["current_site"] == "DC2"
    (audit,) = audit_records(engine, run_id)
    assert audit["outcome"] == "self-approval-refused", audit["detail"]
    assert audit["switch"]["posted"] in (False, None), audit["switch"]

    # Run 3: oncall (role "user": may edit DAG runs, is no approver) triggers a switch back, copies every
    # XCom of the approval task from the approved run 1 into the new run and marks the approval task
    # success through the REST API, without anyone answering. Nothing may be POSTed.
    conf = {"target_site": "DC1", "reason": "engine test: forged approval", "dry_run": False}
    run_id = oncall.trigger(FAILOVER_DAG, conf)["dag_run_id"]
    oncall.wait_task_state(FAILOVER_DAG, run_id, "approve_failover", ["awaiting_input"], timeout=150)
    source = f"/dags/{FAILOVER_DAG}/dagRuns/{approved_run_id}/taskInstances/approve_failover/xcomEntries"
    copied = oncall.get(source, limit=100)["xcom_entries"]
    assert any(entry["key"] == "decision" for entry in copied), copied
    target = f"/dags/{FAILOVER_DAG}/dagRuns/{run_id}/taskInstances/approve_failover/xcomEntries"
    for entry in copied:
        value = oncall.get(f"{source}/{entry['key']}", deserialize=True)["value"]
        oncall.request(
            "POST", target, json={"key": entry["key"], "value": value, "map_index": -1}, expect=(201,)
        )
    assert oncall.xcom(FAILOVER_DAG, run_id, "approve_failover", "decision")["responded_by_user"]["id"] == (
        "approver"
    )
    oncall.request(
        "PATCH",
        f"/dags/{FAILOVER_DAG}/dagRuns/{run_id}/taskInstances/approve_failover",
        json={"new_state": "success"},
    )
    admin.wait_run(FAILOVER_DAG, run_id, state="failed", timeout=180)
    assert len(switch_posts(engine)) == 1, "a forged approval must not POST a switch"
    assert sim_environment(engine)["current_site"] == "DC2"
    states = {ti["task_id"]: ti["state"] for ti in admin.task_instances(FAILOVER_DAG, run_id)}
    assert states["recheck"] == "failed" and states["switch_eservices_site"] != "success", states
    assert admin.hitl_detail(FAILOVER_DAG, run_id, "approve_failover")["response_received"] is False
    (audit,) = audit_records(engine, run_id)
    assert audit["outcome"] == "not-authorized", audit["detail"]
    assert audit["decision"] is None, "the audit must not show the forged XCom as an approval"
    assert audit["switch"]["posted"] in (False, None), audit["switch"]

    # Run 4: the switch back, approved by another person and confirmed: it triggers ONE catch-up re-index
    # of the primary (gir_es_reindex_dc1) for the outage, from run 1's switch to this one, whole hours.
    conf = {
        "target_site": "DC1",
        "reason": "engine test: DC1 Interaction Server restored",
        "scenario": "interaction-server-down",
    }
    run_id = admin.trigger(FAILOVER_DAG, conf)["dag_run_id"]
    admin.wait_task_state(FAILOVER_DAG, run_id, "approve_failover", ["awaiting_input"], timeout=150)
    approver.answer_hitl(FAILOVER_DAG, run_id, "approve_failover", ["Approve"])
    confirm_switch(engine, approver, run_id)
    admin.wait_run(FAILOVER_DAG, run_id, timeout=180)
    assert sim_environment(engine)["current_site"] == "DC1"
    (audit,) = audit_records(engine, run_id)
    assert audit["outcome"] == "verified", audit["detail"]
    catch_up = audit["catch_up"]
    assert catch_up["status"] == "triggered", catch_up
    assert catch_up["dag_id"] == CATCH_UP_DAG and catch_up["outage"]["failover_run_id"] == approved_run_id
    failover_hour = failover_switched_at.replace(minute=0, second=0, microsecond=0)
    switched_back = parse_time(audit["switch"]["switched_at"])
    # From the hour of run 1's switch (an hour earlier when both fall in the running hour: the re-index
    # DAG wants from/to an hour apart) to the switch-back.
    window_start = parse_time(catch_up["from"])
    assert window_start in (failover_hour, failover_hour - timedelta(hours=1))
    assert parse_time(catch_up["window"][0]) == window_start
    assert parse_time(catch_up["to"]) in (switched_back, parse_time(catch_up["window"][1]))
    assert "Catch-up re-index: triggered" in admin.task_log(FAILOVER_DAG, run_id, "outcome", 1)

    # Other tests may have run DC1's re-index DAG (a backfill): count only runs this failover made.
    def catch_up_runs() -> list[dict[str, Any]]:
        return [r for r in admin.runs(CATCH_UP_DAG) if r["dag_run_id"].startswith("gir_failover_catch_up__")]

    (catch_up_run,) = catch_up_runs()
    assert catch_up_run["dag_run_id"] == catch_up["dag_run_id"] and catch_up_run["run_type"] == "manual"
    assert catch_up_run["conf"] == {"from": catch_up["from"], "to": catch_up["to"]}

    # The catch-up task cleared and run again (as a retry would): 409, still exactly one re-index run.
    admin.request(
        "POST",
        f"/dags/{FAILOVER_DAG}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ["catch_up_reindex"],
            "only_failed": False,
            "include_downstream": True,
        },
    )
    wait_for(
        "the cleared catch-up, audit and outcome to run again",
        lambda: (
            len(audit_records(engine, run_id)) == 2
            and admin.run(FAILOVER_DAG, run_id)["state"] in ("success", "failed")
        ),
        timeout=180,
    )
    assert admin.run(FAILOVER_DAG, run_id)["state"] == "success"
    assert audit_records(engine, run_id)[-1]["catch_up"]["status"] == "already-triggered"
    assert [r["dag_run_id"] for r in catch_up_runs()] == [catch_up["dag_run_id"]]

    # The re-index run does what it says: every hour of the outage re-indexed once more in DC1.
    before = sim_indexed(engine, "DC1")
    was_paused = admin.get(f"/dags/{CATCH_UP_DAG}")["is_paused"]
    admin.unpause(CATCH_UP_DAG)
    admin.wait_run(CATCH_UP_DAG, catch_up["dag_run_id"], timeout=180)
    if was_paused:
        admin.pause(CATCH_UP_DAG)
    dc1 = next(dc for dc in engine.topology_document["data_centers"] if dc["site"] == "DC1")
    window = hours(window_start, parse_time(catch_up["window"][1]))
    indexed = sim_indexed(engine, "DC1")
    for contact_center_id in dc1["rws"]["contact_centers"]:
        old = before.get(contact_center_id, {}).get("recordings", {})
        new = indexed[contact_center_id]["recordings"]
        added = {hour: new[hour] - old.get(hour, 0) for hour in new if new[hour] != old.get(hour, 0)}
        assert added == dict.fromkeys(window, 1), (contact_center_id, added)
    assert len(switch_posts(engine)) == 2, "one failover, one switch-back"

    # Leave the simulated deployment as it was for the other tests.
    requests.post(f"{engine.sim_url('DC1')}/_sim/environment", json={"current_site": "DC1"}, timeout=10)


# --- SpeechMiner backup shipping ----------------------------------------------------------------------

SHIP_DAG = "gir_speechminer_backup_ship"
READY_MARKER = "_BACKUP_COMPLETE"
MANIFEST = "MANIFEST.json"


def tree_digest(folder: Path) -> dict[str, tuple[int, str]]:
    """Relative path -> (size, sha256) of every file under ``folder``."""
    result = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(8 * 1024 * 1024):
                digest.update(chunk)
        result[path.relative_to(folder).as_posix()] = (path.stat().st_size, digest.hexdigest())
    return result


def assert_published_backup(engine: EngineStack, backup_name: str) -> dict[str, Any]:
    """The replica holds ``backup_name`` complete: manifest valid, every file equal to the source."""
    from include.gir_ops.backup.manifest import read_manifest
    from include.gir_ops.backup.tree import storage_path

    published = engine.replica_root() / backup_name
    assert published.is_dir(), f"{published} was not published"
    manifest = read_manifest(storage_path(f"file://{published}"))  # validates manifest_sha256
    assert manifest is not None, f"{published} has no {MANIFEST}"
    source = tree_digest(engine.source_backup_root() / backup_name)
    copy = tree_digest(published)
    assert copy.pop(MANIFEST)
    assert copy == source, "the published copy differs from the source backup"
    assert {e.path: (e.size, e.sha256) for e in manifest.entries} == source
    return manifest.document


def replica_folders(engine: EngineStack) -> list[str]:
    return sorted(p.name for p in engine.replica_root().iterdir()) if engine.replica_root().exists() else []


def newest_backup_day(engine: EngineStack) -> date:
    names = sorted(p.name for p in engine.source_backup_root().iterdir() if p.name.startswith("index-"))
    return date.fromisoformat(names[-1].removeprefix("index-"))


@pytest.mark.timeout(300)
def test_shipping_waits_deferred_for_an_incomplete_backup_then_ships_it(engine: EngineStack) -> None:
    from include.gir_sim import demo_data

    admin = engine.api("admin")
    day = newest_backup_day(engine) + timedelta(days=1)
    folder = demo_data.write_incomplete_backup(engine.source_backup_root(), day, ready_marker=READY_MARKER)
    assert not (folder / READY_MARKER).exists()

    run = admin.trigger(SHIP_DAG)
    run_id = run["dag_run_id"]
    admin.unpause(SHIP_DAG)
    ti = admin.wait_task_state(SHIP_DAG, run_id, "wait_for_backup", ["deferred"], timeout=150)
    assert ti["trigger"]["classpath"] == "include.gir_ops.backup.triggers.BackupReadyTrigger", ti["trigger"]

    # Deferred means waiting in the triggerer: once the first check's process has exited, the Celery
    # worker holds no slot for this run, and none while the wait goes on.
    def slots_of_this_run() -> list[dict[str, Any]]:
        return [t for t in engine.active_task_instances() if t.get("run_id") == run_id or "unparsed" in t]

    wait_for("the worker to release the deferred task's slot", lambda: slots_of_this_run() == [], timeout=30)
    for _ in range(3):
        time.sleep(2)
        assert slots_of_this_run() == []
        assert admin.task_instance(SHIP_DAG, run_id, "wait_for_backup")["state"] == "deferred"
    assert replica_folders(engine) == [], "nothing may be shipped while the backup is incomplete"

    demo_data.generate_index_backups(
        engine.source_backup_root(), days=1, end_day=day, ready_marker=READY_MARKER
    )
    admin.wait_run(SHIP_DAG, run_id, timeout=180)
    ready = admin.xcom(SHIP_DAG, run_id, "wait_for_backup")
    assert ready["backup_name"] == folder.name and ready["deferred"] is True, ready
    assert_published_backup(engine, folder.name)
    assert replica_folders(engine) == [folder.name]


@pytest.mark.timeout(420)
def test_worker_killed_mid_copy_then_retry_publishes_one_complete_backup(engine: EngineStack) -> None:
    """A 1 GiB backup; the Celery worker (and the task runner under it) is SIGKILLed while the copy task
    streams into ``<name>.partial``. The scheduler notices the missing heartbeats
    ([scheduler] task_instance_heartbeat_timeout = 30 s), retries the task on the restarted worker, and
    the retry resumes from the staged bytes. In the end the replica holds one complete, verified backup and
    no ``.partial`` or half-published folder."""
    from include.gir_sim import demo_data

    admin = engine.api("admin")
    admin.unpause(SHIP_DAG)
    day = newest_backup_day(engine) + timedelta(days=1)
    total = 1024 * 1024 * 1024
    (folder,) = demo_data.generate_index_backups(
        engine.source_backup_root(),
        days=1,
        end_day=day,
        total_bytes_per_backup=total,
        ready_marker=READY_MARKER,
    )
    before = replica_folders(engine)
    staging = engine.replica_root() / f"{folder.name}.partial"

    run = admin.trigger(SHIP_DAG)
    run_id = run["dag_run_id"]
    admin.wait_task_state(SHIP_DAG, run_id, "copy", ["running"], timeout=150, interval=0.2)

    def staged_bytes() -> int:
        return sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()) if staging.exists() else 0

    deadline = time.monotonic() + 60
    while staged_bytes() < total * 0.15:
        assert time.monotonic() < deadline, f"the copy never got going: {staged_bytes()} bytes staged"
        time.sleep(0.05)
    killed = engine.kill_worker()
    staged_at_kill = staged_bytes()
    assert 0 < staged_at_kill < total, "the kill must land in the middle of the copy"
    assert killed, "no worker process was killed"
    assert admin.task_instance(SHIP_DAG, run_id, "copy")["state"] == "running"
    time.sleep(2)
    assert staged_bytes() == staged_at_kill, "something is still copying after the worker was killed"

    engine.start_worker()
    engine.wait_worker_ready(timeout=90)
    admin.wait_run(SHIP_DAG, run_id, timeout=240)

    copy_ti = admin.task_instance(SHIP_DAG, run_id, "copy")
    assert copy_ti["try_number"] >= 2, "the copy must have been retried after the worker died"
    copied = admin.xcom(SHIP_DAG, run_id, "copy")
    assert copied["files_kept"] or copied["files_resumed"], "the retry must resume from the staged bytes"
    document = assert_published_backup(engine, folder.name)
    assert document["bytes"] == total
    assert replica_folders(engine) == sorted([*before, folder.name]), "one new backup, nothing else"
    assert not any(name.endswith(".partial") for name in replica_folders(engine))
