"""Walking a backup tree: listing one backup, refusing what must not ship, backup names, the newest."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException
from fsspec.implementations.local import LocalFileSystem

from include.gir_ops.backup.errors import BackupNotFound, BackupRefused
from include.gir_ops.backup.readiness import backup_readiness
from include.gir_ops.backup.tasks import manifest_task
from include.gir_ops.backup.tree import (
    check_backup_name,
    list_backups,
    newest_backup,
    relative_name,
    scan_backup,
)
from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN, TopologyError, parse_topology
from include.gir_sim.demo_data import backup_folder_name
from tests.include.backup.backup_support import make_tree, osp, route_for, sample_files


def test_scan_lists_every_file_with_size_and_mtime_including_empty_and_non_ascii(tmp_path: Path) -> None:
    files = sample_files()
    folder = make_tree(tmp_path / "index-2026-11-20", files)
    listed = scan_backup(osp(folder))
    assert [item.path for item in listed] == sorted(files)
    assert {item.path: item.size for item in listed} == {path: len(data) for path, data in files.items()}
    assert all(item.mtime is not None and item.mtime > 0 for item in listed)


@pytest.mark.parametrize("target_is_dir", [False, True], ids=["link-to-file", "link-to-folder"])
def test_scan_refuses_a_symlink_and_names_it(tmp_path: Path, target_is_dir: bool) -> None:
    folder = make_tree(tmp_path / "index-1", {"a.dat": b"a"})
    outside = tmp_path / "outside"
    if target_is_dir:
        make_tree(outside, {"secret": b"s"})
    else:
        outside.write_bytes(b"secret")
    (folder / "segments").mkdir()
    (folder / "segments" / "evil").symlink_to(outside, target_is_directory=target_is_dir)
    with pytest.raises(BackupRefused, match=r"segments/evil in .* is a symbolic link"):
        scan_backup(osp(folder))


def test_scan_refuses_a_special_file(tmp_path: Path) -> None:
    folder = make_tree(tmp_path / "index-1", {"a.dat": b"a"})
    os.mkfifo(folder / "pipe")
    with pytest.raises(BackupRefused, match=r"pipe in .* is not a regular file"):
        scan_backup(osp(folder))


@pytest.mark.parametrize(
    "name",
    [
        "/r/index-1/../evil",
        "/r/index-1/a/../../evil",
        "/r/index-1/a//b",
        "/r/index-1/./a",
        "/r/index-1/a\\..\\b",
        "/r/index-1/line\nbreak",
        "/r/other/x",
        "/r/index-10/x",
    ],
)
def test_relative_name_refuses_names_escaping_the_folder(name: str) -> None:
    with pytest.raises(BackupRefused):
        relative_name("/r/index-1", name)


def test_relative_name_accepts_nested_and_non_ascii_names() -> None:
    assert relative_name("/r/index-1", "/r/index-1/meta/índice-ñ.idx") == "meta/índice-ñ.idx"


def test_scan_refuses_an_escaping_name_reported_by_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Object stores can hold keys like 'a/../../x'; the listing must refuse them, not normalise them."""
    folder = make_tree(tmp_path / "index-1", {"a.dat": b"a"})
    original = LocalFileSystem.ls

    def ls(fs: Any, path: str, detail: bool = False, **kwargs: Any) -> Any:
        entries = original(fs, path, detail=detail, **kwargs)
        if path.rstrip("/") == str(folder):
            entries.append({"name": f"{folder}/../../etc/passwd", "type": "file", "size": 1, "islink": False})
        return entries

    monkeypatch.setattr(LocalFileSystem, "ls", ls)
    with pytest.raises(BackupRefused, match="escapes the backup folder"):
        scan_backup(osp(folder))


def test_scan_refuses_a_file_named_like_the_destination_manifest(tmp_path: Path) -> None:
    folder = make_tree(tmp_path / "index-1", {"MANIFEST.json": b"{}"})
    with pytest.raises(BackupRefused, match="reserves"):
        scan_backup(osp(folder))


def test_newest_backup_is_the_last_in_natural_name_order(tmp_path: Path) -> None:
    for name in ("backup-9", "backup-10", "backup-2"):
        (tmp_path / "root" / name).mkdir(parents=True)
    (tmp_path / "root" / "latest").symlink_to(tmp_path / "root" / "backup-2")
    sequence = r"backup-[0-9]+"  # a deployment that numbers its backups sets shipping.backup_name_pattern
    assert list_backups(osp(tmp_path / "root"), pattern=sequence) == [
        "backup-2",
        "backup-9",
        "backup-10",
    ]
    assert newest_backup(osp(tmp_path / "root"), pattern=sequence) == "backup-10"


