"""gir_speechminer_backup_ship end to end with dag.test(), over backups written by the simulator's demo data.

The wait really defers: dag.test() runs BackupReadyTrigger inline, and the "still being written" cases
only finish the backup after the trigger has polled it at least once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.gir_ops.backup import readiness, spec, tasks
from include.gir_ops.backup.route import ShippingRoute
from include.gir_sim.demo_data import (
    DEFAULT_READY_MARKER,
    EMPTY_FILE,
    NON_ASCII_FILE,
    backup_folder_name,
    generate_index_backups,
    local_path,
    write_incomplete_backup,
)
from tests.conftest import REPO_ROOT, default_topology_dict, parse_dags

DAG_ID = spec.DAG_ID
SMALL = 256 * 1024  # bytes per generated backup: big enough for several files, fast to copy
TODAY = datetime.now(UTC).date()


@pytest.fixture(autouse=True)
def _logs_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


class Shipping:
    """The simulated route: where DC1's SpeechMiner writes backups and where DC2's replica lives."""

    def __init__(self, gir: Any, load_dag: Callable[[str], Any]) -> None:
        self.gir = gir
        topology = gir.topology
        self.route = ShippingRoute.from_topology(topology)
        self.source = local_path(self.route.source_root)
        self.destination = local_path(self.route.destination)
        self.marker = topology.shipping.ready_marker
        self.dag = load_dag(DAG_ID)
        for task in self.dag.tasks:  # retries stay on, but a test must never sit out a 5-minute delay
            task.retry_delay = timedelta(0)

    def generate(self, *, days: int = 1, end_day: date = TODAY) -> list[Path]:
        return generate_index_backups(
            self.source,
            days=days,
            end_day=end_day,
            total_bytes_per_backup=SMALL,
            files_per_backup=8,
            ready_marker=self.marker,
        )

    def run(self) -> Any:
        return self.dag.test()


@pytest.fixture
def shipping_factory(
    gir_factory: Callable[..., Any], load_dag: Callable[[str], Any]
) -> Callable[..., Shipping]:
    def make(**shipping: Any) -> Shipping:
        # These tests were written around a ready marker (instant, no quiet period to sit out); the
        # topology's default (no marker) has its own tests below.
        settings = {"poll_seconds": 0.2, "ready_marker": DEFAULT_READY_MARKER, **shipping}
        return Shipping(gir_factory({"shipping": settings}), load_dag)

    return make


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}


def xcom(dag_run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


def asset_events(*dag_runs: Any, site: str = "DC2") -> list[dict[str, Any]]:
    """Extras of the SpeechMiner backup Asset events these runs emitted, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    name = spec.speechminer_backup_asset(site).name
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(
                AssetModel.name == name,
                AssetEvent.source_dag_id == DAG_ID,
                AssetEvent.source_run_id.in_([run.run_id for run in dag_runs]),
            )
            .order_by(AssetEvent.id)
            .all()
        )
        return [dict(event.extra or {}) for event in events]


def tree_hashes(folder: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file() and path.relative_to(folder).as_posix() not in skip
    }


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "MANIFEST.json").read_text(encoding="utf-8"))


