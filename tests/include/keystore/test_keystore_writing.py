"""Replacing one keystore: atomic, the previous kept as .bak-<UTC time>, never half-written, faults named.

Every fault test asserts what is on disk afterwards: the keystore exactly as it was (or the new one),
no temp file left, and the previous keystore recoverable from its .bak file.
"""

from __future__ import annotations

import errno
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops.keystore import writing
from include.gir_ops.keystore.writing import (
    ALREADY_CURRENT,
    CREATED,
    FAILED,
    REFUSED,
    REPLACED,
    replace_keystore,
)

NOW = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)
NEW = b"\xfe\xed\xfe\xed new keystore " * 40
OLD = b"\xfe\xed\xfe\xed old keystore " * 30


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replace(path: Path, *, expected: bytes | None = OLD, **kwargs: Any) -> writing.TargetResult:
    return replace_keystore(
        "rcs-dc2-a",
        f"file://{path}",
        NEW,
        sha256=sha(NEW),
        expected_sha256=sha(expected) if expected is not None else None,
        now=NOW,
        **kwargs,
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if writing.TEMP_SUFFIX in p.name)


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.bak-*"))


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    path = tmp_path / "dc2" / "rcs-a" / "keystore.jks"
    path.parent.mkdir(parents=True)
    path.write_bytes(OLD)
    path.chmod(0o640)
    return path


def test_replaces_atomically_and_keeps_the_previous_as_bak(keystore: Path) -> None:
    result = replace(keystore)

    assert result.status == REPLACED, result.detail
    assert keystore.read_bytes() == NEW
    assert oct(keystore.stat().st_mode & 0o777) == "0o640", "the keystore keeps its permissions"
    (backup,) = backups(keystore)
    assert backup.name == "keystore.jks.bak-20261130T120005Z"
    assert backup.read_bytes() == OLD
    assert result.backup == f"file://{backup}"
    assert (result.sha256_before, result.sha256_after) == (sha(OLD), sha(NEW))
    assert "read back" in result.detail
    assert leftovers(keystore.parent) == []


def test_creates_a_missing_keystore_without_a_backup(keystore: Path) -> None:
    keystore.unlink()
    result = replace(keystore, expected=None)
    assert result.status == CREATED, result.detail
    assert keystore.read_bytes() == NEW
    assert backups(keystore) == []


def test_second_run_finds_nothing_to_do_and_a_second_bak_never_overwrites_the_first(keystore: Path) -> None:
    assert replace(keystore).status == REPLACED
    again = replace(keystore, expected=NEW)
    assert again.status == ALREADY_CURRENT
    assert len(backups(keystore)) == 1
    keystore.write_bytes(OLD)  # drifted again in the same second: its own .bak, the first one kept
    assert replace(keystore).status == REPLACED
    assert [p.read_bytes() for p in backups(keystore)] == [OLD, OLD]
    assert backups(keystore)[1].name.endswith("Z-2")


def test_folder_missing_is_failed_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dc3" / "rcs-a" / "keystore.jks"
    result = replace(path, expected=None)
    assert result.status == FAILED
    assert "does not exist" in result.detail and str(path.parent) in result.detail
    assert not (tmp_path / "dc3").exists()


def test_read_only_folder_leaves_the_keystore_as_it_was(
    keystore: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores permission bits, so the folder's EROFS is injected where the temp file is created."""
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:
        if os.fspath(path).startswith(str(keystore.parent)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    result = replace(keystore)
    assert result.status == FAILED
    assert result.detail == "read-only file system: the keystore was left as it was"
    assert keystore.read_bytes() == OLD
    assert leftovers(keystore.parent) == [] and backups(keystore) == []


def test_disk_full_mid_write_is_never_half_written(keystore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = writing.write_all

    def half_then_full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writing, "write_all", half_then_full)
    result = replace(keystore)
    assert result.status == FAILED
    assert result.detail.startswith("no space left on the device")
    assert keystore.read_bytes() == OLD, "the keystore is untouched"
    assert leftovers(keystore.parent) == [], "the half-written temp file is removed"
    assert backups(keystore) == []


def test_disk_full_while_keeping_the_backup(keystore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = writing.write_all, []

    def full_on_second(fd: int, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) == 2:  # the temp file was written; the backup copy fills the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(writing, "write_all", full_on_second)
    result = replace(keystore)
    assert result.status == FAILED
    assert keystore.read_bytes() == OLD
    assert leftovers(keystore.parent) == [] and backups(keystore) == []


def test_a_keystore_changed_since_preflight_is_refused_not_overwritten(keystore: Path) -> None:
    keystore.write_bytes(b"someone else's keystore")
    result = replace(keystore)
    assert result.status == REFUSED
    assert "changed by someone else since pre-flight" in result.detail
    assert keystore.read_bytes() == b"someone else's keystore"
    assert leftovers(keystore.parent) == [] and backups(keystore) == []
    # A keystore that appeared where pre-flight saw none is not overwritten either.
    assert replace(keystore, expected=None).status == REFUSED


def test_a_change_right_before_the_swap_is_refused(keystore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone copies a keystore in place (like ``cp``) while ours is being written."""
    real, calls = writing.write_all, []

    def meanwhile(fd: int, data: bytes) -> None:
        real(fd, data)
        calls.append(1)
        if len(calls) == 2:  # after the backup copy: the other person's cp lands now
            keystore.write_bytes(b"someone else's keystore")

    monkeypatch.setattr(writing, "write_all", meanwhile)
    result = replace(keystore)
    assert result.status == REFUSED, result.detail
    assert keystore.read_bytes() == b"someone else's keystore"
    (backup,) = backups(keystore)
    assert backup.read_bytes() == OLD, "the .bak is a copy, not a hard link an in-place write would change"
    assert leftovers(keystore.parent) == []


def test_links_are_never_followed(keystore: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jks"
    outside.write_bytes(OLD)
    keystore.unlink()
    keystore.symlink_to(outside)
    result = replace(keystore)
    assert result.status == REFUSED and "symbolic link" in result.detail
    assert outside.read_bytes() == OLD

    real_folder = tmp_path / "real"
    real_folder.mkdir()
    (real_folder / "keystore.jks").write_bytes(OLD)
    linked = tmp_path / "linked"
    linked.symlink_to(real_folder)
    refused = replace(linked / "keystore.jks")
    assert refused.status == REFUSED and "target_dir_may_be_link" in refused.detail
    assert (real_folder / "keystore.jks").read_bytes() == OLD
    allowed = replace(linked / "keystore.jks", folder_may_be_link=True)
    assert allowed.status == REPLACED, allowed.detail
    assert (real_folder / "keystore.jks").read_bytes() == NEW


def test_a_temp_file_left_by_a_dead_run_is_replaced_never_the_keystore(keystore: Path) -> None:
    stale = keystore.parent / f".{keystore.name}{writing.TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    assert replace(keystore).status == REPLACED
    assert not stale.exists()