def test_no_backup_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackupNotFound, match="does not exist"):
        newest_backup(osp(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupNotFound, match="no backup folder under"):
        newest_backup(osp(tmp_path / "empty"))


# --- backup names ------------------------------------------------------------------------------------------


def test_a_backup_name_with_a_control_character_is_refused_and_never_logged_raw(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "src"
    make_tree(root / "index-2026-11-20", {"a.dat": b"x"})
    forged = "index-2026-11-21\n2026-11-21T03:30:00 INFO backup shipped OK"
    make_tree(root / forged, {"a.dat": b"x"})
    caplog.set_level(logging.DEBUG, logger="include.gir_ops.backup")

    assert newest_backup(osp(root)) == "index-2026-11-20"
    status = backup_readiness(f"file://{root}", ready_marker="a.dat", quiet_seconds=0)
    assert status.backup_name == "index-2026-11-20"
    with pytest.raises(AirflowFailException, match=r"contains a control character .*: refused"):
        manifest_task(route_for(tmp_path), forged)

    messages = [r.getMessage() for r in caplog.records]
    assert all("\n" not in message for message in messages), messages
    assert any("index-2026-11-21\\x0a2026-11-21T03:30:00" in message for message in messages)


def test_entries_that_are_not_backups_are_never_chosen_as_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_tree(root / "index-2026-11-20", {"a.dat": b"x"})
    for junk in ("tmp", "lost+found", ".snapshot", "tmp.Xk39fQ2", "latest", "index-2026-11-21.partial"):
        make_tree(root / junk, {"a.dat": b"not a backup"})
    (root / "index-2026-11-22").write_bytes(b"a file, not a folder")

    assert list_backups(osp(root)) == ["index-2026-11-20"]
    status = backup_readiness(f"file://{root}", ready_marker="a.dat", quiet_seconds=0)
    assert status.backup_name == "index-2026-11-20"

    (root / "index-2026-11-20").rename(root / "backup-final")
    with pytest.raises(BackupNotFound) as missing:
        newest_backup(osp(root))
    message = str(missing.value)
    assert "whose name matches shipping.backup_name_pattern" in message
    assert "ignored: .snapshot, backup-final, index-2026-11-21.partial, index-2026-11-22, latest" in message


@pytest.mark.parametrize(
    "name",
    [
        "index-2026-11-20",
        "SMIndexBackup_20261120_0200",
        "20261120",
        "index-2026-11-20T0200",
        "b_2026-01-31-full",
    ],
)
def test_the_default_backup_name_pattern_accepts_dated_folder_names(name: str) -> None:
    assert check_backup_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "tmp",
        "lost+found",
        ".snapshot",
        ".2026-11-20",
        "latest",
        "tmp.Xk39fQ2",
        "index-1",
        "index-2026-11-20.partial",
        "index-2026-13-01",
        "index-2026-11-20 copy",
    ],
)
def test_the_default_backup_name_pattern_refuses_what_is_not_a_dated_backup(name: str) -> None:
    with pytest.raises(BackupRefused):
        check_backup_name(name)


def test_the_demo_data_backup_names_match_the_default_and_the_example_topology(
    gir_factory: Callable[..., Any],
) -> None:
    name = backup_folder_name(date(2026, 11, 20))
    shipping = gir_factory().topology.shipping
    assert shipping.destination_may_be_link is False
    assert check_backup_name(name, DEFAULT_BACKUP_NAME_PATTERN) == name
    assert check_backup_name(name, shipping.backup_name_pattern) == name


def _shipping_topology(**shipping: Any) -> str:
    return yaml.safe_dump(
        {
            "primary_site": "DC1",
            "data_centers": [
                {"site": "DC1", "speechminer": {"index_backup": "file:///srv/backup"}},
                {"site": "DC2"},
            ],
            "shipping": {
                "from_site": "DC1",
                "to_site": "DC2",
                "destination": "file:///srv/replica",
                **shipping,
            },
        }
    )


def test_the_backup_name_pattern_is_validated_when_the_topology_loads() -> None:
    loaded = parse_topology(_shipping_topology(), "t.yaml").shipping
    assert loaded.backup_name_pattern == DEFAULT_BACKUP_NAME_PATTERN
    assert loaded.destination_may_be_link is False
    custom = parse_topology(_shipping_topology(backup_name_pattern=r"SM_[0-9]{8}"), "t.yaml").shipping
    assert custom.backup_name_pattern == r"SM_[0-9]{8}"
    with pytest.raises(
        TopologyError, match=r"shipping\.backup_name_pattern: 'index-\(' is not a valid regular"
    ):
        parse_topology(_shipping_topology(backup_name_pattern="index-("), "t.yaml")
    with pytest.raises(
        TopologyError, match=r"shipping\.backup_name_pattern: '\.\*' matches the folder name ''"
    ):
        parse_topology(_shipping_topology(backup_name_pattern=".*"), "t.yaml")
    with pytest.raises(TopologyError, match=r"shipping\.destination_may_be_link"):
        parse_topology(_shipping_topology(destination_may_be_link="sometimes"), "t.yaml")
