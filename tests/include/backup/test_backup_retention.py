"""Retention and freshness at the destination: keep the newest verified, warn, never delete through links."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from include.gir_ops.backup.destination import apply_retention
from include.gir_ops.backup.errors import BackupRefused, BackupStale
from include.gir_ops.backup.freshness import check_freshness
from include.gir_ops.backup.spec import MANIFEST_NAME
from tests.include.backup.backup_support import (
    SENTINELS,
    day_names,
    make_tree,
    osp,
    publish_tree,
    sentinel_folder,
    snapshot,
)


def test_retention_keeps_the_newest_verified_and_deletes_older_ones(tmp_path: Path) -> None:
    now = time.time()
    for offset, name in enumerate(day_names(10)):
        publish_tree(tmp_path, name, {"a.dat": name.encode()}, created_at=now - (10 - offset) * 86400)
    result = apply_retention(osp(tmp_path), keep=7, protect="index-2026-11-10")
    assert result.deleted == day_names(3)
    assert result.kept == day_names(10)[3:]
    assert sorted(p.name for p in tmp_path.iterdir()) == day_names(10)[3:]


def test_retention_never_deletes_the_backup_just_shipped_and_never_keeps_fewer_than_one(
    tmp_path: Path,
) -> None:
    now = time.time()
    for name in day_names(3):
        publish_tree(tmp_path, name, {"a.dat": b"x"}, created_at=now)
    result = apply_retention(osp(tmp_path), keep=1, protect="index-2026-11-01")
    assert result.kept == ["index-2026-11-01", "index-2026-11-03"]
    assert result.deleted == ["index-2026-11-02"]
    result = apply_retention(osp(tmp_path), keep=0, protect=None)
    assert result.kept == ["index-2026-11-03"]


def test_retention_warns_about_but_never_deletes_folders_without_a_verified_manifest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    for name in day_names(4):
        publish_tree(tmp_path, name, {"a.dat": b"x"}, created_at=now)
    make_tree(tmp_path / "index-2026-10-01", {"a.dat": b"copied by hand"})  # older, no manifest
    tampered = publish_tree(tmp_path, "index-2026-10-02", {"a.dat": b"x"}, created_at=now)
    (tampered / "MANIFEST.json").write_text("{not json")
    caplog.set_level(logging.WARNING, logger="include.gir_ops.backup")

    result = apply_retention(osp(tmp_path), keep=2, protect="index-2026-11-04")

    assert result.deleted == ["index-2026-11-01", "index-2026-11-02"]
    assert result.unverified_left == ["index-2026-10-01", "index-2026-10-02"]
    assert (tmp_path / "index-2026-10-01" / "a.dat").exists()
    assert (tmp_path / "index-2026-10-02" / "a.dat").exists()
    warnings = " | ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "NOT deleting" in warnings
    assert "index-2026-10-01: it has no verified manifest (no MANIFEST.json)" in warnings
    assert "index-2026-10-02: it has no verified manifest" in warnings


def test_retention_deletes_stale_partials_of_older_backups_and_keeps_newer_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    for name in ("index-2026-11-02", "index-2026-11-03"):
        publish_tree(tmp_path, name, {"a.dat": b"x"}, created_at=now)
    for name in ("index-2026-11-01", "index-2026-11-03", "index-2026-11-04"):
        make_tree(tmp_path / f"{name}.partial", {"a.dat": b"half"})
    caplog.set_level(logging.WARNING, logger="include.gir_ops.backup")

    result = apply_retention(osp(tmp_path), keep=7, protect="index-2026-11-03")

    assert result.partials_deleted == ["index-2026-11-01.partial", "index-2026-11-03.partial"]
    assert (tmp_path / "index-2026-11-04.partial").exists(), "a newer staging folder may still be resumed"
    assert result.deleted == []
    assert any("stale staging folder" in r.getMessage() for r in caplog.records)


def test_retention_refuses_links_prunes_the_rest_and_deletes_nothing_through_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    destination = tmp_path / "dst"
    for name in day_names(5):
        publish_tree(destination, name, {"a.dat": name.encode()}, created_at=now)
    inner = sentinel_folder(tmp_path / "inner-target")
    (destination / "index-2026-11-02" / "linked").symlink_to(inner, target_is_directory=True)
    top = sentinel_folder(tmp_path / "top-target")
    (destination / "index-2026-10-01").symlink_to(top, target_is_directory=True)
    stale = sentinel_folder(tmp_path / "stale-target")
    (destination / "index-2026-10-02.partial").symlink_to(stale, target_is_directory=True)

    with pytest.raises(BackupRefused) as refused:
        apply_retention(osp(destination), keep=1, protect="index-2026-11-05")

    message = str(refused.value)
    assert "refused 3 symbolic link(s)" in message
    assert "index-2026-10-01 (a link to" in message
    assert "index-2026-10-02.partial (a link to" in message
    assert "index-2026-11-02/linked" in message
    for folder in (inner, top, stale):
        assert snapshot(folder) == SENTINELS
    left = sorted(p.name for p in destination.iterdir())
    assert left == ["index-2026-10-01", "index-2026-10-02.partial", "index-2026-11-02", "index-2026-11-05"]
    assert (destination / "index-2026-11-02" / MANIFEST_NAME).exists(), "refused before anything"


# --- freshness ---------------------------------------------------------------------------------------------


def test_freshness_fails_with_the_age_of_the_newest_verified_backup(tmp_path: Path) -> None:
    now = time.time()
    publish_tree(tmp_path, "index-2026-11-01", {"a.dat": b"x"}, created_at=now - 80 * 3600)
    publish_tree(tmp_path, "index-2026-11-02", {"a.dat": b"x"}, created_at=now - 30 * 3600)
    make_tree(tmp_path / "index-2026-11-03", {"a.dat": b"unverified"})  # does not count
    with pytest.raises(BackupStale, match=r"index-2026-11-02, 30\.0 h old .*shipping\.max_age_hours=26"):
        check_freshness(osp(tmp_path), max_age_hours=26, site="DC2", now=now)
    fresh = check_freshness(osp(tmp_path), max_age_hours=48, site="DC2", now=now)
    assert fresh["backup_name"] == "index-2026-11-02"
    assert fresh["age_hours"] == 30.0


def test_freshness_fails_when_there_is_no_verified_backup_at_all(tmp_path: Path) -> None:
    make_tree(tmp_path / "index-2026-11-01.partial", {"a.dat": b"x"})
    with pytest.raises(BackupStale, match="no verified SpeechMiner backup at DC2"):
        check_freshness(osp(tmp_path), max_age_hours=26, site="DC2")
