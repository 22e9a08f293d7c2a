"""The shipping code on its own: listing, streaming copy with resume, verification, publish, retention.

Everything runs on local folders through ObjectStoragePath (file://), with small chunk sizes so that
"streams in chunks" and "resumes mid-file" are exercised on small files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem

from include.gir_ops import backup
from include.gir_ops.backup import (
    BackupError,
    BackupNotFound,
    BackupRefused,
    BackupStale,
    ManifestEntry,
    PublishConflict,
    SourceChanged,
    SourceFile,
    VerificationFailed,
)
from include.gir_ops.backup_triggers import TRIGGER_CLASSPATH, BackupReadyTrigger

KIB = 1024
CHUNK = 64 * KIB
NON_ASCII = "meta/índice-ñ.idx"


def osp(path: Path) -> ObjectStoragePath:
    return ObjectStoragePath(f"file://{path}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def sample_files() -> dict[str, bytes]:
    return {
        "meta/deletions.log": b"",  # a legitimately empty file
        NON_ASCII: "ñandú".encode() * 10,
        "segments/shard-0/seg-00000.dat": os.urandom(300 * KIB),  # several chunks, not a multiple
        "segments/shard-1/seg-00001.dat": os.urandom(5 * KIB),
        "_BACKUP_COMPLETE": b"",
    }


def publish_tree(destination: Path, name: str, files: dict[str, bytes], *, created_at: float) -> Path:
    """A verified published backup, as the DAG leaves it."""
    folder = make_tree(destination / name, files)
    entries = [ManifestEntry(path, len(data), sha256(data)) for path, data in files.items()]
    document = backup.manifest_document(
        backup_name=name,
        entries=entries,
        source=f"file:///src/{name}",
        source_site="DC1",
        site="DC2",
        created_at=created_at,
        shipped_at=created_at + 60,
    )
    (folder / backup.MANIFEST_NAME).write_text(json.dumps(document), encoding="utf-8")
    return folder


class WriteRecorder:
    """Records every file the local store opens for writing (path relative to a root, mode)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.opened: list[tuple[str, str]] = []
        original = LocalFileSystem._open
        recorder = self

        def _open(fs: Any, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
            if any(flag in mode for flag in "wa"):
                recorder.opened.append((os.path.relpath(path, root), mode))
            return original(fs, path, mode, *args, **kwargs)

        monkeypatch.setattr(LocalFileSystem, "_open", _open)

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.opened]


# --- listing -------------------------------------------------------------------------------------------


def test_scan_lists_every_file_with_size_and_mtime_including_empty_and_non_ascii(tmp_path: Path) -> None:
    files = sample_files()
    folder = make_tree(tmp_path / "index-2026-11-20", files)
    listed = backup.scan_backup(osp(folder))
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
        backup.scan_backup(osp(folder))


def test_scan_refuses_a_special_file(tmp_path: Path) -> None:
    folder = make_tree(tmp_path / "index-1", {"a.dat": b"a"})
    os.mkfifo(folder / "pipe")
    with pytest.raises(BackupRefused, match=r"pipe in .* is not a regular file"):
        backup.scan_backup(osp(folder))


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
        backup.relative_name("/r/index-1", name)


def test_relative_name_accepts_nested_and_non_ascii_names() -> None:
    assert backup.relative_name("/r/index-1", "/r/index-1/meta/índice-ñ.idx") == "meta/índice-ñ.idx"


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
        backup.scan_backup(osp(folder))


def test_scan_refuses_a_file_named_like_the_destination_manifest(tmp_path: Path) -> None:
    folder = make_tree(tmp_path / "index-1", {"MANIFEST.json": b"{}"})
    with pytest.raises(BackupRefused, match="reserves"):
        backup.scan_backup(osp(folder))


def test_newest_backup_is_the_last_in_natural_name_order(tmp_path: Path) -> None:
    for name in ("backup-9", "backup-10", "backup-2"):
        (tmp_path / "root" / name).mkdir(parents=True)
    (tmp_path / "root" / "latest").symlink_to(tmp_path / "root" / "backup-2")
    assert backup.list_backups(osp(tmp_path / "root")) == ["backup-2", "backup-9", "backup-10"]
    assert backup.newest_backup(osp(tmp_path / "root")) == "backup-10"


