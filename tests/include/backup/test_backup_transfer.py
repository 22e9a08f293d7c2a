"""Streaming copy: hashing while copying, flat memory, resume, progress, and write faults that fail it."""

from __future__ import annotations

import logging
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileOpener

from include.gir_ops.backup.errors import SourceChanged, WriteFailed
from include.gir_ops.backup.manifest import build_manifest
from include.gir_ops.backup.tasks import copy_task, manifest_task
from include.gir_ops.backup.transfer import copy_backup
from include.gir_ops.backup.tree import scan_backup
from tests.include.backup.backup_support import (
    CHUNK,
    KIB,
    NAME,
    WriteRecorder,
    eio,
    make_tree,
    osp,
    route_for,
    sample_files,
    sha256,
)


def test_copy_hashes_the_source_while_copying_and_writes_identical_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sample_files()
    source = make_tree(tmp_path / "src" / "index-1", files)
    staging = tmp_path / "dst" / "index-1.partial"
    listed = scan_backup(osp(source))
    writes = WriteRecorder(monkeypatch, staging)
    result = copy_backup(osp(source), listed, osp(staging), last="_BACKUP_COMPLETE", chunk_size=CHUNK)
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
    listed = scan_backup(osp(source))
    tracemalloc.start()
    try:
        copy_backup(osp(source), listed, osp(tmp_path / "dst" / "index-1.partial"), chunk_size=CHUNK)
        _, copy_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        build_manifest(osp(source), chunk_size=CHUNK)
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

    result = copy_backup(osp(source), scan_backup(osp(source)), osp(staging), chunk_size=CHUNK)

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
    result = copy_backup(osp(source), scan_backup(osp(source)), osp(staging), chunk_size=CHUNK)
    assert result.files_copied == ["seg.dat"]
    assert result.files_resumed == []
    assert result.bytes_copied == len(data)
    assert (staging / "seg.dat").read_bytes() == data


def test_copy_fails_when_the_source_is_still_being_written(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src" / "index-1", {"seg.dat": os.urandom(10 * KIB)})
    listed = scan_backup(osp(source))
    with (source / "seg.dat").open("ab") as handle:  # SpeechMiner appends after the listing
        handle.write(b"more")
    with pytest.raises(SourceChanged, match="still writing"):
        copy_backup(osp(source), listed, osp(tmp_path / "dst" / "index-1.partial"), chunk_size=CHUNK)


def test_progress_is_logged_on_a_steady_clock_and_once_at_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One fake second per chunk, a line every 10 s: the pace follows time, not files or chunks."""
    files = {f"seg-{i}.dat": os.urandom(8 * CHUNK) for i in range(5)}  # 8 chunks each
    source = make_tree(tmp_path / "src" / "index-1", files)
    ticks = iter(range(10_000))
    caplog.set_level(logging.INFO, logger="include.gir_ops.backup")
    copy_backup(
        osp(source),
        scan_backup(osp(source)),
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


# --- fsync and close failures ------------------------------------------------------------------------------


def test_an_fsync_failure_fails_the_copy_and_nothing_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    plan = manifest_task(route, NAME, chunk_size=CHUNK)
    monkeypatch.setattr(os, "fsync", eio)

    with pytest.raises(
        WriteFailed, match=rf"fsync of file://.*/{NAME}\.partial/_BACKUP_COMPLETE failed \(\[Errno 5\]"
    ):
        copy_task(route, plan, chunk_size=CHUNK)

    assert not (tmp_path / "dst" / NAME).exists()
    assert not (tmp_path / "dst" / f"{NAME}.partial" / "_BACKUP_COMPLETE").exists(), "a retry must rewrite it"


def test_a_close_failure_fails_the_copy_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "src" / NAME, {"seg.dat": os.urandom(3 * CHUNK)})
    route = route_for(tmp_path)
    plan = manifest_task(route, NAME, chunk_size=CHUNK)
    real_close = LocalFileOpener.close

    def close(self: Any) -> None:
        real_close(self)
        if "w" in self.mode or "a" in self.mode:
            eio()

    monkeypatch.setattr(LocalFileOpener, "close", close)
    with pytest.raises(WriteFailed, match=rf"close of file://.*/{NAME}\.partial/seg\.dat failed"):
        copy_task(route, plan, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / NAME).exists()


def test_fsync_in_the_background_still_fails_the_copy_for_the_right_file_and_stops_its_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are fsynced by a background thread while the next ones are copied: a failed fsync of a file
    in the middle still names that file, removes it, and leaves no thread running."""
    import threading

    from tests.include.backup.backup_support import fail_fsync_of

    files = {f"seg-{i}.dat": os.urandom(3 * CHUNK + i) for i in range(6)}
    source = make_tree(tmp_path / "src" / "index-1", files)
    staging = tmp_path / "dst" / "index-1.partial"
    fail_fsync_of(monkeypatch, lambda path: path.endswith("seg-2.dat"))
    threads_before = threading.active_count()
    with pytest.raises(WriteFailed, match=r"fsync of file://.*/index-1\.partial/seg-2\.dat failed"):
        copy_backup(osp(source), scan_backup(osp(source)), osp(staging), chunk_size=CHUNK)
    assert not (staging / "seg-2.dat").exists(), "a retry must rewrite it"
    assert (staging / "seg-1.dat").read_bytes() == files["seg-1.dat"]
    assert threading.active_count() == threads_before


def test_a_write_failure_stops_the_copy_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {f"seg-{i}.dat": os.urandom(4 * CHUNK) for i in range(3)}
    source = make_tree(tmp_path / "src" / "index-1", files)
    real_write = LocalFileOpener.write
    calls = {"n": 0}

    def write(self: Any, data: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 6:  # the second chunk of the second file
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(LocalFileOpener, "write", write, raising=False)
    with pytest.raises(OSError, match="No space left on device"):
        copy_backup(osp(source), scan_backup(osp(source)), osp(tmp_path / "dst" / "p"), chunk_size=CHUNK)
    assert calls["n"] < 12, "the copy stopped at the failure instead of reading the whole backup"
