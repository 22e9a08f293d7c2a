"""What the shipping unit tests share: local trees through ObjectStoragePath (file://), published
backups as the DAG leaves them, a route over ``tmp_path``, and the faults they inject.

Small chunk sizes make "streams in chunks" and "resumes mid-file" happen on small files.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem

from include.gir_ops.backup.manifest import manifest_document, read_manifest, verify_tree
from include.gir_ops.backup.route import ShippingRoute
from include.gir_ops.backup.spec import MANIFEST_NAME
from include.gir_ops.backup.tasks import copy_task, manifest_task, verify_and_publish_task
from include.gir_ops.backup.tree import ManifestEntry
from include.gir_ops.backup.triggers import BackupReadyTrigger

KIB = 1024
CHUNK = 64 * KIB
NON_ASCII = "meta/índice-ñ.idx"
NAME = "index-2026-11-01"


SENTINELS = {"sentinel.txt": b"must stay", "stray.dat": b"not a file of any backup", "deep/keep.bin": b"k"}


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
    document = manifest_document(
        backup_name=name,
        entries=entries,
        source=f"file:///src/{name}",
        source_site="DC1",
        site="DC2",
        created_at=created_at,
        shipped_at=created_at + 60,
    )
    (folder / MANIFEST_NAME).write_text(json.dumps(document), encoding="utf-8")
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


def day_names(count: int) -> list[str]:
    return [f"index-2026-11-{day:02d}" for day in range(1, count + 1)]


def sentinel_folder(path: Path) -> Path:
    """A folder outside the destination holding files that must survive whatever the DAG does."""
    return make_tree(path, SENTINELS)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def route_for(tmp_path: Path, **overrides: Any) -> ShippingRoute:
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
    return ShippingRoute(**settings)


def ship(route: ShippingRoute, name: str) -> dict[str, Any]:
    plan = manifest_task(route, name, chunk_size=CHUNK)
    copied = copy_task(route, plan, chunk_size=CHUNK)
    return verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)


def eio(*_: Any) -> None:
    raise OSError(errno.EIO, "Input/output error")


def fail_fsync_of(monkeypatch: pytest.MonkeyPatch, wanted: Callable[[str], bool]) -> None:
    """os.fsync fails with EIO for the open file descriptors whose path ``wanted`` selects."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if wanted(os.readlink(f"/proc/self/fd/{fd}")):
            eio()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def staged_and_copied(tmp_path: Path) -> tuple[ShippingRoute, dict[str, Any], dict[str, Any]]:
    make_tree(tmp_path / "src" / NAME, sample_files())
    route = route_for(tmp_path)
    plan = manifest_task(route, NAME, chunk_size=CHUNK)
    return route, plan, copy_task(route, plan, chunk_size=CHUNK)


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
    manifest = read_manifest(osp(final))
    assert manifest is not None
    assert verify_tree(osp(final), manifest.entries, chunk_size=CHUNK) == []
    return snapshot(final)


def preserved_times_copy(root: Path, name: str, *, when: float) -> Path:
    """A backup as `cp -p` or robocopy leave it: every file and folder keeps an old mtime."""
    folder = make_tree(root / name, {"meta/VERSION": b"7", "segments/shard-0/seg.dat": b"s" * 100})
    for path in [*sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True), folder]:
        os.utime(path, (when, when))
    return folder


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
