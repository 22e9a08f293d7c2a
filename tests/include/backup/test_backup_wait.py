"""The deferred wait: BackupReadyTrigger in the triggerer and SpeechMinerBackupSensor on the worker."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow._shared.module_loading import import_string  # what the triggerer loads triggers with
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from include.gir_ops.backup.sensors import SpeechMinerBackupSensor
from include.gir_ops.backup.triggers import TRIGGER_CLASSPATH, BackupReadyTrigger
from tests.include.backup.backup_support import (
    NAME,
    make_tree,
    preserved_times_copy,
    run_trigger,
    trigger_for,
)


def test_trigger_serializes_to_an_importable_class_with_plain_kwargs(tmp_path: Path) -> None:
    classpath, kwargs = trigger_for(tmp_path).serialize()
    assert classpath == TRIGGER_CLASSPATH
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)


def test_trigger_fires_when_the_marker_appears(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = make_tree(root / "index-2026-11-01", {"a.dat": b"x"})
    trigger = trigger_for(root)

    async def scenario() -> Any:
        events = trigger.run()
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        (folder / "_BACKUP_COMPLETE").write_bytes(b"")
        return await asyncio.wait_for(waiting, 5)

    event = asyncio.run(scenario()).payload
    assert event["status"] == "ready"
    assert event["backup_name"] == "index-2026-11-01"
    assert event["polls"] >= 2


def test_trigger_times_out_naming_the_folder_and_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root / "index-2026-11-20", {"a.dat": b"x"})
    event = run_trigger(trigger_for(root, deadline=time.time() + 0.2))
    assert event["status"] == "timeout"
    assert "index-2026-11-20" in event["message"]
    assert "marker _BACKUP_COMPLETE not found" in event["message"]
    assert "last change at" in event["message"]


def test_trigger_reports_a_missing_backup_at_once(tmp_path: Path) -> None:
    event = run_trigger(trigger_for(tmp_path / "nothing-here"))
    assert event["status"] == "missing"
    assert "does not exist" in event["message"]


def sensor_for(root: Path, **kwargs: Any) -> SpeechMinerBackupSensor:
    """The DAG's sensor over ``root`` without a ready marker (two scans decide)."""
    return SpeechMinerBackupSensor(
        task_id="wait_for_backup",
        source_root=f"file://{root}",
        ready_marker=None,
        wait_timeout_minutes=10,
        poll_seconds=30,
        **kwargs,
    )


def test_the_sensor_defers_with_its_first_scan_as_a_plain_baseline_for_the_trigger(tmp_path: Path) -> None:
    now = time.time()
    preserved_times_copy(tmp_path / "root", NAME, when=now - 86400)
    sensor = sensor_for(tmp_path / "root", quiet_minutes=1)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]

    trigger = deferred.value.trigger
    classpath, kwargs = trigger.serialize()
    assert classpath == TRIGGER_CLASSPATH
    assert json.loads(json.dumps(kwargs)) == kwargs
    baseline = kwargs["baseline"]
    assert set(baseline) == {"backup_name", "signature", "stable_since", "seen_change_at"}
    assert baseline["backup_name"] == NAME

    # The triggerer rebuilds it; the same listing a quiet period after the worker's scan is complete
    # on the first poll.
    kwargs["baseline"] = {**baseline, "stable_since": baseline["stable_since"] - 60}
    event = run_trigger(BackupReadyTrigger(**kwargs))
    assert event["status"] == "ready"
    assert event["polls"] == 1
    assert "the same listing on two scans" in event["reason"]


def test_the_trigger_without_a_baseline_needs_two_scans(tmp_path: Path) -> None:
    preserved_times_copy(tmp_path / "root", NAME, when=time.time() - 86400)
    event = run_trigger(trigger_for(tmp_path / "root", ready_marker=None, quiet_seconds=0.0))
    assert event["status"] == "ready"
    assert event["polls"] == 2


def test_a_rescheduled_sensor_without_a_marker_is_refused_because_it_cannot_compare_scans(
    tmp_path: Path,
) -> None:
    preserved_times_copy(tmp_path / "root", NAME, when=time.time() - 86400)
    sensor = sensor_for(tmp_path / "root", quiet_minutes=0, mode="reschedule")
    with pytest.raises(AirflowFailException, match=r"mode='reschedule' needs shipping\.ready_marker"):
        sensor.poke({})  # type: ignore[arg-type]
    sensor.mode = "poke"  # one process: the second poke compares with the first
    assert sensor.poke({}).is_done is False  # type: ignore[arg-type]
    assert sensor.poke({}).is_done is True  # type: ignore[arg-type]


# --- the trigger's old classpath -----------------------------------------------------------------------

OLD_CLASSPATH = "include.gir_ops.backup_triggers.BackupReadyTrigger"


def test_a_trigger_stored_under_the_old_classpath_still_loads_and_serializes_under_the_new_one(
    tmp_path: Path,
) -> None:
    """A deployment that deferred before the move stored the old path; the triggerer must still load it."""
    stored_kwargs = json.loads(json.dumps(trigger_for(tmp_path).serialize()[1]))
    old_class = import_string(OLD_CLASSPATH)

    assert old_class is BackupReadyTrigger
    assert TRIGGER_CLASSPATH == "include.gir_ops.backup.triggers.BackupReadyTrigger"
    assert old_class(**stored_kwargs).serialize() == (TRIGGER_CLASSPATH, stored_kwargs)
    assert run_trigger(old_class(**stored_kwargs))["status"] == "missing"  # it runs, from the old path too
