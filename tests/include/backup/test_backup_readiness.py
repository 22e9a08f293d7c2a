"""Is the newest source backup complete: the marker, the quiet period, two matching scans."""

from __future__ import annotations

import os
import time
from pathlib import Path

from include.gir_ops.backup.readiness import backup_readiness
from tests.include.backup.backup_support import NAME, make_tree, preserved_times_copy


def test_readiness_with_a_marker_waits_for_the_marker(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root / "index-2026-11-01", {"a.dat": b"x"})
    make_tree(root / "index-2026-11-02", {"a.dat": b"x"})
    status = backup_readiness(f"file://{root}", ready_marker="_DONE", quiet_seconds=0)
    assert (status.backup_name, status.complete, status.reason) == (
        "index-2026-11-02",
        False,
        "marker _DONE not found",
    )
    (root / "index-2026-11-02" / "_DONE").write_bytes(b"")
    status = backup_readiness(f"file://{root}", ready_marker="_DONE", quiet_seconds=0)
    assert status.complete and status.reason == "marker _DONE found"


def test_readiness_without_a_marker_needs_a_quiet_period_and_sees_changes_itself(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = make_tree(root / "index-2026-11-01", {"a.dat": b"x"})
    url = f"file://{root}"
    now = time.time()
    status = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now)
    assert not status.complete and status.reason.startswith("still changing")
    old = now - 3600
    os.utime(folder / "a.dat", (old, old))
    os.utime(folder, (old, old))
    # Old mtimes everywhere, but this scan sees a listing the previous one did not: not complete yet.
    status = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now, previous=status)
    assert not status.complete, status.reason
    status = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 60, previous=status)
    assert status.complete, status.reason
    assert status.reason == "quiet for 60 s (>= 60 s), the same listing on two scans 60 s apart"
    # A change with an old mtime (a copy that preserves times, a skewed clock) still restarts the period.
    (folder / "b.dat").write_bytes(b"y")
    os.utime(folder / "b.dat", (old, old))
    os.utime(folder, (old, old))  # even the folder's mtime kept old, as cp -p and robocopy do
    status = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 61, previous=status)
    assert not status.complete
    assert status.last_change == now + 61
    status = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 121, previous=status)
    assert status.complete


def test_a_copy_that_keeps_old_mtimes_is_not_complete_on_one_look(tmp_path: Path) -> None:
    now = time.time()
    preserved_times_copy(tmp_path / "root", NAME, when=now - 86400)
    url = f"file://{tmp_path / 'root'}"

    first = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now)
    assert not first.complete
    assert first.reason.startswith("first look at this listing")
    soon = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 30, previous=first)
    assert not soon.complete
    assert soon.reason == "same listing for 30 s of the 60 s required"
    later = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 60, previous=soon)
    assert later.complete, later.reason
    assert later.reason.startswith("quiet for 60 s")


def test_a_recent_folder_mtime_keeps_a_backup_with_old_file_mtimes_incomplete(tmp_path: Path) -> None:
    """A file renamed or deleted inside: only the folder's mtime moves."""
    now = time.time()
    folder = preserved_times_copy(tmp_path / "root", NAME, when=now - 86400)
    os.utime(folder / "segments", (now - 5, now - 5))
    url = f"file://{tmp_path / 'root'}"
    earlier = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now - 120)

    status = backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now, previous=earlier)

    assert status.signature == earlier.signature, "the same listing on both scans"
    assert not status.complete
    assert status.last_change == now - 5
    assert status.reason == "still changing: quiet for 5 s of the 60 s required"
