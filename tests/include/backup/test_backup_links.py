"""The destination is never escaped through links: staging, published copy, inside staging, the root."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.gir_ops.backup import transfer
from include.gir_ops.backup.destination import publish, unpublish
from include.gir_ops.backup.errors import BackupRefused
from include.gir_ops.backup.spec import MANIFEST_NAME
from include.gir_ops.backup.tasks import freshness_task, manifest_task, retention_task
from include.gir_ops.backup.transfer import copy_backup
from include.gir_ops.backup.tree import scan_backup
from tests.include.backup.backup_support import (
    NAME,
    SENTINELS,
    make_tree,
    osp,
    publish_tree,
    route_for,
    sample_files,
    sentinel_folder,
    ship,
    snapshot,
)


def test_a_link_at_the_staging_name_is_refused_and_nothing_outside_changes(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    outside = sentinel_folder(tmp_path / "elsewhere")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / f"{NAME}.partial").symlink_to(outside, target_is_directory=True)
    route = route_for(tmp_path)

    with pytest.raises(
        AirflowFailException, match=rf"{NAME}\.partial \(staging folder\) is a symbolic link to "
    ):
        ship(route, NAME)
    with pytest.raises(BackupRefused, match=r"is a symbolic link to .*elsewhere"):
        copy_backup(
            osp(tmp_path / "src" / NAME),
            scan_backup(osp(tmp_path / "src" / NAME)),
            osp(tmp_path / "dst" / f"{NAME}.partial"),
        )

    assert snapshot(outside) == SENTINELS
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [f"{NAME}.partial"]
    assert (tmp_path / "dst" / f"{NAME}.partial").is_symlink()


def test_a_link_at_the_published_name_is_refused_and_never_unpublished_through(tmp_path: Path) -> None:
    """The observed attack: <name> links to another folder with a valid manifest of different files."""
    make_tree(tmp_path / "src" / NAME, {"a.dat": b"source"})
    other = publish_tree(
        tmp_path / "other-app", "their-backup", {"theirs.dat": b"theirs"}, created_at=time.time()
    )
    before = snapshot(other)
    (tmp_path / "dst").mkdir()
    final = tmp_path / "dst" / NAME
    final.symlink_to(other, target_is_directory=True)
    route = route_for(tmp_path)

    with pytest.raises(AirflowFailException, match=rf"{NAME} \(published backup\) is a symbolic link to "):
        manifest_task(route, NAME)
    with pytest.raises(BackupRefused, match=r"published backup\) is a symbolic link"):
        unpublish(osp(final), osp(tmp_path / "dst" / f"{NAME}.partial"))
    staging = make_tree(tmp_path / "dst" / f"{NAME}.partial", {"a.dat": b"source"})
    with pytest.raises(BackupRefused, match=r"published backup\) is a symbolic link"):
        publish(osp(staging), osp(final), {"entries": []})

    assert snapshot(other) == before
    assert final.is_symlink()
    assert not (staging / MANIFEST_NAME).exists()


def test_a_link_inside_the_staging_folder_is_refused_even_when_it_appears_mid_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_tree(tmp_path / "src" / NAME, {"a.dat": b"a" * 10, "segments/x.dat": b"x" * 10})
    outside = sentinel_folder(tmp_path / "elsewhere")
    staging = tmp_path / "dst" / f"{NAME}.partial"
    listed = scan_backup(osp(source))

    # Present before the copy: refused by the staging listing, naming it.
    staging.mkdir(parents=True)
    (staging / "segments").symlink_to(outside, target_is_directory=True)
    with pytest.raises(
        BackupRefused,
        match=r"partial/segments \(inside the staging folder\) is a symbolic link to .*elsewhere",
    ):
        copy_backup(osp(source), listed, osp(staging))
    assert (staging / "segments").is_symlink(), "refused, not deleted"
    (staging / "segments").unlink()

    # Made after the listing, between two files: the check before every write still refuses it.
    real_copy_file = transfer._FileCopy.copy

    def copy_then_plant_a_link(self: Any) -> Any:
        entry = real_copy_file(self)
        if not (staging / "segments").exists():
            (staging / "segments").symlink_to(outside, target_is_directory=True)
        return entry

    monkeypatch.setattr(transfer._FileCopy, "copy", copy_then_plant_a_link)
    with pytest.raises(BackupRefused, match=r"segments \(staging folder\) is a symbolic link"):
        copy_backup(osp(source), listed, osp(staging))
    assert snapshot(outside) == SENTINELS


def test_a_destination_root_that_is_a_link_is_refused_unless_configured(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    mount = tmp_path / "mnt-replica"
    mount.mkdir()
    (tmp_path / "dst").symlink_to(mount, target_is_directory=True)

    refused = route_for(tmp_path)
    for task in (
        lambda: manifest_task(refused, NAME),
        lambda: retention_task(refused, {"backup_name": NAME}),
        lambda: freshness_task(refused),
    ):
        with pytest.raises(AirflowFailException, match=r"shipping\.destination_may_be_link: true"):
            task()
    assert list(mount.iterdir()) == []

    allowed = route_for(tmp_path, destination_may_be_link=True)
    ship(allowed, NAME)
    assert (mount / NAME / MANIFEST_NAME).exists()
    assert freshness_task(allowed)["backup_name"] == NAME
