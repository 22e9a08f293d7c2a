"""The manifest: what a verified backup holds, how it is checked, and the reader rule.

* **verify**: a tree is read back and compared with the sizes and hashes taken from the source; any
  difference is reported by file.
* **reader rule**: a backup ``<destination>/<name>/`` is complete only when its ``MANIFEST.json`` exists,
  parses, its ``manifest_sha256`` matches its entries, and every listed file matches size and SHA-256.
  ``*.partial`` folders are never trusted. A manifest that is a symbolic link is never trusted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.gir_ops.backup.errors import BackupError, BackupRefused, Problem
from include.gir_ops.backup.links import link_target, refuse_link
from include.gir_ops.backup.spec import MANIFEST_FORMAT, MANIFEST_NAME
from include.gir_ops.backup.transfer import CHUNK_SIZE, hash_file, hash_files, writing
from include.gir_ops.backup.tree import (
    ManifestEntry,
    parse_iso,
    printable,
    scan_backup,
    utc_datetime,
    walk,
)
from include.gir_ops.shared import iso_utc

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


@dataclass(frozen=True)
class PublishedManifest:
    """A ``MANIFEST.json`` that parsed and whose digest matches its entries."""

    backup_name: str
    entries: list[ManifestEntry]
    manifest_sha256: str
    created_at: float | None
    shipped_at: float | None
    document: dict[str, Any]

    @property
    def bytes(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def as_of(self) -> float | None:
        """When the backup's content is from: SpeechMiner's last write, else when it was shipped."""
        return self.created_at if self.created_at is not None else self.shipped_at


def manifest_digest(entries: list[ManifestEntry]) -> str:
    """SHA-256 over the canonical entry list: the same backup content always gives the same digest."""
    canonical = [[entry.path, entry.size, entry.sha256] for entry in sorted(entries, key=lambda e: e.path)]
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_manifest(folder: ObjectStoragePath, *, chunk_size: int = CHUNK_SIZE) -> list[ManifestEntry]:
    """Path, size and SHA-256 of every file in ``folder`` (refusing symlinks etc.), streamed, by path."""
    entries = []
    buffer = memoryview(bytearray(chunk_size))
    for item in scan_backup(folder):
        size, sha256 = hash_file(folder / item.path, chunk_size=chunk_size, buffer=buffer)
        entries.append(ManifestEntry(item.path, size, sha256))
    return entries


def verify_tree(
    folder: ObjectStoragePath,
    entries: list[ManifestEntry],
    *,
    chunk_size: int = CHUNK_SIZE,
    ignore: tuple[str, ...] = (MANIFEST_NAME,),
) -> list[Problem]:
    """Read ``folder`` back and compare every file with ``entries``; returns every difference, by file."""
    if not folder.exists():
        return [Problem(str(folder), "folder missing")]
    expected = {entry.path: entry for entry in entries}
    problems: list[Problem] = []
    try:
        actual = {relative: int(info.get("size") or 0) for relative, info in walk(folder, strict=True)}
    except BackupRefused as exc:
        return [Problem(str(folder), str(exc))]
    for relative in sorted(set(actual) - set(expected) - set(ignore)):
        problems.append(Problem(relative, "not in the manifest"))
    by_file: dict[str, Problem] = {}
    to_hash: list[ManifestEntry] = []
    for relative, entry in sorted(expected.items()):
        if relative not in actual:
            by_file[relative] = Problem(relative, "missing")
        elif actual[relative] != entry.size:
            by_file[relative] = Problem(relative, f"size {actual[relative]} bytes, expected {entry.size}")
        else:
            to_hash.append(entry)
    # Files hashed two at a time (hash_files): the read-back is SHA-256 of bytes mostly in the page cache.
    hashed = hash_files([folder / entry.path for entry in to_hash], chunk_size=chunk_size)
    for entry, (size, sha256) in zip(to_hash, hashed, strict=True):
        if size != entry.size:
            by_file[entry.path] = Problem(entry.path, f"read {size} bytes, expected {entry.size}")
        elif sha256 != entry.sha256:
            by_file[entry.path] = Problem(
                entry.path, f"SHA-256 {sha256[:12]}..., expected {entry.sha256[:12]}..."
            )
    problems += [by_file[relative] for relative in sorted(by_file)]
    return problems


def manifest_document(
    *,
    backup_name: str,
    entries: list[ManifestEntry],
    source: str,
    source_site: str,
    site: str,
    created_at: float | None,
    shipped_at: float,
    source_mtimes: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    """The ``MANIFEST.json`` of a verified backup (format ``MANIFEST_FORMAT``)."""
    mtimes = source_mtimes or {}
    return {
        "format": MANIFEST_FORMAT,
        "backup_name": backup_name,
        "source_site": source_site,
        "site": site,
        "source": source,
        "created_at": iso_utc(utc_datetime(created_at)),
        "shipped_at": iso_utc(utc_datetime(shipped_at)),
        "files": len(entries),
        "bytes": sum(entry.size for entry in entries),
        "manifest_sha256": manifest_digest(entries),
        "reader_rule": (
            "trust this backup only if manifest_sha256 matches the entries and every file matches its "
            "size and sha256; folders ending in .partial are never complete"
        ),
        "entries": [
            {"path": e.path, "size": e.size, "sha256": e.sha256, "source_mtime": mtimes.get(e.path)}
            for e in sorted(entries, key=lambda e: e.path)
        ],
    }


def read_manifest(folder: ObjectStoragePath) -> PublishedManifest | None:
    """The folder's ``MANIFEST.json`` if it exists; raises ``BackupError`` if it exists but is not valid."""
    return read_manifest_file(folder / MANIFEST_NAME, default_name=folder.name)


def read_manifest_file(path: ObjectStoragePath, *, default_name: str) -> PublishedManifest | None:
    """A manifest file if it exists (``None`` otherwise); ``BackupError`` if it exists but is not valid."""
    target = link_target(path)
    if target is not None:
        raise BackupError(
            f"{path} is a symbolic link to {printable(target)}, not a manifest this DAG wrote: not trusted"
        )
    if not path.exists():
        return None
    try:
        with path.fs.open(path.path, "rb") as handle:
            document = json.loads(handle.read().decode("utf-8"))
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        entries = [
            ManifestEntry(str(e["path"]), int(e["size"]), str(e["sha256"])) for e in document["entries"]
        ]
        digest = manifest_digest(entries)
        if digest != document.get("manifest_sha256"):
            raise ValueError("manifest_sha256 does not match its entries (edited or damaged)")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{path} is not a valid manifest: {exc}") from None
    return PublishedManifest(
        backup_name=str(document.get("backup_name") or default_name),
        entries=entries,
        manifest_sha256=digest,
        created_at=parse_iso(document.get("created_at")),
        shipped_at=parse_iso(document.get("shipped_at")),
        document=document,
    )


def write_json(path: ObjectStoragePath, document: Mapping[str, Any]) -> None:
    """Write a manifest durably (``writing``: fsync, close), never through a link."""
    data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    refuse_link(path, "manifest")
    with writing(path, "wb") as handle:
        handle.write(data)
