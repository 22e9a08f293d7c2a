"""Publishing in one step, swapping a replaced copy; folder fsync or rename faults publish nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.gir_ops.backup.destination import publish
from include.gir_ops.backup.errors import PublishConflict, WriteFailed
from include.gir_ops.backup.manifest import read_manifest
from include.gir_ops.backup.route import ShippingRoute
from include.gir_ops.backup.spec import MANIFEST_FORMAT, MANIFEST_NAME
from include.gir_ops.backup.tasks import copy_task, manifest_task, verify_and_publish_task
from tests.include.backup.backup_support import (
    CHUNK,
    NAME,
    NON_ASCII,
    eio,
    fail_fsync_of,
    make_tree,
    osp,
    published_and_verified,
    rewrite_source,
    route_for,
    sample_files,
    ship,
    staged_and_copied,
)


def test_publish_is_one_rename_and_leaves_no_partial_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = make_tree(tmp_path / "dst" / "index-1.partial", {"a.dat": b"a"})
    final = tmp_path / "dst" / "index-1"
    document = {"format": MANIFEST_FORMAT, "entries": [{"path": "a.dat", "size": 1}]}
    renames: list[tuple[str, str]] = []
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        assert (Path(src) / MANIFEST_NAME).exists(), "the manifest is written before the rename"
        assert not Path(dst).exists(), "a reader must never see a half-built final folder"
        renames.append((src, dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    publish(osp(staging), osp(final), document)
    assert renames == [(str(staging), str(final))]
    assert not staging.exists()
    assert json.loads((final / MANIFEST_NAME).read_text())["format"] == MANIFEST_FORMAT


def test_a_failed_publish_leaves_nothing_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = make_tree(tmp_path / "dst" / "index-1.partial", {"a.dat": b"a"})

    def broken_rename(src: str, dst: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk went away"):
        publish(osp(staging), osp(tmp_path / "dst" / "index-1"), {"entries": []})
    assert not (tmp_path / "dst" / "index-1").exists()
    assert (staging / "a.dat").read_bytes() == b"a"


def test_publish_never_replaces_an_existing_folder(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / "dst" / "index-1.partial", {"a.dat": b"a"})
    make_tree(tmp_path / "dst" / "index-1", {"keep.me": b"operator data"})
    with pytest.raises(PublishConflict, match="already exists"):
        publish(osp(staging), osp(tmp_path / "dst" / "index-1"), {"entries": []})
    assert (tmp_path / "dst" / "index-1" / "keep.me").read_bytes() == b"operator data"


# --- folder fsync and rename failures ----------------------------------------------------------------------


def test_a_folder_fsync_failure_before_the_rename_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, plan, copied = staged_and_copied(tmp_path)
    staging = tmp_path / "dst" / f"{NAME}.partial"
    fail_fsync_of(monkeypatch, lambda path: path == str(staging))
    with pytest.raises(WriteFailed, match=rf"fsync of the folder .*/{NAME}\.partial failed"):
        verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / NAME).exists()
    assert (staging / "meta/deletions.log").exists()


def test_a_folder_fsync_failure_after_the_rename_undoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, plan, copied = staged_and_copied(tmp_path)
    fail_fsync_of(monkeypatch, lambda path: path == str(tmp_path / "dst"))
    with pytest.raises(WriteFailed, match=r"fsync of the folder .*/dst failed"):
        verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [f"{NAME}.partial"]


def test_a_failed_rename_names_both_folders_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, plan, copied = staged_and_copied(tmp_path)
    monkeypatch.setattr(os, "rename", eio)
    with pytest.raises(WriteFailed, match=rf"renaming file://.*/{NAME}\.partial to file://.*/{NAME} failed"):
        verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / NAME).exists()


# --- a changed source never withdraws the good published copy first ----------------------------------------


def test_a_changed_source_keeps_the_old_copy_published_until_the_new_one_is_verified(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    ship(route, NAME)
    old = published_and_verified(tmp_path)
    new_data = rewrite_source(tmp_path)

    plan = manifest_task(route, NAME, chunk_size=CHUNK)
    assert plan["replace"] == read_manifest(osp(tmp_path / "dst" / NAME)).manifest_sha256
    assert published_and_verified(tmp_path) == old, "still published after the plan"
    copied = copy_task(route, plan, chunk_size=CHUNK)
    assert published_and_verified(tmp_path) == old, "still published while the new copy is staged"
    verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)

    assert (tmp_path / "dst" / NAME / "segments/shard-1/seg-00001.dat").read_bytes() == new_data
    published_and_verified(tmp_path)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [NAME], "no .partial or .retired left"


def rewritten_and_staged(
    tmp_path: Path,
) -> tuple[ShippingRoute, dict[str, Any], dict[str, Any], dict[str, bytes]]:
    """Shipped, then SpeechMiner rewrote the source and the new copy is staged: (route, plan, copied, old)."""
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    ship(route, NAME)
    old = published_and_verified(tmp_path)
    rewrite_source(tmp_path)
    plan = manifest_task(route, NAME, chunk_size=CHUNK)
    return route, plan, copy_task(route, plan, chunk_size=CHUNK), old


def test_a_new_copy_that_fails_verification_leaves_the_old_copy_published(tmp_path: Path) -> None:
    route, plan, copied, old = rewritten_and_staged(tmp_path)
    (tmp_path / "dst" / f"{NAME}.partial" / NON_ASCII).write_bytes(b"X" * 50)
    with pytest.raises(AirflowFailException, match="verification of"):
        verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert published_and_verified(tmp_path) == old


def test_a_swap_whose_second_rename_fails_puts_the_old_copy_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, plan, copied, old = rewritten_and_staged(tmp_path)
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        if src.endswith(".partial"):
            eio()
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(WriteFailed, match="renaming"):
        verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert published_and_verified(tmp_path) == old
    assert not (tmp_path / "dst" / f"{NAME}.retired").exists()


def test_a_swap_interrupted_between_the_renames_is_restored_by_the_next_run(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    ship(route, NAME)
    old = published_and_verified(tmp_path)
    (tmp_path / "dst" / NAME).rename(tmp_path / "dst" / f"{NAME}.retired")  # the worker died here

    plan = manifest_task(route, NAME, chunk_size=CHUNK)

    assert plan["already_present"] is True
    assert published_and_verified(tmp_path) == old
    assert not (tmp_path / "dst" / f"{NAME}.retired").exists()
