"""The shipping code on its own: listing, streaming copy with resume, verification, publish, retention.

Everything runs on local folders through ObjectStoragePath (file://), with small chunk sizes so that
"streams in chunks" and "resumes mid-file" are exercised on small files.
"""

from __future__ import annotations

import asyncio
import errno
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
    WriteFailed,
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
    sequence = r"backup-[0-9]+"  # a deployment that numbers its backups sets shipping.backup_name_pattern
    assert backup.list_backups(osp(tmp_path / "root"), pattern=sequence) == [
        "backup-2",
        "backup-9",
        "backup-10",
    ]
    assert backup.newest_backup(osp(tmp_path / "root"), pattern=sequence) == "backup-10"


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
    make_tree(root / "index-2026-11-01", {"a.dat": b"x"})
    make_tree(root / "index-2026-11-02", {"a.dat": b"x"})
    status = backup.backup_readiness(f"file://{root}", ready_marker="_DONE", quiet_seconds=0)
    assert (status.backup_name, status.complete, status.reason) == (
        "index-2026-11-02",
        False,
        "marker _DONE not found",
    )
    (root / "index-2026-11-02" / "_DONE").write_bytes(b"")
    status = backup.backup_readiness(f"file://{root}", ready_marker="_DONE", quiet_seconds=0)
    assert status.complete and status.reason == "marker _DONE found"


def test_readiness_without_a_marker_needs_a_quiet_period_and_sees_changes_itself(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = make_tree(root / "index-2026-11-01", {"a.dat": b"x"})
    url = f"file://{root}"
    now = time.time()
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now)
    assert not status.complete and status.reason.startswith("still changing")
    old = now - 3600
    os.utime(folder / "a.dat", (old, old))
    os.utime(folder, (old, old))
    # Old mtimes everywhere, but this scan sees a listing the previous one did not: not complete yet.
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now, previous=status)
    assert not status.complete, status.reason
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 60, previous=status)
    assert status.complete, status.reason
    assert status.reason == "quiet for 60 s (>= 60 s), the same listing on two scans 60 s apart"
    # A change with an old mtime (a copy that preserves times, a skewed clock) still restarts the period.
    (folder / "b.dat").write_bytes(b"y")
    os.utime(folder / "b.dat", (old, old))
    os.utime(folder, (old, old))  # even the folder's mtime kept old, as cp -p and robocopy do
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 61, previous=status)
    assert not status.complete
    assert status.last_change == now + 61
    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 121, previous=status)
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

    make_tree(tmp_path / "src" / "index-2026-11-01", sample_files())
    route = route_for(tmp_path)
    ship(route, "index-2026-11-01")
    plan = backup.manifest_task(route, "index-2026-11-01", chunk_size=CHUNK)
    assert plan["already_present"] is True
    with pytest.raises(AirflowSkipException, match="already present and verified at DC2"):
        backup.copy_task(route, plan)


def test_a_damaged_published_backup_is_withdrawn_and_only_the_damage_reshipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = sample_files()
    make_tree(tmp_path / "src" / "index-2026-11-01", files)
    route = route_for(tmp_path)
    ship(route, "index-2026-11-01")
    damaged = tmp_path / "dst" / "index-2026-11-01" / NON_ASCII
    damaged.write_bytes(b"X" * len(files[NON_ASCII]))

    plan = backup.manifest_task(route, "index-2026-11-01", chunk_size=CHUNK)

    assert plan["already_present"] is False
    assert plan["repaired"] == [NON_ASCII]
    assert not (tmp_path / "dst" / "index-2026-11-01").exists(), "withdrawn before anything else happens"
    assert any(r.levelno == logging.ERROR and NON_ASCII in r.getMessage() for r in caplog.records)
    copied = backup.copy_task(route, plan, chunk_size=CHUNK)
    assert copied["files_copied"] == [NON_ASCII]
    assert copied["bytes_copied"] == len(files[NON_ASCII])
    backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert (tmp_path / "dst" / "index-2026-11-01" / NON_ASCII).read_bytes() == files[NON_ASCII]