def test_no_backup_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackupNotFound, match="does not exist"):
        backup.newest_backup(osp(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupNotFound, match="no backup folder under"):
        backup.newest_backup(osp(tmp_path / "empty"))


# --- streaming copy ------------------------------------------------------------------------------------


def test_copy_hashes_the_source_while_copying_and_writes_identical_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sample_files()
    source = make_tree(tmp_path / "src" / "index-1", files)
    staging = tmp_path / "dst" / "index-1.partial"
    listed = backup.scan_backup(osp(source))
    writes = WriteRecorder(monkeypatch, staging)
    result = backup.copy_backup(osp(source), listed, osp(staging), last="_BACKUP_COMPLETE", chunk_size=CHUNK)
    assert {e.path: (e.size, e.sha256) for e in result.entries} == {
        path: (len(data), sha256(data)) for path, data in files.items()
    }
    for path, data in files.items():
        assert (staging / path).read_bytes() == data
    assert (staging / "meta/deletions.log").stat().st_size == 0
    assert result.bytes_copied == sum(len(d) for d in files.values())
    assert writes.paths[-1] == "_BACKUP_COMPLETE", "the ready marker must be copied last"
    assert sorted(writes.paths) == sorted(files)


def test_copy_and_hashing_use_constant_memory(tmp_path: Path) -> None:
    """A file 100x the chunk size costs about one chunk of memory, not the file."""
    size = 100 * CHUNK  # 6.25 MiB
    source = make_tree(tmp_path / "src" / "index-1", {"big.dat": os.urandom(size)})
    listed = backup.scan_backup(osp(source))
    tracemalloc.start()
    try:
        backup.copy_backup(osp(source), listed, osp(tmp_path / "dst" / "index-1.partial"), chunk_size=CHUNK)
        _, copy_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        backup.build_manifest(osp(source), chunk_size=CHUNK)
        _, hash_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert copy_peak < 6 * CHUNK, f"copy peaked at {copy_peak} bytes for a {size}-byte file"
    assert hash_peak < 6 * CHUNK, f"hashing peaked at {hash_peak} bytes for a {size}-byte file"


def test_resume_keeps_good_staged_files_appends_a_truncated_one_and_copies_only_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "good.dat": os.urandom(200 * KIB),
        "truncated.dat": os.urandom(300 * KIB),
        "corrupt.dat": os.urandom(100 * KIB),
        "missing.dat": os.urandom(150 * KIB),
        "empty.log": b"",
    }
    source = make_tree(tmp_path / "src" / "index-1", files)
    staging = tmp_path / "dst" / "index-1.partial"
    damaged = bytearray(files["corrupt.dat"])
    damaged[1234] ^= 0xFF
    make_tree(
        staging,
        {
            "good.dat": files["good.dat"],
            "truncated.dat": files["truncated.dat"][: 123 * KIB + 7],  # the crash hit mid-chunk
            "corrupt.dat": bytes(damaged),  # same size, different bytes
            "empty.log": b"",
            "leftover.tmp": b"not in the source",
        },
    )
    good_before = os.stat(staging / "good.dat")
    writes = WriteRecorder(monkeypatch, staging)

    result = backup.copy_backup(osp(source), backup.scan_backup(osp(source)), osp(staging), chunk_size=CHUNK)

    assert sorted(result.files_kept) == ["empty.log", "good.dat"]
    assert result.files_resumed == ["truncated.dat"]
    assert sorted(result.files_copied) == ["corrupt.dat", "missing.dat"]
    assert result.extras_removed == ["leftover.tmp"]
    missing_bytes = (300 * KIB - (123 * KIB + 7)) + 100 * KIB + 150 * KIB
    assert result.bytes_copied == missing_bytes
    assert sorted(writes.opened) == [("corrupt.dat", "wb"), ("missing.dat", "wb"), ("truncated.dat", "ab")]
    good_after = os.stat(staging / "good.dat")
    assert (good_after.st_ino, good_after.st_mtime_ns) == (good_before.st_ino, good_before.st_mtime_ns)
    for path, data in files.items():
        assert (staging / path).read_bytes() == data, path
    assert not (staging / "leftover.tmp").exists()
    assert {e.path: e.sha256 for e in result.entries} == {p: sha256(d) for p, d in files.items()}


