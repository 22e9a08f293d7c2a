"""shipping.mode verify-in-place: SpeechMiner writes to the backup DC itself; we verify and record.

Against local folders through ObjectStoragePath: what is recorded, where (never inside SpeechMiner's
folder), and every fault the guide's deployment can show: nothing arrived, an old backup, a backup that
changed after it was recorded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.gir_ops.backup.errors import BackupStale, SourceChanged
from include.gir_ops.backup.in_place import (
    BackupChanged,
    in_place_freshness,
    manifest_path,
    verify_in_place,
)
from include.gir_ops.backup.tasks import in_place_freshness_task, verify_in_place_task
from tests.include.backup.backup_support import (
    day_names,
    make_tree,
    route_for,
    sample_files,
    sha256,
    snapshot,
)

NOW = time.time()


def in_place_route(tmp_path: Path, **overrides: Any) -> Any:
    settings = {
        "source_root": f"file://{tmp_path}/dc2/index-backup",
        "destination": f"file://{tmp_path}/dc2/index-backup",
        "mode": "verify-in-place",
        "manifest_root": f"file://{tmp_path}/dc2/index-backup.gir-manifests",
    }
    settings.update(overrides)
    return route_for(tmp_path, **settings)


def arrive(tmp_path: Path, name: str, files: dict[str, bytes], *, age_hours: float = 1.0) -> Path:
    """A backup as SpeechMiner leaves it in the backup DC, last written ``age_hours`` ago."""
    folder = make_tree(tmp_path / "dc2" / "index-backup" / name, files)
    when = NOW - age_hours * 3600
    for path in folder.rglob("*"):
        os.utime(path, (when, when))
    return folder


def recorded(tmp_path: Path, name: str) -> dict[str, Any]:
    return json.loads((tmp_path / "dc2" / "index-backup.gir-manifests" / f"{name}.json").read_text())


def test_the_newest_backup_is_recorded_beside_speechminers_folder_never_inside(tmp_path: Path) -> None:
    route = in_place_route(tmp_path)
    files = sample_files()
    folder = arrive(tmp_path, "index-2026-11-01", files)
    before = snapshot(folder)

    result = verify_in_place(route, "index-2026-11-01", now=NOW)

    assert snapshot(folder) == before, "nothing of ours is written into SpeechMiner's backup"
    document = recorded(tmp_path, "index-2026-11-01")
    assert {e["path"]: (e["size"], e["sha256"]) for e in document["entries"]} == {
        path: (len(data), sha256(data)) for path, data in files.items()
    }
    assert document["mode"] == "verify-in-place"
    assert (document["source_site"], document["site"]) == ("DC1", "DC2")
    assert result["newly_recorded"] is True
    assert result["manifest_sha256"] == document["manifest_sha256"]
    assert result["files"] == len(files)
    # Its age counts from SpeechMiner's last write, not from when we looked.
    assert abs(NOW - _parse(result["shipped_at"]) - 3600) < 1  # arrive() wrote it an hour before NOW
    assert not list((tmp_path / "dc2" / "index-backup.gir-manifests").glob("*.partial"))


def test_a_second_run_re_verifies_and_records_nothing_new(tmp_path: Path) -> None:
    route = in_place_route(tmp_path)
    arrive(tmp_path, "index-2026-11-01", sample_files())
    verify_in_place(route, "index-2026-11-01", now=NOW)
    manifest = manifest_path(route, "index-2026-11-01")
    first = Path(manifest.path).read_bytes()

    again = verify_in_place(route, "index-2026-11-01", now=NOW + 60)

    assert again["newly_recorded"] is False
    assert again["checked"] == {"index-2026-11-01": "verified"}
    assert Path(manifest.path).read_bytes() == first


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda f: (f / "segments/shard-1/seg-00001.dat").write_bytes(b"x" * 5 * 1024), "SHA-256"),
        (lambda f: (f / "segments/shard-1/seg-00001.dat").write_bytes(b"short"), "size 5 bytes"),
        (lambda f: (f / "meta/deletions.log").unlink(), "meta/deletions.log (missing)"),
        (lambda f: (f / "extra.dat").write_bytes(b"new"), "extra.dat (not in the manifest)"),
    ],
)
def test_a_backup_changed_after_it_was_recorded_is_found_on_the_next_run(
    tmp_path: Path, damage: Any, problem: str
) -> None:
    route = in_place_route(tmp_path)
    older = arrive(tmp_path, "index-2026-11-01", sample_files(), age_hours=25)
    verify_in_place(route, "index-2026-11-01", now=NOW)
    arrive(tmp_path, "index-2026-11-02", sample_files())
    damage(older)

    with pytest.raises(BackupChanged) as caught:
        verify_in_place(route, "index-2026-11-02", now=NOW)

    message = str(caught.value)
    assert "1 SpeechMiner backup(s) at DC2" in message
    assert "index-2026-11-01 (recorded " in message
    assert problem in message
    assert "do not promote it without checking" in message
    assert "delete its manifest <name>.json in file://" in message
    # The newest one was recorded all the same: another backup's damage does not lose its record.
    assert recorded(tmp_path, "index-2026-11-02")["backup_name"] == "index-2026-11-02"


def test_a_change_fails_the_task_without_retry(tmp_path: Path) -> None:
    route = in_place_route(tmp_path)
    folder = arrive(tmp_path, "index-2026-11-01", sample_files())
    verify_in_place_task(route, "index-2026-11-01", now=NOW)
    (folder / "segments/shard-1/seg-00001.dat").write_bytes(b"y" * 5 * 1024)

    with pytest.raises(AirflowFailException, match="no longer match the manifest recorded"):
        verify_in_place_task(route, "index-2026-11-01", now=NOW)


def test_only_the_newest_keep_backups_are_re_verified_and_gone_ones_lose_their_manifest(
    tmp_path: Path,
) -> None:
    route = in_place_route(tmp_path, keep=2)
    names = day_names(4)
    for index, name in enumerate(names):
        arrive(tmp_path, name, {"a.dat": name.encode()}, age_hours=24 * (4 - index))
        verify_in_place(route, name, now=NOW)
    (tmp_path / "dc2" / "index-backup" / names[0] / "a.dat").write_bytes(b"rot beyond keep")
    for path in (tmp_path / "dc2" / "index-backup" / names[1]).iterdir():
        path.unlink()
    (tmp_path / "dc2" / "index-backup" / names[1]).rmdir()  # SpeechMiner's own retention

    result = verify_in_place(route, names[-1], now=NOW)

    assert result["checked"] == {names[2]: "verified", names[3]: "verified"}
    assert result["manifests_pruned"] == [names[1]]
    assert not (tmp_path / "dc2" / "index-backup.gir-manifests" / f"{names[1]}.json").exists()


def test_an_empty_newest_backup_is_refused(tmp_path: Path) -> None:
    route = in_place_route(tmp_path)
    (tmp_path / "dc2" / "index-backup" / "index-2026-11-01").mkdir(parents=True)

    with pytest.raises(AirflowFailException, match="is empty: SpeechMiner wrote no file into it"):
        verify_in_place_task(route, "index-2026-11-01", now=NOW)
    assert not (tmp_path / "dc2" / "index-backup.gir-manifests" / "index-2026-11-01.json").exists()


# --- freshness -----------------------------------------------------------------------------------------


def test_freshness_measures_the_newest_recorded_intact_backup_from_speechminers_last_write(
    tmp_path: Path,
) -> None:
    route = in_place_route(tmp_path, max_age_hours=26)
    arrive(tmp_path, "index-2026-11-01", sample_files(), age_hours=3)
    verify_in_place(route, "index-2026-11-01", now=NOW)

    result = in_place_freshness(route, now=NOW)

    assert result["backup_name"] == "index-2026-11-01"
    assert result["age_hours"] == pytest.approx(3, abs=0.01)


def test_a_stale_backup_fails_freshness_with_its_age(tmp_path: Path) -> None:
    route = in_place_route(tmp_path, max_age_hours=26)
    arrive(tmp_path, "index-2026-11-01", sample_files(), age_hours=30)
    verify_in_place(route, "index-2026-11-01", now=NOW)

    with pytest.raises(
        AirflowFailException,
        match=r"index-2026-11-01, 30\.0 h old .* shipping\.max_age_hours=26: the backup DC.s index is stale",
    ):
        in_place_freshness_task(route, now=NOW)


def test_nothing_recorded_or_nothing_arrived_is_stale(tmp_path: Path) -> None:
    route = in_place_route(tmp_path)
    with pytest.raises(BackupStale, match=r"no verified SpeechMiner backup at DC2 .*\(none\)"):
        in_place_freshness(route, now=NOW)
    arrive(tmp_path, "index-2026-11-01", sample_files())  # arrived, never recorded
    with pytest.raises(BackupStale, match=r"\(index-2026-11-01\) is recorded and intact"):
        in_place_freshness(route, now=NOW)


def test_a_recorded_backup_whose_files_changed_does_not_count_as_fresh(tmp_path: Path) -> None:
    route = in_place_route(tmp_path)
    older = arrive(tmp_path, "index-2026-11-01", {"a.dat": b"12345"}, age_hours=20)
    verify_in_place(route, "index-2026-11-01", now=NOW)
    newer = arrive(tmp_path, "index-2026-11-02", {"a.dat": b"67890"}, age_hours=2)
    verify_in_place(route, "index-2026-11-02", now=NOW)
    (newer / "a.dat").write_bytes(b"truncated")

    result = in_place_freshness(route, now=NOW)

    assert result["backup_name"] == older.name  # the damaged newest one is not trusted


def _parse(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_a_changed_backup_stays_out_of_freshness_until_it_verifies_again_or_is_recorded_anew(
    tmp_path: Path,
) -> None:
    route = in_place_route(tmp_path)
    arrive(tmp_path, "index-2026-11-01", {"a.dat": b"12345"}, age_hours=20)
    verify_in_place(route, "index-2026-11-01", now=NOW)
    newest = arrive(tmp_path, "index-2026-11-02", {"a.dat": b"67890"}, age_hours=2)
    verify_in_place(route, "index-2026-11-02", now=NOW)
    (newest / "a.dat").write_bytes(b"00000")  # same size: only the hash tells
    with pytest.raises(BackupChanged, match=r"a\.dat \(SHA-256"):
        verify_in_place(route, "index-2026-11-02", now=NOW)
    marker = tmp_path / "dc2" / "index-backup.gir-manifests" / "index-2026-11-02.json.changed"
    assert json.loads(marker.read_text())["problems"][0].startswith("a.dat (SHA-256")

    assert in_place_freshness(route, now=NOW)["backup_name"] == "index-2026-11-01"

    (newest / "a.dat").write_bytes(b"67890")  # restored from elsewhere
    os.utime(newest / "a.dat", (NOW - 7200, NOW - 7200))
    verify_in_place(route, "index-2026-11-02", now=NOW)
    assert not marker.exists()
    assert in_place_freshness(route, now=NOW)["backup_name"] == "index-2026-11-02"


def test_a_backup_written_to_while_it_is_hashed_is_not_recorded_and_the_task_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.gir_ops.backup import in_place

    route = in_place_route(tmp_path)
    folder = arrive(tmp_path, "index-2026-11-01", sample_files())
    original = in_place.build_manifest

    def hash_while_speechminer_writes(*args: Any, **kwargs: Any) -> Any:
        entries = original(*args, **kwargs)
        (folder / "segments/shard-1/seg-00002.dat").write_bytes(b"late segment")
        return entries

    monkeypatch.setattr(in_place, "build_manifest", hash_while_speechminer_writes)
    with pytest.raises(SourceChanged, match="changed while it was being hashed") as caught:
        verify_in_place_task(route, "index-2026-11-01", now=NOW)
    assert caught.value.retryable is True  # fail_without_retry lets Airflow retry it
    assert not (tmp_path / "dc2" / "index-backup.gir-manifests" / "index-2026-11-01.json").exists()