def test_a_final_folder_without_a_manifest_is_never_overwritten(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    make_tree(tmp_path / "src" / "index-2026-11-01", {"a.dat": b"x"})
    make_tree(tmp_path / "dst" / "index-2026-11-01", {"a.dat": b"someone else's"})
    with pytest.raises(AirflowFailException, match=r"without a MANIFEST\.json"):
        backup.manifest_task(route_for(tmp_path), "index-2026-11-01")
    assert (tmp_path / "dst" / "index-2026-11-01" / "a.dat").read_bytes() == b"someone else's"


def test_verify_and_publish_refuses_a_staged_file_damaged_after_copying(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    files = sample_files()
    make_tree(tmp_path / "src" / "index-2026-11-01", files)
    route = route_for(tmp_path)
    plan = backup.manifest_task(route, "index-2026-11-01", chunk_size=CHUNK)
    copied = backup.copy_task(route, plan, chunk_size=CHUNK)
    staged = tmp_path / "dst" / "index-2026-11-01.partial" / "segments/shard-1/seg-00001.dat"
    staged.write_bytes(b"\0" * staged.stat().st_size)
    with pytest.raises(AirflowFailException, match=r"segments/shard-1/seg-00001\.dat \(SHA-256"):
        backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / "index-2026-11-01").exists()


def test_route_from_the_default_topology_reads_the_shipping_section(gir_factory: Callable[..., Any]) -> None:
    gir = gir_factory({"shipping": {"keep": 3, "quiet_minutes": 0.05}})
    route = backup.ShippingRoute.from_topology(gir.topology)
    assert (route.from_site, route.to_site, route.keep, route.quiet_minutes) == ("DC1", "DC2", 3, 0.05)
    assert route.backup_name_pattern == gir.topology.shipping.backup_name_pattern
    assert route.destination_may_be_link is False
    assert route.source_root == gir.topology.site("DC1").speechminer.index_backup


def test_source_file_listing_round_trips_through_the_plan(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / "index-2026-11-01", sample_files())
    plan = backup.manifest_task(route_for(tmp_path), "index-2026-11-01")
    restored = [SourceFile(*row) for row in json.loads(json.dumps(plan["files"]))]
    assert restored == backup.scan_backup(osp(tmp_path / "src" / "index-2026-11-01"))


# --- issue 12: the destination is never escaped through links ------------------------------------------

SENTINELS = {"sentinel.txt": b"must stay", "stray.dat": b"not a file of any backup", "deep/keep.bin": b"k"}


def sentinel_folder(path: Path) -> Path:
    """A folder outside the destination holding files that must survive whatever the DAG does."""
    return make_tree(path, SENTINELS)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


NAME = "index-2026-11-01"


def test_a_link_at_the_staging_name_is_refused_and_nothing_outside_changes(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

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
        backup.copy_backup(
            osp(tmp_path / "src" / NAME),
            backup.scan_backup(osp(tmp_path / "src" / NAME)),
            osp(tmp_path / "dst" / f"{NAME}.partial"),
        )

    assert snapshot(outside) == SENTINELS
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [f"{NAME}.partial"]
    assert (tmp_path / "dst" / f"{NAME}.partial").is_symlink()


def test_a_link_at_the_published_name_is_refused_and_never_unpublished_through(tmp_path: Path) -> None:
    """The observed attack: <name> links to another folder with a valid manifest of different files."""
    from airflow.sdk.exceptions import AirflowFailException

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
        backup.manifest_task(route, NAME)
    with pytest.raises(BackupRefused, match=r"published backup\) is a symbolic link"):
        backup.unpublish(osp(final), osp(tmp_path / "dst" / f"{NAME}.partial"))
    staging = make_tree(tmp_path / "dst" / f"{NAME}.partial", {"a.dat": b"source"})
    with pytest.raises(BackupRefused, match=r"published backup\) is a symbolic link"):
        backup.publish(osp(staging), osp(final), {"entries": []})

    assert snapshot(other) == before
    assert final.is_symlink()
    assert not (staging / backup.MANIFEST_NAME).exists()


def test_a_link_inside_the_staging_folder_is_refused_even_when_it_appears_mid_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_tree(tmp_path / "src" / NAME, {"a.dat": b"a" * 10, "segments/x.dat": b"x" * 10})
    outside = sentinel_folder(tmp_path / "elsewhere")
    staging = tmp_path / "dst" / f"{NAME}.partial"
    listed = backup.scan_backup(osp(source))

    # Present before the copy: refused by the staging listing, naming it.
    staging.mkdir(parents=True)
    (staging / "segments").symlink_to(outside, target_is_directory=True)
    with pytest.raises(
        BackupRefused,
        match=r"partial/segments \(inside the staging folder\) is a symbolic link to .*elsewhere",
    ):
        backup.copy_backup(osp(source), listed, osp(staging))
    assert (staging / "segments").is_symlink(), "refused, not deleted"
    (staging / "segments").unlink()

    # Made after the listing, between two files: the check before every write still refuses it.
    real_copy_file = backup._copy_file

    def copy_then_plant_a_link(*args: Any, **kwargs: Any) -> Any:
        entry = real_copy_file(*args, **kwargs)
        if not (staging / "segments").exists():
            (staging / "segments").symlink_to(outside, target_is_directory=True)
        return entry

    monkeypatch.setattr(backup, "_copy_file", copy_then_plant_a_link)
    with pytest.raises(BackupRefused, match=r"segments \(staging folder\) is a symbolic link"):
        backup.copy_backup(osp(source), listed, osp(staging))
    assert snapshot(outside) == SENTINELS


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
        backup.apply_retention(osp(destination), keep=1, protect="index-2026-11-05")

    message = str(refused.value)
    assert "refused 3 symbolic link(s)" in message
    assert "index-2026-10-01 (a link to" in message
    assert "index-2026-10-02.partial (a link to" in message
    assert "index-2026-11-02/linked" in message
    for folder in (inner, top, stale):
        assert snapshot(folder) == SENTINELS
    left = sorted(p.name for p in destination.iterdir())
    assert left == ["index-2026-10-01", "index-2026-10-02.partial", "index-2026-11-02", "index-2026-11-05"]
    assert (destination / "index-2026-11-02" / backup.MANIFEST_NAME).exists(), "refused before anything"


def test_a_manifest_that_is_a_link_is_not_trusted(tmp_path: Path) -> None:
    now = time.time()
    real = publish_tree(tmp_path / "elsewhere", "index-2026-11-01", {"a.dat": b"x"}, created_at=now)
    forged = make_tree(tmp_path / "dst" / "index-2026-11-09", {"a.dat": b"x"})
    (forged / backup.MANIFEST_NAME).symlink_to(real / backup.MANIFEST_NAME)
    with pytest.raises(BackupError, match=r"MANIFEST\.json is a symbolic link to .*: not trusted"):
        backup.read_manifest(osp(forged))
    state = backup.destination_state(osp(tmp_path / "dst"))
    assert list(state.unverified) == ["index-2026-11-09"] and state.verified == {}
    with pytest.raises(BackupStale, match="no verified SpeechMiner backup"):
        backup.check_freshness(osp(tmp_path / "dst"), max_age_hours=26, site="DC2", now=now)


def test_a_destination_root_that_is_a_link_is_refused_unless_configured(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    make_tree(tmp_path / "src" / NAME, sample_files())
    mount = tmp_path / "mnt-replica"
    mount.mkdir()
    (tmp_path / "dst").symlink_to(mount, target_is_directory=True)

    refused = route_for(tmp_path)
    for task in (
        lambda: backup.manifest_task(refused, NAME),
        lambda: backup.retention_task(refused, {"backup_name": NAME}),
        lambda: backup.freshness_task(refused),
    ):
        with pytest.raises(AirflowFailException, match=r"shipping\.destination_may_be_link: true"):
            task()
    assert list(mount.iterdir()) == []

    allowed = route_for(tmp_path, destination_may_be_link=True)
    ship(allowed, NAME)
    assert (mount / NAME / backup.MANIFEST_NAME).exists()
    assert backup.freshness_task(allowed)["backup_name"] == NAME


# --- issue 12: backup names ----------------------------------------------------------------------------


def test_a_backup_name_with_a_control_character_is_refused_and_never_logged_raw(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    root = tmp_path / "src"
    make_tree(root / "index-2026-11-20", {"a.dat": b"x"})
    forged = "index-2026-11-21\n2026-11-21T03:30:00 INFO backup shipped OK"
    make_tree(root / forged, {"a.dat": b"x"})
    caplog.set_level(logging.DEBUG, logger="include.gir_ops.backup")

    assert backup.newest_backup(osp(root)) == "index-2026-11-20"
    status = backup.backup_readiness(f"file://{root}", ready_marker="a.dat", quiet_seconds=0)
    assert status.backup_name == "index-2026-11-20"
    with pytest.raises(AirflowFailException, match=r"contains a control character .*: refused"):
        backup.manifest_task(route_for(tmp_path), forged)

    messages = [r.getMessage() for r in caplog.records]
    assert all("\n" not in message for message in messages), messages
    assert any("index-2026-11-21\\x0a2026-11-21T03:30:00" in message for message in messages)


@pytest.mark.parametrize("forged", ["../escape", "..", ".", "a/b", f"{NAME}/../../escape", f"{NAME}.partial"])
def test_a_backup_name_from_xcom_never_leads_outside_the_destination(tmp_path: Path, forged: str) -> None:
    """XCom is writable through the REST API: every task re-checks the name it is given."""
    from airflow.sdk.exceptions import AirflowFailException

    make_tree(tmp_path / "src" / NAME, {"a.dat": b"x"})
    make_tree(tmp_path / "src" / "escape", {"a.dat": b"x"})
    route = route_for(tmp_path)
    plan = backup.manifest_task(route, NAME)
    forged_plan = {**plan, "backup_name": forged}
    copied = {"entries": [["a.dat", 1, sha256(b"x")]], "backup_name": forged}
    for task in (
        lambda: backup.manifest_task(route, forged),
        lambda: backup.copy_task(route, forged_plan),
        lambda: backup.verify_and_publish_task(route, forged_plan, copied),
        lambda: backup.retention_task(route, forged_plan),
    ):
        with pytest.raises(AirflowFailException, match=r"refused|not a backup folder name|reserves"):
            task()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"], "nothing created beside the destination"
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["escape", NAME]


def test_entries_that_are_not_backups_are_never_chosen_as_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_tree(root / "index-2026-11-20", {"a.dat": b"x"})
    for junk in ("tmp", "lost+found", ".snapshot", "tmp.Xk39fQ2", "latest", "index-2026-11-21.partial"):
        make_tree(root / junk, {"a.dat": b"not a backup"})
    (root / "index-2026-11-22").write_bytes(b"a file, not a folder")

    assert backup.list_backups(osp(root)) == ["index-2026-11-20"]
    status = backup.backup_readiness(f"file://{root}", ready_marker="a.dat", quiet_seconds=0)
    assert status.backup_name == "index-2026-11-20"

    (root / "index-2026-11-20").rename(root / "backup-final")
    with pytest.raises(BackupNotFound) as missing:
        backup.newest_backup(osp(root))
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
    assert backup.check_backup_name(name) == name


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
        backup.check_backup_name(name)


def test_the_demo_data_backup_names_match_the_default_and_the_example_topology(
    gir_factory: Callable[..., Any],
) -> None:
    from datetime import date

    from include.gir_ops.simulator.demo_data import backup_folder_name
    from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN

    name = backup_folder_name(date(2026, 11, 20))
    shipping = gir_factory().topology.shipping
    assert shipping.destination_may_be_link is False
    assert backup.check_backup_name(name, DEFAULT_BACKUP_NAME_PATTERN) == name
    assert backup.check_backup_name(name, shipping.backup_name_pattern) == name


def _shipping_topology(**shipping: Any) -> str:
    import yaml

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
    from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN, TopologyError, parse_topology

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


# --- issue 12: fsync, close and rename failures --------------------------------------------------------


def eio(*_: Any) -> None:
    raise OSError(errno.EIO, "Input/output error")


def test_an_fsync_failure_fails_the_copy_and_nothing_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    plan = backup.manifest_task(route, NAME, chunk_size=CHUNK)
    monkeypatch.setattr(backup.os, "fsync", eio)

    with pytest.raises(
        WriteFailed, match=rf"fsync of file://.*/{NAME}\.partial/_BACKUP_COMPLETE failed \(\[Errno 5\]"
    ):
        backup.copy_task(route, plan, chunk_size=CHUNK)

    assert not (tmp_path / "dst" / NAME).exists()
    assert not (tmp_path / "dst" / f"{NAME}.partial" / "_BACKUP_COMPLETE").exists(), "a retry must rewrite it"


def test_a_close_failure_fails_the_copy_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsspec.implementations.local import LocalFileOpener

    make_tree(tmp_path / "src" / NAME, {"seg.dat": os.urandom(3 * CHUNK)})
    route = route_for(tmp_path)
    plan = backup.manifest_task(route, NAME, chunk_size=CHUNK)
    real_close = LocalFileOpener.close

    def close(self: Any) -> None:
        real_close(self)
        if "w" in self.mode or "a" in self.mode:
            eio()

    monkeypatch.setattr(LocalFileOpener, "close", close)
    with pytest.raises(WriteFailed, match=rf"close of file://.*/{NAME}\.partial/seg\.dat failed"):
        backup.copy_task(route, plan, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / NAME).exists()


def fail_fsync_of(monkeypatch: pytest.MonkeyPatch, wanted: Callable[[str], bool]) -> None:
    """os.fsync fails with EIO for the open file descriptors whose path ``wanted`` selects."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if wanted(os.readlink(f"/proc/self/fd/{fd}")):
            eio()
        real_fsync(fd)

    monkeypatch.setattr(backup.os, "fsync", fsync)


def staged_and_copied(tmp_path: Path) -> tuple[backup.ShippingRoute, dict[str, Any], dict[str, Any]]:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    plan = backup.manifest_task(route, NAME, chunk_size=CHUNK)
    return route, plan, backup.copy_task(route, plan, chunk_size=CHUNK)


def test_a_folder_fsync_failure_before_the_rename_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, plan, copied = staged_and_copied(tmp_path)
    staging = tmp_path / "dst" / f"{NAME}.partial"
    fail_fsync_of(monkeypatch, lambda path: path == str(staging))
    with pytest.raises(WriteFailed, match=rf"fsync of the folder .*/{NAME}\.partial failed"):
        backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / NAME).exists()
    assert (staging / "meta/deletions.log").exists()


def test_a_folder_fsync_failure_after_the_rename_undoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, plan, copied = staged_and_copied(tmp_path)
    fail_fsync_of(monkeypatch, lambda path: path == str(tmp_path / "dst"))
    with pytest.raises(WriteFailed, match=r"fsync of the folder .*/dst failed"):
        backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [f"{NAME}.partial"]


def test_a_failed_rename_names_both_folders_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, plan, copied = staged_and_copied(tmp_path)
    monkeypatch.setattr(backup.os, "rename", eio)
    with pytest.raises(WriteFailed, match=rf"renaming file://.*/{NAME}\.partial to file://.*/{NAME} failed"):
        backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / NAME).exists()


# --- issue 12: a changed source never withdraws the good published copy first ---------------------------


def rewrite_source(tmp_path: Path) -> bytes:
    """SpeechMiner rewrites one file of an already shipped backup (new bytes, new mtime)."""
    path = tmp_path / "src" / NAME / "segments/shard-1/seg-00001.dat"
    data = os.urandom(7 * KIB)
    path.write_bytes(data)
    later = time.time() + 5
    os.utime(path, (later, later))
    return data


def published_and_verified(tmp_path: Path) -> dict[str, bytes]:
    """The published copy still verifies against its own manifest; returns its content."""
    final = tmp_path / "dst" / NAME
    manifest = backup.read_manifest(osp(final))
    assert manifest is not None
    assert backup.verify_tree(osp(final), manifest.entries, chunk_size=CHUNK) == []
    return snapshot(final)


def test_a_changed_source_keeps_the_old_copy_published_until_the_new_one_is_verified(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    ship(route, NAME)
    old = published_and_verified(tmp_path)
    new_data = rewrite_source(tmp_path)

    plan = backup.manifest_task(route, NAME, chunk_size=CHUNK)
    assert plan["replace"] == backup.read_manifest(osp(tmp_path / "dst" / NAME)).manifest_sha256
    assert published_and_verified(tmp_path) == old, "still published after the plan"
    copied = backup.copy_task(route, plan, chunk_size=CHUNK)
    assert published_and_verified(tmp_path) == old, "still published while the new copy is staged"
    backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)

    assert (tmp_path / "dst" / NAME / "segments/shard-1/seg-00001.dat").read_bytes() == new_data
    published_and_verified(tmp_path)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [NAME], "no .partial or .retired left"


def test_a_new_copy_that_fails_verification_leaves_the_old_copy_published(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    ship(route, NAME)
    old = published_and_verified(tmp_path)
    rewrite_source(tmp_path)
    plan = backup.manifest_task(route, NAME, chunk_size=CHUNK)
    copied = backup.copy_task(route, plan, chunk_size=CHUNK)
    (tmp_path / "dst" / f"{NAME}.partial" / NON_ASCII).write_bytes(b"X" * 50)
    with pytest.raises(AirflowFailException, match="verification of"):
        backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert published_and_verified(tmp_path) == old


def test_a_swap_whose_second_rename_fails_puts_the_old_copy_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    ship(route, NAME)
    old = published_and_verified(tmp_path)
    rewrite_source(tmp_path)
    plan = backup.manifest_task(route, NAME, chunk_size=CHUNK)
    copied = backup.copy_task(route, plan, chunk_size=CHUNK)
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        if src.endswith(".partial"):
            eio()
        real_rename(src, dst)

    monkeypatch.setattr(backup.os, "rename", rename)
    with pytest.raises(WriteFailed, match="renaming"):
        backup.verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert published_and_verified(tmp_path) == old
    assert not (tmp_path / "dst" / f"{NAME}.retired").exists()


def test_a_swap_interrupted_between_the_renames_is_restored_by_the_next_run(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    ship(route, NAME)
    old = published_and_verified(tmp_path)
    (tmp_path / "dst" / NAME).rename(tmp_path / "dst" / f"{NAME}.retired")  # the worker died here

    plan = backup.manifest_task(route, NAME, chunk_size=CHUNK)

    assert plan["already_present"] is True
    assert published_and_verified(tmp_path) == old
    assert not (tmp_path / "dst" / f"{NAME}.retired").exists()


# --- issue 12: completeness without a marker -----------------------------------------------------------


def preserved_times_copy(root: Path, name: str, *, when: float) -> Path:
    """A backup as `cp -p` or robocopy leave it: every file and folder keeps an old mtime."""
    folder = make_tree(root / name, {"meta/VERSION": b"7", "segments/shard-0/seg.dat": b"s" * 100})
    for path in [*sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True), folder]:
        os.utime(path, (when, when))
    return folder


def test_a_copy_that_keeps_old_mtimes_is_not_complete_on_one_look(tmp_path: Path) -> None:
    now = time.time()
    preserved_times_copy(tmp_path / "root", NAME, when=now - 86400)
    url = f"file://{tmp_path / 'root'}"

    first = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now)
    assert not first.complete
    assert first.reason.startswith("first look at this listing")
    soon = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 30, previous=first)
    assert not soon.complete
    assert soon.reason == "same listing for 30 s of the 60 s required"
    later = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now + 60, previous=soon)
    assert later.complete, later.reason
    assert later.reason.startswith("quiet for 60 s")


def test_a_recent_folder_mtime_keeps_a_backup_with_old_file_mtimes_incomplete(tmp_path: Path) -> None:
    """A file renamed or deleted inside: only the folder's mtime moves."""
    now = time.time()
    folder = preserved_times_copy(tmp_path / "root", NAME, when=now - 86400)
    os.utime(folder / "segments", (now - 5, now - 5))
    url = f"file://{tmp_path / 'root'}"
    earlier = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now - 120)

    status = backup.backup_readiness(url, ready_marker=None, quiet_seconds=60, now=now, previous=earlier)

    assert status.signature == earlier.signature, "the same listing on both scans"
    assert not status.complete
    assert status.last_change == now - 5
    assert status.reason == "still changing: quiet for 5 s of the 60 s required"


def test_the_sensor_defers_with_its_first_scan_as_a_plain_baseline_for_the_trigger(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from include.gir_ops.backup_triggers import SpeechMinerBackupSensor

    now = time.time()
    preserved_times_copy(tmp_path / "root", NAME, when=now - 86400)
    sensor = SpeechMinerBackupSensor(
        task_id="wait_for_backup",
        source_root=f"file://{tmp_path / 'root'}",
        ready_marker=None,
        quiet_minutes=1,
        wait_timeout_minutes=10,
        poll_seconds=30,
    )
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
    from airflow.sdk.exceptions import AirflowFailException

    from include.gir_ops.backup_triggers import SpeechMinerBackupSensor

    preserved_times_copy(tmp_path / "root", NAME, when=time.time() - 86400)
    sensor = SpeechMinerBackupSensor(
        task_id="wait_for_backup",
        source_root=f"file://{tmp_path / 'root'}",
        ready_marker=None,
        quiet_minutes=0,
        wait_timeout_minutes=10,
        poll_seconds=30,
        mode="reschedule",
    )
    with pytest.raises(AirflowFailException, match=r"mode='reschedule' needs shipping\.ready_marker"):
        sensor.poke({})  # type: ignore[arg-type]
    sensor.mode = "poke"  # one process: the second poke compares with the first
    assert sensor.poke({}).is_done is False  # type: ignore[arg-type]
    assert sensor.poke({}).is_done is True  # type: ignore[arg-type]
