"""The manifest and the reader rule: verification by file, an edited or linked manifest is not trusted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from include.gir_ops.backup.destination import destination_state
from include.gir_ops.backup.errors import BackupError, BackupStale, VerificationFailed
from include.gir_ops.backup.freshness import check_freshness
from include.gir_ops.backup.manifest import manifest_digest, read_manifest, verify_tree
from include.gir_ops.backup.spec import MANIFEST_NAME
from include.gir_ops.backup.tree import ManifestEntry
from tests.include.backup.backup_support import (
    CHUNK,
    NON_ASCII,
    make_tree,
    osp,
    publish_tree,
    sample_files,
    sha256,
)


def test_verify_names_every_damaged_missing_and_unexpected_file(tmp_path: Path) -> None:
    files = sample_files()
    folder = make_tree(tmp_path / "index-1.partial", files)
    entries = [ManifestEntry(p, len(d), sha256(d)) for p, d in files.items()]
    assert verify_tree(osp(folder), entries, chunk_size=CHUNK) == []

    seg = folder / "segments/shard-0/seg-00000.dat"
    flipped = bytearray(seg.read_bytes())
    flipped[-1] ^= 0x01
    seg.write_bytes(bytes(flipped))
    (folder / "segments/shard-1/seg-00001.dat").write_bytes(b"short")
    (folder / NON_ASCII).unlink()
    (folder / "stray.tmp").write_bytes(b"?")

    problems = verify_tree(osp(folder), entries, chunk_size=CHUNK)
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


def test_an_edited_manifest_is_not_trusted(tmp_path: Path) -> None:
    folder = publish_tree(tmp_path, "index-1", {"a.dat": b"abc"}, created_at=time.time())
    assert read_manifest(osp(folder)).manifest_sha256
    document = json.loads((folder / "MANIFEST.json").read_text())
    document["entries"][0]["size"] = 4
    (folder / "MANIFEST.json").write_text(json.dumps(document))
    with pytest.raises(BackupError, match="manifest_sha256 does not match"):
        read_manifest(osp(folder))


def test_manifest_digest_ignores_order_and_depends_on_every_field() -> None:
    a, b = ManifestEntry("a", 1, "00"), ManifestEntry("b", 2, "11")
    assert manifest_digest([a, b]) == manifest_digest([b, a])
    assert manifest_digest([a, b]) != manifest_digest([a, ManifestEntry("b", 2, "12")])


def test_a_manifest_that_is_a_link_is_not_trusted(tmp_path: Path) -> None:
    now = time.time()
    real = publish_tree(tmp_path / "elsewhere", "index-2026-11-01", {"a.dat": b"x"}, created_at=now)
    forged = make_tree(tmp_path / "dst" / "index-2026-11-09", {"a.dat": b"x"})
    (forged / MANIFEST_NAME).symlink_to(real / MANIFEST_NAME)
    with pytest.raises(BackupError, match=r"MANIFEST\.json is a symbolic link to .*: not trusted"):
        read_manifest(osp(forged))
    state = destination_state(osp(tmp_path / "dst"))
    assert list(state.unverified) == ["index-2026-11-09"] and state.verified == {}
    with pytest.raises(BackupStale, match="no verified SpeechMiner backup"):
        check_freshness(osp(tmp_path / "dst"), max_age_hours=26, site="DC2", now=now)