class Logs:
    """What an operator would read: log records plus the task failures dag.test() prints (structlog)."""

    def __init__(self, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
        self.caplog = caplog
        self.capsys = capsys
        self.printed = ""

    def text(self) -> str:
        captured = self.capsys.readouterr()
        self.printed += captured.out + captured.err
        return "\n".join([*(r.getMessage() for r in self.caplog.records), self.printed])

    def clear(self) -> None:
        self.text()
        self.caplog.clear()
        self.printed = ""


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Logs:
    return Logs(caplog, capsys)


# --- shipping ------------------------------------------------------------------------------------------


def test_full_ship_then_a_second_run_copies_nothing(shipping_factory: Callable[..., Shipping]) -> None:
    ship = shipping_factory()
    folders = ship.generate(days=2)
    newest = folders[-1]

    first = ship.run()

    assert first.state == "success", states(first)
    published = ship.destination / newest.name
    assert tree_hashes(published, skip=("MANIFEST.json",)) == tree_hashes(newest)
    assert not (ship.destination / f"{newest.name}.partial").exists()
    assert not (ship.destination / folders[0].name).exists(), "only the newest backup is shipped"
    manifest = manifest_of(published)
    listed = {entry["path"]: entry for entry in manifest["entries"]}
    assert listed[EMPTY_FILE]["size"] == 0
    assert listed[EMPTY_FILE]["sha256"] == hashlib.sha256(b"").hexdigest()
    assert (published / NON_ASCII_FILE).read_bytes() == (newest / NON_ASCII_FILE).read_bytes()
    assert NON_ASCII_FILE in listed and DEFAULT_READY_MARKER in listed
    copied = xcom(first, "copy")
    assert copied["bytes_copied"] == sum(p.stat().st_size for p in newest.rglob("*") if p.is_file())
    events = asset_events(first)
    assert len(events) == 1
    assert events[0] == {
        "site": "DC2",
        "backup_name": newest.name,
        "bytes": manifest["bytes"],
        "files": len(listed),
        "manifest_sha256": manifest["manifest_sha256"],
        "shipped_at": manifest["shipped_at"],
    }
    before = {p: p.stat().st_mtime_ns for p in published.rglob("*")}

    second = ship.run()

    assert second.state == "success", states(second)
    assert states(second)["copy"] == "skipped"
    assert states(second)["verify_and_publish"] == "skipped"
    assert states(second)["freshness"] == "success"
    assert xcom(second, "manifest")["already_present"] is True
    assert xcom(second, "copy") is None
    assert {p: p.stat().st_mtime_ns for p in published.rglob("*")} == before
    assert asset_events(second) == [], "re-verifying an existing copy is not a new shipment"


def test_a_rerun_after_a_crash_mid_copy_copies_only_the_missing_bytes(
    shipping_factory: Callable[..., Shipping],
) -> None:
    ship = shipping_factory()
    (newest,) = ship.generate()
    files = sorted(
        (p.relative_to(newest).as_posix(), p.stat().st_size) for p in newest.rglob("*") if p.is_file()
    )
    by_size = sorted(files, key=lambda item: item[1])
    good = [path for path, _ in by_size[:4]]  # small ones made it before the crash
    truncated, truncated_size = by_size[-1]  # the largest was being written when the worker died
    staging = ship.destination / f"{newest.name}.partial"
    for path in good:
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes((newest / path).read_bytes())
    staged_prefix = truncated_size // 3
    (staging / truncated).parent.mkdir(parents=True, exist_ok=True)
    (staging / truncated).write_bytes((newest / truncated).read_bytes()[:staged_prefix])
    missing = [path for path, _ in files if path not in good and path != truncated]

    dag_run = ship.run()

    assert dag_run.state == "success", states(dag_run)
    copied = xcom(dag_run, "copy")
    assert sorted(copied["files_kept"]) == sorted(good)
    assert copied["files_resumed"] == [truncated]
    assert sorted(copied["files_copied"]) == sorted(missing)
    sizes = dict(files)
    assert copied["bytes_copied"] == (truncated_size - staged_prefix) + sum(sizes[p] for p in missing)
    assert copied["bytes_copied"] < copied["bytes_total"]
    assert tree_hashes(ship.destination / newest.name, skip=("MANIFEST.json",)) == tree_hashes(newest)
    assert not staging.exists()


def test_a_staged_file_corrupted_after_copying_fails_verification_naming_it(
    shipping_factory: Callable[..., Shipping],
    monkeypatch: pytest.MonkeyPatch,
    logs: Logs,
) -> None:
    """Between copy and verify (bad disk, another process) a staged file changes: nothing is published."""
    ship = shipping_factory()
    (newest,) = ship.generate()
    real_copy_task = tasks.copy_task
    largest = max((p for p in newest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    damaged = largest.relative_to(newest).as_posix()
    staged_file = ship.destination / f"{newest.name}.partial" / damaged

    def copy_then_corrupt(*args: Any, **kwargs: Any) -> dict[str, Any]:
        result = real_copy_task(*args, **kwargs)
        data = bytearray(staged_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        staged_file.write_bytes(bytes(data))
        return result

    monkeypatch.setattr(tasks, "copy_task", copy_then_corrupt)
    failed = ship.run()

    assert failed.state == "failed"
    assert states(failed)["copy"] == "success"
    assert states(failed)["verify_and_publish"] == "failed"
    assert states(failed)["retention"] == "upstream_failed", "nothing is pruned after a failed ship"
    assert states(failed)["fail_run_if_shipping_failed"] == "failed"
    assert f"{damaged} (SHA-256" in logs.text()
    assert not (ship.destination / newest.name).exists(), "a copy that did not verify is never published"
    assert asset_events(failed) == []

    monkeypatch.setattr(tasks, "copy_task", real_copy_task)
    repaired = ship.run()

    assert repaired.state == "success", states(repaired)
    copied = xcom(repaired, "copy")
    assert copied["files_copied"] == [damaged]
    assert copied["bytes_copied"] == largest.stat().st_size
    assert tree_hashes(ship.destination / newest.name, skip=("MANIFEST.json",)) == tree_hashes(newest)
    assert [e["backup_name"] for e in asset_events(repaired)] == [newest.name]


def test_a_published_backup_damaged_later_is_detected_and_reshipped(
    shipping_factory: Callable[..., Shipping], logs: Logs
) -> None:
    ship = shipping_factory()
    (newest,) = ship.generate()
    first = ship.run()
    assert first.state == "success"
    published_file = ship.destination / newest.name / EMPTY_FILE
    published_file.write_bytes(b"bit rot")

    dag_run = ship.run()

    assert dag_run.state == "success", states(dag_run)
    plan = xcom(dag_run, "manifest")
    assert plan["already_present"] is False
    assert plan["repaired"] == [EMPTY_FILE]
    assert f"{EMPTY_FILE} (size 7 bytes, expected 0)" in logs.text()
    copied = xcom(dag_run, "copy")
    assert copied["files_copied"] == [EMPTY_FILE]
    assert copied["bytes_copied"] == 0
    assert published_file.read_bytes() == b""
    assert [e["backup_name"] for e in asset_events(first, dag_run)] == [newest.name] * 2


# --- waiting for the backup ----------------------------------------------------------------------------


class SpeechMinerStillWriting:
    """Wraps the readiness check: until the trigger has polled ``finish_at - 1`` times, SpeechMiner keeps
    touching the folder; on call ``finish_at`` it finishes the backup. Call 1 is the worker's own check."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ship: Shipping, *, finish_at: int) -> None:
        self.calls = 0
        self.ship = ship
        self.finish_at = finish_at
        self.lock = threading.Lock()
        self.real = readiness.backup_readiness
        monkeypatch.setattr(readiness, "backup_readiness", self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
            folder = self.ship.source / backup_folder_name(TODAY)
            if self.calls < self.finish_at:
                for path in folder.rglob("*"):
                    os.utime(path)  # still writing
            elif self.calls == self.finish_at:
                self.ship.generate()
        return self.real(*args, **kwargs)


def incomplete_backup(ship: Shipping) -> Path:
    return write_incomplete_backup(
        ship.source, TODAY, total_bytes=SMALL, files=8, ready_marker=ship.marker or DEFAULT_READY_MARKER
    )


def test_a_backup_still_being_written_is_waited_for_in_the_triggerer_then_shipped_once_quiet(
    shipping_factory: Callable[..., Shipping], monkeypatch: pytest.MonkeyPatch
) -> None:
    ship = shipping_factory(ready_marker=None, quiet_minutes=0.03)  # 1.8 s quiet period
    folder = incomplete_backup(ship)
    writer = SpeechMinerStillWriting(monkeypatch, ship, finish_at=3)

    dag_run = ship.run()

    assert dag_run.state == "success", states(dag_run)
    ready = xcom(dag_run, "wait_for_backup")
    assert ready["deferred"] is True, "the wait must happen in the triggerer, not on the worker"
    assert ready["backup_name"] == folder.name
    assert ready["polls"] >= 3, "ready only after a quiet period following the last change"
    assert ready["reason"].startswith("quiet for")
    assert writer.calls >= 4
    published = ship.destination / folder.name
    assert tree_hashes(published, skip=("MANIFEST.json",)) == tree_hashes(folder)
    assert manifest_of(published)["files"] == 8, "the complete backup, not the half-written one"


def test_a_backup_is_waited_for_until_its_ready_marker_appears(
    shipping_factory: Callable[..., Shipping], monkeypatch: pytest.MonkeyPatch
) -> None:
    ship = shipping_factory()
    folder = incomplete_backup(ship)
    SpeechMinerStillWriting(monkeypatch, ship, finish_at=3)

    dag_run = ship.run()

    assert dag_run.state == "success", states(dag_run)
    ready = xcom(dag_run, "wait_for_backup")
    assert ready["deferred"] is True
    assert ready["reason"] == f"marker {DEFAULT_READY_MARKER} found"
    assert ready["polls"] == 2
    assert (ship.destination / folder.name / DEFAULT_READY_MARKER).exists()


def test_the_wait_times_out_naming_the_folder_and_the_missing_marker(
    shipping_factory: Callable[..., Shipping], logs: Logs
) -> None:
    ship = shipping_factory(wait_timeout_minutes=0.02)  # 1.2 s
    folder = incomplete_backup(ship)

    dag_run = ship.run()

    assert dag_run.state == "failed"
    assert states(dag_run)["wait_for_backup"] == "failed"
    assert states(dag_run)["manifest"] == "upstream_failed"
    assert states(dag_run)["fail_run_if_shipping_failed"] == "failed"
    text = logs.text()
    assert f"SpeechMiner backup {folder.name} is not complete after waiting 0.02 min" in text
    assert f"marker {DEFAULT_READY_MARKER} not found" in text
    assert "last change at" in text
    assert not (ship.destination / f"{folder.name}.partial").exists()


def test_no_backup_at_all_fails_at_once_with_a_clear_message(
    shipping_factory: Callable[..., Shipping], logs: Logs
) -> None:
    ship = shipping_factory()
    ship.source.mkdir(parents=True, exist_ok=True)  # the share exists, SpeechMiner never wrote to it

    dag_run = ship.run()

    assert dag_run.state == "failed"
    assert states(dag_run)["wait_for_backup"] == "failed"
    assert xcom(dag_run, "wait_for_backup") is None
    text = logs.text()
    assert f"no backup folder under file://{ship.source}" in text
    assert "SpeechMiner has not written any Daily Index Backup there" in text
    assert "no verified SpeechMiner backup at DC2" in text, "freshness still runs and says so"


# --- refusing, pruning, freshness ----------------------------------------------------------------------


def test_a_symlink_in_the_source_is_refused_and_nothing_is_copied(
    shipping_factory: Callable[..., Shipping], logs: Logs, tmp_path: Path
) -> None:
    ship = shipping_factory()
    (newest,) = ship.generate()
    secret = tmp_path / "outside-the-backup.txt"
    secret.write_text("not part of any backup")
    (newest / "segments" / "linked.dat").symlink_to(secret)

    dag_run = ship.run()

    assert dag_run.state == "failed"
    assert states(dag_run)["manifest"] == "failed"
    assert states(dag_run)["copy"] == "upstream_failed"
    assert "segments/linked.dat in" in logs.text()
    assert "is a symbolic link" in logs.text()
    assert not ship.destination.exists() or list(ship.destination.iterdir()) == []


def test_retention_over_ten_days_keeps_the_newest_seven_verified_backups(
    shipping_factory: Callable[..., Shipping], logs: Logs
) -> None:
    ship = shipping_factory(keep=7)
    folders = ship.generate(days=10)
    for folder in folders[:-1]:  # nine earlier daily runs, shipped with the same task code
        plan = tasks.manifest_task(ship.route, folder.name)
        copied = tasks.copy_task(ship.route, plan)
        tasks.verify_and_publish_task(ship.route, plan, copied)
    hand_copy = ship.destination / "index-2000-01-01"
    hand_copy.mkdir()
    (hand_copy / "notes.txt").write_text("an operator's copy without a manifest")

    dag_run = ship.run()

    assert dag_run.state == "success", states(dag_run)
    kept = sorted(p.name for p in ship.destination.iterdir() if (p / "MANIFEST.json").exists())
    assert kept == [f.name for f in folders[-7:]]
    pruned = xcom(dag_run, "retention")
    assert pruned["deleted"] == [f.name for f in folders[:3]]
    assert pruned["unverified_left"] == ["index-2000-01-01"]
    assert hand_copy.exists()
    assert "NOT deleting" in logs.text() and "index-2000-01-01" in logs.text()


def test_freshness_fails_loudly_with_the_age_even_when_nothing_new_arrives(
    shipping_factory: Callable[..., Shipping], logs: Logs
) -> None:
    ship = shipping_factory()
    (newest,) = ship.generate(end_day=TODAY - timedelta(days=3))  # SpeechMiner stopped 3 days ago

    first = ship.run()

    assert states(first)["verify_and_publish"] == "success", "the old backup is still shipped"
    assert states(first)["freshness"] == "failed"
    assert first.state == "failed"
    assert (ship.destination / newest.name / "MANIFEST.json").exists()
    logs.clear()

    second = ship.run()

    assert states(second)["copy"] == "skipped", "nothing new at the source"
    assert states(second)["freshness"] == "failed"
    assert second.state == "failed"
    text = logs.text()
    assert f"the newest verified SpeechMiner backup at DC2 is {newest.name}, " in text
    age = float(text.split(f"{newest.name}, ", 1)[1].split(" h old", 1)[0])
    assert 72 - 24 < age < 72 + 24, age
    assert "more than shipping.max_age_hours=26" in text
    # The stale alarm also says what the source holds and that no step of this run failed.
    assert f"- newest backup seen at the source (DC1): {newest.name} (last written " in text
    assert "- no shipping step failed in this run: there was nothing newer at the source to ship" in text


def test_the_schedule_is_the_topology_cron_in_the_source_dc_timezone(
    gir_factory: Callable[..., Any], load_dag: Callable[[str], Any]
) -> None:
    """Shipping the other way round (DC2 -> DC1) must follow DC2's clock and publish DC1's Asset."""
    gir_factory({"shipping": {"from_site": "DC2", "to_site": "DC1", "schedule": "15 4 * * *"}})
    from airflow.sdk import CronDataIntervalTimetable

    dag = load_dag(DAG_ID)
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "15 4 * * *"
    assert str(dag.timetable.timezone) == "Europe/Paris"
    assert [outlet.name for outlet in dag.get_task("verify_and_publish").outlets] == [
        spec.speechminer_backup_asset("DC1").name
    ]
    assert dag.max_active_runs == 1 and dag.catchup is False


# --- faults: old mtimes, links at the destination, folders that are not backups -----------------------


def test_a_backup_copied_with_old_mtimes_is_shipped_only_after_two_matching_scans(
    shipping_factory: Callable[..., Shipping],
) -> None:
    """No marker, and every file and folder keeps an old mtime (cp -p, robocopy): one look is not enough."""
    ship = shipping_factory(ready_marker=None, quiet_minutes=0.02)  # 1.2 s
    (newest,) = ship.generate()
    old = min(p.stat().st_mtime for p in newest.rglob("*") if p.is_file())  # SpeechMiner's backup window
    for path in [*newest.rglob("*"), newest]:
        os.utime(path, (old, old))

    dag_run = ship.run()

    assert dag_run.state == "success", states(dag_run)
    ready = xcom(dag_run, "wait_for_backup")
    assert ready["deferred"] is True, "complete only after a second scan, in the triggerer"
    assert ready["polls"] >= 1
    assert "the same listing on two scans" in ready["reason"]
    assert (ship.destination / newest.name / "MANIFEST.json").exists()


def test_a_link_at_the_staging_name_fails_the_run_and_the_linked_folder_is_untouched(
    shipping_factory: Callable[..., Shipping], logs: Logs, tmp_path: Path
) -> None:
    ship = shipping_factory()
    (newest,) = ship.generate()
    elsewhere = tmp_path / "another-application"
    elsewhere.mkdir()
    (elsewhere / "sentinel.txt").write_text("must stay")
    (elsewhere / "data.bin").write_bytes(b"not a file of any backup")
    ship.destination.mkdir(parents=True)
    (ship.destination / f"{newest.name}.partial").symlink_to(elsewhere, target_is_directory=True)

    dag_run = ship.run()

    assert dag_run.state == "failed"
    assert states(dag_run)["manifest"] == "failed"
    assert states(dag_run)["copy"] == "upstream_failed"
    assert f"{newest.name}.partial (staging folder) is a symbolic link to {elsewhere}" in logs.text()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["data.bin", "sentinel.txt"]
    assert (elsewhere / "sentinel.txt").read_text() == "must stay"
    assert sorted(p.name for p in ship.destination.iterdir()) == [f"{newest.name}.partial"]


def test_folders_that_are_not_backups_are_never_shipped(
    shipping_factory: Callable[..., Shipping], logs: Logs
) -> None:
    ship = shipping_factory()
    (newest,) = ship.generate()
    forged = "index-2099-01-01\n2099-01-01T03:30:00 INFO shipping succeeded"
    for junk in ("tmp", "lost+found", ".snapshot", forged):
        (ship.source / junk).mkdir()
        (ship.source / junk / DEFAULT_READY_MARKER).write_bytes(b"")

    dag_run = ship.run()

    assert dag_run.state == "success", states(dag_run)
    assert xcom(dag_run, "wait_for_backup")["backup_name"] == newest.name
    assert sorted(p.name for p in ship.destination.iterdir()) == [newest.name]
    text = logs.text()
    assert "index-2099-01-01\\x0a2099-01-01T03:30:00" in text
    assert "\n2099-01-01T03:30:00 INFO" not in text


# --- a topology without shipping ----------------------------------------------------------------------


def test_without_a_shipping_section_the_file_defines_no_dag_and_says_so_once(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Missing section = feature not configured: no DAG, no import error, one warning naming the section."""
    document = default_topology_dict()
    document.pop("shipping")
    topology = tmp_path / "topology-without-shipping.yaml"
    topology.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("GIR_TOPOLOGY", str(topology))
    caplog.set_level(logging.WARNING)

    bag = parse_dags(REPO_ROOT / "dags" / "gir_speechminer_backup_ship.py")

    assert bag.import_errors == {}
    assert bag.dags == {}
    warnings = [r.getMessage() for r in caplog.records if "shipping section" in r.getMessage()]
    assert warnings == [
        f"{DAG_ID} is not defined: the topology has no shipping section; add one (from_site, to_site, "
        "destination) to enable SpeechMiner backup shipping"
    ]


# --- the defaults a real deployment gets: no marker; and shipping.mode verify-in-place -----------------


def test_with_the_topologys_default_no_marker_a_backup_ships_after_the_quiet_period(
    gir_factory: Callable[..., Any], load_dag: Callable[[str], Any]
) -> None:
    """SpeechMiner writes no completion marker: the default waits for the quiet period, then ships."""
    gir = gir_factory({"shipping": {"poll_seconds": 0.2, "quiet_minutes": 0.02}})  # 1.2 s
    assert gir.topology.shipping.ready_marker is None  # the example topology's default, not overridden
    ship = Shipping(gir, load_dag)
    (newest,) = ship.generate()
    assert not (newest / DEFAULT_READY_MARKER).exists()

    dag_run = ship.run()

    assert dag_run.state == "success", states(dag_run)
    ready = xcom(dag_run, "wait_for_backup")
    assert ready["deferred"] is True
    assert "the same listing on two scans" in ready["reason"]
    assert tree_hashes(ship.destination / newest.name, skip=("MANIFEST.json",)) == tree_hashes(newest)


def in_place_topology() -> dict[str, Any]:
    """The guide's deployment: DC1's SpeechMiner writes its Daily Index Backup straight into DC2."""
    document = default_topology_dict()
    for dc in document["data_centers"]:
        if dc["site"] == "DC1":
            dc.pop("speechminer", None)
    document["shipping"].update(
        mode="verify-in-place",
        destination="file://${GIR_DATA_DIR}/dc2/speechminer/index-backup",
        poll_seconds=0.2,
        quiet_minutes=0.02,
        ready_marker=None,
    )
    return document


class InPlace(Shipping):
    @property
    def manifests(self) -> Path:
        return local_path(self.route.manifest_root)


@pytest.fixture
def in_place(gir_factory: Callable[..., Any], load_dag: Callable[[str], Any]) -> Callable[..., InPlace]:
    def make(**shipping: Any) -> InPlace:
        return InPlace(gir_factory({"shipping": shipping}, topology=in_place_topology()), load_dag)

    return make


def test_verify_in_place_records_what_arrived_and_copies_nothing(
    in_place: Callable[..., InPlace], logs: Logs
) -> None:
    ship = in_place()
    assert ship.source == ship.destination  # SpeechMiner writes there; the DAG only reads it
    assert [task.task_id for task in ship.dag.tasks] == [
        "wait_for_backup",
        "verify_in_place",
        "freshness",
        "fail_run_if_shipping_failed",
    ]
    folders = ship.generate(days=2)
    newest = folders[-1]
    before = tree_hashes(ship.destination)

    first = ship.run()

    assert first.state == "success", states(first)
    assert tree_hashes(ship.destination) == before, "nothing written into SpeechMiner's folder"
    assert sorted(p.name for p in ship.destination.iterdir()) == [f.name for f in folders]
    recorded = json.loads((ship.manifests / f"{newest.name}.json").read_text(encoding="utf-8"))
    assert {e["path"]: e["sha256"] for e in recorded["entries"]} == tree_hashes(newest)
    verified = xcom(first, "verify_in_place")
    assert verified["newly_recorded"] is True
    assert verified["checked"] == {folders[0].name: "not-recorded", newest.name: "recorded"}
    events = asset_events(first)
    assert len(events) == 1
    assert events[0]["backup_name"] == newest.name
    assert events[0]["manifest_sha256"] == recorded["manifest_sha256"]
    assert events[0]["shipped_at"] == recorded["created_at"], "its age counts from SpeechMiner's last write"
    assert xcom(first, "freshness")["backup_name"] == newest.name

    second = ship.run()

    assert second.state == "success", states(second)
    assert xcom(second, "verify_in_place")["checked"][newest.name] == "verified"
    assert xcom(second, "verify_in_place")["newly_recorded"] is False


def test_verify_in_place_fails_the_next_run_when_a_backup_changed_after_it_was_recorded(
    in_place: Callable[..., InPlace], logs: Logs
) -> None:
    ship = in_place()
    (newest,) = ship.generate()
    assert ship.run().state == "success"
    damaged = sorted(p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 0)[0]
    damaged.write_bytes(b"\0" * damaged.stat().st_size)  # same size, other bytes: bit rot
    logs.clear()

    dag_run = ship.run()

    assert dag_run.state == "failed"
    assert states(dag_run)["verify_in_place"] == "failed"
    assert states(dag_run)["fail_run_if_shipping_failed"] == "failed"
    text = logs.text()
    assert f"SpeechMiner backup(s) at DC2 (file://{ship.destination}) no longer match the manifest" in text
    assert damaged.relative_to(newest).as_posix() in text
    assert "do not promote it without checking" in text
    assert states(dag_run)["freshness"] == "failed", "the damaged backup is not counted as verified"


def test_verify_in_place_fails_at_once_when_nothing_arrived(
    in_place: Callable[..., InPlace], logs: Logs
) -> None:
    ship = in_place()
    ship.destination.mkdir(parents=True, exist_ok=True)  # the share exists, SpeechMiner never wrote to it

    dag_run = ship.run()

    assert dag_run.state == "failed"
    assert states(dag_run)["wait_for_backup"] == "failed"
    assert states(dag_run)["verify_in_place"] == "upstream_failed"
    text = logs.text()
    assert f"no backup folder under file://{ship.destination}" in text
    assert "no verified SpeechMiner backup at DC2" in text, "freshness still runs and says so"


def test_verify_in_place_fails_loudly_on_a_stale_backup(in_place: Callable[..., InPlace], logs: Logs) -> None:
    ship = in_place()
    (newest,) = ship.generate(end_day=TODAY - timedelta(days=3))  # SpeechMiner stopped 3 days ago

    dag_run = ship.run()

    assert states(dag_run)["verify_in_place"] == "success", "what arrived is intact, and recorded"
    assert states(dag_run)["freshness"] == "failed"
    assert dag_run.state == "failed"
    text = logs.text()
    assert f"the newest verified SpeechMiner backup at DC2 is {newest.name}, " in text
    assert "more than shipping.max_age_hours=26" in text