def test_a_staged_file_that_is_not_a_prefix_of_the_source_is_copied_again(tmp_path: Path) -> None:
    data = os.urandom(200 * KIB)
    source = make_tree(tmp_path / "src" / "index-1", {"seg.dat": data})
    staging = make_tree(tmp_path / "dst" / "index-1.partial", {"seg.dat": b"X" + data[1 : 50 * KIB]})
    result = backup.copy_backup(osp(source), backup.scan_backup(osp(source)), osp(staging), chunk_size=CHUNK)
    assert result.files_copied == ["seg.dat"]
    assert result.files_resumed == []
    assert result.bytes_copied == len(data)
    assert (staging / "seg.dat").read_bytes() == data


def test_copy_fails_when_the_source_is_still_being_written(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src" / "index-1", {"seg.dat": os.urandom(10 * KIB)})
    listed = backup.scan_backup(osp(source))
    with (source / "seg.dat").open("ab") as handle:  # SpeechMiner appends after the listing
        handle.write(b"more")
    with pytest.raises(SourceChanged, match="still writing"):
        backup.copy_backup(osp(source), listed, osp(tmp_path / "dst" / "index-1.partial"), chunk_size=CHUNK)


def test_progress_is_logged_on_a_steady_clock_and_once_at_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One fake second per chunk, a line every 10 s: the pace follows time, not files or chunks."""
    files = {f"seg-{i}.dat": os.urandom(8 * CHUNK) for i in range(5)}  # 8 chunks each
    source = make_tree(tmp_path / "src" / "index-1", files)
    ticks = iter(range(10_000))
    caplog.set_level(logging.INFO, logger="include.gir_ops.backup")
    backup.copy_backup(
        osp(source),
        backup.scan_backup(osp(source)),
        osp(tmp_path / "dst" / "index-1.partial"),
        chunk_size=CHUNK,
        progress_every=10,
        clock=lambda: float(next(ticks)),
    )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("copy index-1")]
    chunks = 5 * 8
    assert len(lines) == chunks // 10 + 1
    assert all("MB/s" in line and "%" in line for line in lines)
    assert "(25.0%)" in lines[0]
    assert " done: " in lines[-1]
    assert "(100.0%)" in lines[-1]


# --- verification and publishing -----------------------------------------------------------------------


def test_verify_names_every_damaged_missing_and_unexpected_file(tmp_path: Path) -> None:
    files = sample_files()
    folder = make_tree(tmp_path / "index-1.partial", files)
    entries = [ManifestEntry(p, len(d), sha256(d)) for p, d in files.items()]
    assert backup.verify_tree(osp(folder), entries, chunk_size=CHUNK) == []

    seg = folder / "segments/shard-0/seg-00000.dat"
    flipped = bytearray(seg.read_bytes())
    flipped[-1] ^= 0x01
    seg.write_bytes(bytes(flipped))
    (folder / "segments/shard-1/seg-00001.dat").write_bytes(b"short")
    (folder / NON_ASCII).unlink()
    (folder / "stray.tmp").write_bytes(b"?")

    problems = backup.verify_tree(osp(folder), entries, chunk_size=CHUNK)
    by_path = {p.path: p.reason for p in problems}
    assert set(by_path) == {
        "segments/shard-0/seg-00000.dat",
        "segments/shard-1/seg-00001.dat",
        NON_ASCII,
        "stray.tmp",
    }
    assert by_path["segments/shard-0/seg-00000.dat"].startswith("SHA-256")
    assert by_path["segments/shard-1/seg-00001.dat"].startswith("size 5 bytes")
    assert by_path[NON_ASCII] == "missing"
    message = str(VerificationFailed(str(folder), problems))
    assert "seg-00000.dat (SHA-256" in message
    assert NON_ASCII in message


def test_publish_is_one_rename_and_leaves_no_partial_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = make_tree(tmp_path / "dst" / "index-1.partial", {"a.dat": b"a"})
    final = tmp_path / "dst" / "index-1"
    document = {"format": backup.MANIFEST_FORMAT, "entries": [{"path": "a.dat", "size": 1}]}
    renames: list[tuple[str, str]] = []
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        assert (Path(src) / backup.MANIFEST_NAME).exists(), "the manifest is written before the rename"
        assert not Path(dst).exists(), "a reader must never see a half-built final folder"
        renames.append((src, dst))
        real_rename(src, dst)

    monkeypatch.setattr(backup.os, "rename", rename)
    backup.publish(osp(staging), osp(final), document)
    assert renames == [(str(staging), str(final))]
    assert not staging.exists()
    assert json.loads((final / backup.MANIFEST_NAME).read_text())["format"] == backup.MANIFEST_FORMAT


def test_a_failed_publish_leaves_nothing_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = make_tree(tmp_path / "dst" / "index-1.partial", {"a.dat": b"a"})

    def broken_rename(src: str, dst: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(backup.os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk went away"):
        backup.publish(osp(staging), osp(tmp_path / "dst" / "index-1"), {"entries": []})
    assert not (tmp_path / "dst" / "index-1").exists()
    assert (staging / "a.dat").read_bytes() == b"a"


def test_publish_never_replaces_an_existing_folder(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / "dst" / "index-1.partial", {"a.dat": b"a"})
    make_tree(tmp_path / "dst" / "index-1", {"keep.me": b"operator data"})
    with pytest.raises(PublishConflict, match="already exists"):
        backup.publish(osp(staging), osp(tmp_path / "dst" / "index-1"), {"entries": []})
    assert (tmp_path / "dst" / "index-1" / "keep.me").read_bytes() == b"operator data"


def test_an_edited_manifest_is_not_trusted(tmp_path: Path) -> None:
    folder = publish_tree(tmp_path, "index-1", {"a.dat": b"abc"}, created_at=time.time())
    assert backup.read_manifest(osp(folder)).manifest_sha256
    document = json.loads((folder / "MANIFEST.json").read_text())
    document["entries"][0]["size"] = 4
    (folder / "MANIFEST.json").write_text(json.dumps(document))
    with pytest.raises(BackupError, match="manifest_sha256 does not match"):
        backup.read_manifest(osp(folder))


def test_manifest_digest_ignores_order_and_depends_on_every_field() -> None:
    a, b = ManifestEntry("a", 1, "00"), ManifestEntry("b", 2, "11")
    assert backup.manifest_digest([a, b]) == backup.manifest_digest([b, a])
    assert backup.manifest_digest([a, b]) != backup.manifest_digest([a, ManifestEntry("b", 2, "12")])


# --- retention and freshness ---------------------------------------------------------------------------


def day_names(count: int) -> list[str]:
    return [f"index-2026-11-{day:02d}" for day in range(1, count + 1)]


def test_retention_keeps_the_newest_verified_and_deletes_older_ones(tmp_path: Path) -> None:
    now = time.time()
    for offset, name in enumerate(day_names(10)):
        publish_tree(tmp_path, name, {"a.dat": name.encode()}, created_at=now - (10 - offset) * 86400)
    result = backup.apply_retention(osp(tmp_path), keep=7, protect="index-2026-11-10")
    assert result.deleted == day_names(3)
    assert result.kept == day_names(10)[3:]
    assert sorted(p.name for p in tmp_path.iterdir()) == day_names(10)[3:]


def test_retention_never_deletes_the_backup_just_shipped_and_never_keeps_fewer_than_one(
    tmp_path: Path,
) -> None:
    now = time.time()
    for name in day_names(3):
        publish_tree(tmp_path, name, {"a.dat": b"x"}, created_at=now)
    result = backup.apply_retention(osp(tmp_path), keep=1, protect="index-2026-11-01")
    assert result.kept == ["index-2026-11-01", "index-2026-11-03"]
    assert result.deleted == ["index-2026-11-02"]
    result = backup.apply_retention(osp(tmp_path), keep=0, protect=None)
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

    result = backup.apply_retention(osp(tmp_path), keep=2, protect="index-2026-11-04")

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

    result = backup.apply_retention(osp(tmp_path), keep=7, protect="index-2026-11-03")

    assert result.partials_deleted == ["index-2026-11-01.partial", "index-2026-11-03.partial"]
    assert (tmp_path / "index-2026-11-04.partial").exists(), "a newer staging folder may still be resumed"
    assert result.deleted == []
    assert any("stale staging folder" in r.getMessage() for r in caplog.records)


def test_freshness_fails_with_the_age_of_the_newest_verified_backup(tmp_path: Path) -> None:
    now = time.time()
    publish_tree(tmp_path, "index-2026-11-01", {"a.dat": b"x"}, created_at=now - 80 * 3600)
    publish_tree(tmp_path, "index-2026-11-02", {"a.dat": b"x"}, created_at=now - 30 * 3600)
    make_tree(tmp_path / "index-2026-11-03", {"a.dat": b"unverified"})  # does not count
    with pytest.raises(BackupStale, match=r"index-2026-11-02, 30\.0 h old .*shipping\.max_age_hours=26"):
        backup.check_freshness(osp(tmp_path), max_age_hours=26, site="DC2", now=now)
    fresh = backup.check_freshness(osp(tmp_path), max_age_hours=48, site="DC2", now=now)
    assert fresh["backup_name"] == "index-2026-11-02"
    assert fresh["age_hours"] == 30.0


def test_freshness_fails_when_there_is_no_verified_backup_at_all(tmp_path: Path) -> None:
    make_tree(tmp_path / "index-2026-11-01.partial", {"a.dat": b"x"})
    with pytest.raises(BackupStale, match="no verified SpeechMiner backup at DC2"):
        backup.check_freshness(osp(tmp_path), max_age_hours=26, site="DC2")


# --- readiness and the deferred wait -------------------------------------------------------------------


def test_readiness_with_a_marker_waits_for_the_marker(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root / "index-1", {"a.dat": b"x"})
    make_tree(root / "index-2", {"a.dat": b"x"})
    status = backup.backup_readiness(f"file://{root}", ready_marker="_DONE", quiet_seconds=0)
    assert (status.backup_name, status.complete, status.reason) == (
        "index-2",
        False,
        "marker _DONE not found",
    )
    (root / "index-2" / "_DONE").write_bytes(b"")
    status = backup.backup_readiness(f"file://{root}", ready_marker="_DONE", quiet_seconds=0)
    assert status.complete and status.reason == "marker _DONE found"


def test_readiness_without_a_marker_needs_a_quiet_period_and_sees_changes_itself(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = make_tree(root / "index-1", {"a.dat": b"x"})
    url = f"file://{root}"
    now = time.time()
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now)
    assert not status.complete and status.reason.startswith("still changing")
    old = now - 3600
    os.utime(folder / "a.dat", (old, old))
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now)
    assert status.complete, status.reason
    # A change with an old mtime (a copy that preserves times, a skewed clock) still restarts the period.
    (folder / "b.dat").write_bytes(b"y")
    os.utime(folder / "b.dat", (old, old))
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 1, previous=status)
    assert not status.complete
    assert status.last_change == now + 1
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 61, previous=status)
    assert status.complete


def run_trigger(trigger: BackupReadyTrigger) -> dict[str, Any]:
    async def first_event() -> Any:
        return await anext(trigger.run())

    return asyncio.run(first_event()).payload


def trigger_for(root: Path, **kwargs: Any) -> BackupReadyTrigger:
    settings: dict[str, Any] = {
        "source_root": f"file://{root}",
        "ready_marker": "_BACKUP_COMPLETE",
        "quiet_seconds": 0.0,
        "poll_seconds": 0.05,
        "deadline": time.time() + 5,
        "wait_minutes": 0.1,
    }
    settings.update(kwargs)
    return BackupReadyTrigger(**settings)


def test_trigger_serializes_to_an_importable_class_with_plain_kwargs(tmp_path: Path) -> None:
    classpath, kwargs = trigger_for(tmp_path).serialize()
    assert classpath == TRIGGER_CLASSPATH
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)


def test_trigger_fires_when_the_marker_appears(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = make_tree(root / "index-1", {"a.dat": b"x"})
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
    assert event["backup_name"] == "index-1"
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


# --- the task functions --------------------------------------------------------------------------------


def route_for(tmp_path: Path, **overrides: Any) -> backup.ShippingRoute:
    settings: dict[str, Any] = {
        "from_site": "DC1",
        "to_site": "DC2",
        "source_root": f"file://{tmp_path}/src",
        "destination": f"file://{tmp_path}/dst",
        "keep": 7,
        "ready_marker": None,
        "quiet_minutes": 0,
        "max_age_hours": 26,
        "wait_timeout_minutes": 1,
        "poll_seconds": 1,
    }
    settings.update(overrides)
    return backup.ShippingRoute(**settings)


def ship(route: backup.ShippingRoute, name: str) -> dict[str, Any]:
    plan = backup.manifest_task(route, name, chunk_size=CHUNK)
    copied = backup.copy_task(route, plan, chunk_size=CHUNK)
    return backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)


def test_a_published_backup_that_still_verifies_is_not_copied_again(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    make_tree(tmp_path / "src" / "index-1", sample_files())
    route = route_for(tmp_path)
    ship(route, "index-1")
    plan = backup.manifest_task(route, "index-1", chunk_size=CHUNK)
    assert plan["already_present"] is True
    with pytest.raises(AirflowSkipException, match="already present and verified at DC2"):
        backup.copy_task(route, plan)


def test_a_damaged_published_backup_is_withdrawn_and_only_the_damage_reshipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = sample_files()
    make_tree(tmp_path / "src" / "index-1", files)
    route = route_for(tmp_path)
    ship(route, "index-1")
    damaged = tmp_path / "dst" / "index-1" / NON_ASCII
    damaged.write_bytes(b"X" * len(files[NON_ASCII]))

    plan = backup.manifest_task(route, "index-1", chunk_size=CHUNK)

    assert plan["already_present"] is False
    assert plan["repaired"] == [NON_ASCII]
    assert not (tmp_path / "dst" / "index-1").exists(), "withdrawn before anything else happens"
    assert any(r.levelno == logging.ERROR and NON_ASCII in r.getMessage() for r in caplog.records)
    copied = backup.copy_task(route, plan, chunk_size=CHUNK)
    assert copied["files_copied"] == [NON_ASCII]
    assert copied["bytes_copied"] == len(files[NON_ASCII])
    backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert (tmp_path / "dst" / "index-1" / NON_ASCII).read_bytes() == files[NON_ASCII]


def test_a_final_folder_without_a_manifest_is_never_overwritten(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    make_tree(tmp_path / "src" / "index-1", {"a.dat": b"x"})
    make_tree(tmp_path / "dst" / "index-1", {"a.dat": b"someone else's"})
    with pytest.raises(AirflowFailException, match=r"without a MANIFEST\.json"):
        backup.manifest_task(route_for(tmp_path), "index-1")
    assert (tmp_path / "dst" / "index-1" / "a.dat").read_bytes() == b"someone else's"


def test_verify_and_publish_refuses_a_staged_file_damaged_after_copying(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    files = sample_files()
    make_tree(tmp_path / "src" / "index-1", files)
    route = route_for(tmp_path)
    plan = backup.manifest_task(route, "index-1", chunk_size=CHUNK)
    copied = backup.copy_task(route, plan, chunk_size=CHUNK)
    staged = tmp_path / "dst" / "index-1.partial" / "segments/shard-1/seg-00001.dat"
    staged.write_bytes(b"\0" * staged.stat().st_size)
    with pytest.raises(AirflowFailException, match=r"segments/shard-1/seg-00001\.dat \(SHA-256"):
        backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / "index-1").exists()


def test_route_from_the_default_topology_reads_the_shipping_section(gir_factory: Callable[..., Any]) -> None:
    gir = gir_factory({"shipping": {"keep": 3, "quiet_minutes": 0.05}})
    route = backup.ShippingRoute.from_topology(gir.topology)
    assert (route.from_site, route.to_site, route.keep, route.quiet_minutes) == ("DC1", "DC2", 3, 0.05)
    assert route.source_root == gir.topology.site("DC1").speechminer.index_backup


def test_source_file_listing_round_trips_through_the_plan(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / "index-1", sample_files())
    plan = backup.manifest_task(route_for(tmp_path), "index-1")
    restored = [SourceFile(*row) for row in json.loads(json.dumps(plan["files"]))]
    assert restored == backup.scan_backup(osp(tmp_path / "src" / "index-1"))
