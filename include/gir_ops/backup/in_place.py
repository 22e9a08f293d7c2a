"""``shipping.mode: verify-in-place``: SpeechMiner writes its Daily Index Backup directly to the backup DC.

This is the deployment the guide describes ("configure the Daily Index Backup and write the backup to the
backup data center"). Nothing is copied: the DAG verifies what arrived and records it.

* **record**: the newest backup (complete by ``readiness``: marker, else the quiet period) is hashed file
  by file and its manifest (the same document as a shipped copy's ``MANIFEST.json``) written to
  ``shipping.manifest_store`` as ``<name>.json``, beside SpeechMiner's folder, never inside it: nothing of
  ours may end up in what SpeechMiner restores or prunes.
* **re-verify**: every backup among the newest ``keep`` that has a manifest is read back and compared
  with it on every run, so damage after it was recorded (a file changed, truncated, added or removed) is
  found on the next run, naming the backup and the files. A backup that changed is never re-recorded by
  itself: the operator decides (the message says how); until then ``<name>.json.changed`` beside its
  manifest keeps freshness from counting it (removed once it verifies again, or is recorded anew).
* **prune**: a manifest whose backup folder is gone (SpeechMiner's own retention deleted it) is removed.
* **freshness**: the newest recorded backup whose files still list as recorded must be younger than
  ``max_age_hours``, measured from SpeechMiner's last write.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.gir_ops.backup.errors import BackupError, BackupStale, Problem, SourceChanged, name_problems
from include.gir_ops.backup.links import lexists, refuse_link
from include.gir_ops.backup.manifest import (
    PublishedManifest,
    build_manifest,
    manifest_document,
    read_manifest_file,
    verify_tree,
    write_json,
)
from include.gir_ops.backup.transfer import CHUNK_SIZE, fsync_dir
from include.gir_ops.backup.tree import (
    check_backup_name,
    list_backups,
    printable,
    scan_backup,
    storage_path,
    top_level,
    utc_datetime,
    walk,
)
from include.gir_ops.shared import format_size, format_utc, iso_utc

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from include.gir_ops.backup.route import ShippingRoute

log = logging.getLogger(__name__)

MANIFEST_FILE_SUFFIX = ".json"
# Beside a manifest whose backup was found changed: freshness never counts that backup, until it verifies
# again (restored) or is recorded anew (its manifest deleted by the operator).
CHANGED_FILE_SUFFIX = ".json.changed"
VERIFIED_IN_PLACE = "verify-in-place"


class BackupChanged(BackupError):
    """A backup differs from the manifest recorded when it arrived: damaged, or rewritten. Not retried."""


@dataclass(frozen=True)
class BackupCheck:
    """What one run found for one backup folder."""

    backup_name: str
    status: str  # recorded | verified | changed | not-recorded
    problems: tuple[Problem, ...] = ()
    manifest: PublishedManifest | None = None


def manifest_path(route: ShippingRoute, backup_name: str) -> ObjectStoragePath:
    name = check_backup_name(backup_name, route.backup_name_pattern)
    return storage_path(route.manifest_root) / f"{name}{MANIFEST_FILE_SUFFIX}"


def changed_path(route: ShippingRoute, backup_name: str) -> ObjectStoragePath:
    name = check_backup_name(backup_name, route.backup_name_pattern)
    return storage_path(route.manifest_root) / f"{name}{CHANGED_FILE_SUFFIX}"


def _mark_changed(route: ShippingRoute, check: BackupCheck, now: float) -> None:
    """Remember (beside its manifest) that a backup no longer matches, and why; freshness reads it."""
    path = changed_path(route, check.backup_name)
    refuse_link(path, "changed marker")
    write_json(
        path,
        {
            "backup_name": check.backup_name,
            "found_at": iso_utc(utc_datetime(now)),
            "problems": [str(problem) for problem in check.problems],
        },
    )


def _clear_changed(route: ShippingRoute, backup_name: str) -> None:
    path = changed_path(route, backup_name)
    if lexists(path):
        refuse_link(path, "changed marker")
        path.fs.rm(path.path)
        log.info("%s matches its manifest again: the 'changed' mark is removed", backup_name)


def _write_manifest(route: ShippingRoute, backup_name: str, document: dict[str, Any]) -> ObjectStoragePath:
    """Write ``<name>.json`` whole or not at all: into ``<name>.json.partial``, then one move."""
    store = storage_path(route.manifest_root)
    refuse_link(store, "manifest store")
    store.mkdir(parents=True, exist_ok=True)
    final = manifest_path(route, backup_name)
    partial = store / f"{final.name}.partial"
    refuse_link(final, "manifest")
    write_json(partial, document)
    partial.fs.mv(partial.path, final.path)
    fsync_dir(store)
    return final


def record_backup(
    route: ShippingRoute, backup_name: str, *, now: float | None = None, chunk_size: int = CHUNK_SIZE
) -> PublishedManifest:
    """Hash every file of a complete backup in place and record its manifest; returns what was recorded."""
    folder = storage_path(route.destination) / check_backup_name(backup_name, route.backup_name_pattern)
    files = scan_backup(folder, reserved=())
    if not files:
        raise BackupError(
            f"{folder} is empty: SpeechMiner wrote no file into it; check its Daily Index Backup (SMConfig > "
            "Index) and the backup DC's share"
        )
    entries = build_manifest(folder, chunk_size=chunk_size)
    if scan_backup(folder, reserved=()) != files:
        # Written to while we hashed it: recording now would record a half-written backup as complete.
        raise SourceChanged(
            f"{folder} changed while it was being hashed (files, sizes or mtimes moved): SpeechMiner is "
            "still writing this backup; nothing is recorded, the retry hashes it again"
        )
    recorded_at = time.time() if now is None else now
    document = manifest_document(
        backup_name=backup_name,
        entries=entries,
        source=str(folder),
        source_site=route.from_site,
        site=route.to_site,
        created_at=max((f.mtime for f in files if f.mtime is not None), default=None),
        shipped_at=recorded_at,
        source_mtimes={item.path: item.mtime for item in files},
    )
    document["mode"] = VERIFIED_IN_PLACE
    document["reader_rule"] = (
        "trust the backup folder of this name only if every file matches its size and sha256 and no other "
        "file is in it; this manifest lives outside the folder, SpeechMiner never sees it"
    )
    path = _write_manifest(route, backup_name, document)
    _clear_changed(route, backup_name)  # recorded anew: whatever was found before no longer applies
    log.info(
        "recorded %s at %s: %d files, %s, manifest_sha256 %s, in %s",
        folder,
        route.to_site,
        document["files"],
        format_size(document["bytes"]),
        document["manifest_sha256"],
        path,
    )
    recorded = read_manifest_file(path, default_name=backup_name)
    if recorded is None:  # written a moment ago: only a store that lost it gets here
        raise BackupError(f"{path} was written but cannot be read back; check the manifest store")
    return recorded


def check_backup(route: ShippingRoute, backup_name: str, *, chunk_size: int = CHUNK_SIZE) -> BackupCheck:
    """Compare a backup folder with its recorded manifest, every byte; ``not-recorded`` without one."""
    recorded = read_manifest_file(manifest_path(route, backup_name), default_name=backup_name)
    if recorded is None:
        return BackupCheck(backup_name, "not-recorded")
    folder = storage_path(route.destination) / backup_name
    problems = verify_tree(folder, recorded.entries, chunk_size=chunk_size, ignore=())
    if problems:
        return BackupCheck(backup_name, "changed", tuple(problems), recorded)
    return BackupCheck(backup_name, "verified", (), recorded)


def prune_manifests(route: ShippingRoute, present: set[str]) -> list[str]:
    """Remove the manifests of backups SpeechMiner's own retention deleted; returns their names."""
    store = storage_path(route.manifest_root)
    if not store.exists():
        return []
    removed = []
    for name, info in top_level(store):
        if info.get("type") != "file" or info.get("islink"):
            continue
        suffix = next((s for s in (CHANGED_FILE_SUFFIX, MANIFEST_FILE_SUFFIX) if name.endswith(s)), None)
        if suffix is None:
            continue
        backup_name = name.removesuffix(suffix)
        if backup_name in present:
            continue
        path = store / name
        path.fs.rm(path.path)
        if suffix == CHANGED_FILE_SUFFIX:
            continue
        removed.append(backup_name)
        log.info(
            "backup %s is gone from %s (SpeechMiner's retention): its manifest removed", backup_name, store
        )
    return sorted(removed)


def verify_in_place(
    route: ShippingRoute, newest: str, *, now: float | None = None, chunk_size: int = CHUNK_SIZE
) -> dict[str, Any]:
    """Record the newest complete backup if new, re-verify the newest ``keep`` recorded ones, prune.

    Raises ``BackupChanged`` naming every backup and file that differs from its manifest (after recording
    the newest one, so its record is never lost to another backup's damage).
    """
    root = storage_path(route.destination)
    newest = check_backup_name(newest, route.backup_name_pattern)
    names = list_backups(root, pattern=route.backup_name_pattern)
    checked = [name for name in names[-route.keep :] if name != newest]
    newest_check = check_backup(route, newest, chunk_size=chunk_size)
    if newest_check.status == "not-recorded":
        manifest = record_backup(route, newest, now=now, chunk_size=chunk_size)
        newest_check = BackupCheck(newest, "recorded", (), manifest)
    checks = [check_backup(route, name, chunk_size=chunk_size) for name in checked] + [newest_check]
    pruned = prune_manifests(route, set(names))
    for check in checks:
        if check.status == "changed":
            _mark_changed(route, check, time.time() if now is None else now)
        elif check.status == "verified":
            _clear_changed(route, check.backup_name)
        if check.status == "verified":
            log.info("%s at %s still matches its manifest", check.backup_name, route.to_site)
        elif check.status == "not-recorded":
            log.info(
                "%s at %s has no manifest (it arrived before this DAG ran): not checked",
                check.backup_name,
                route.to_site,
            )
    changed = [check for check in checks if check.status == "changed"]
    if changed:
        details = "; ".join(
            f"{check.backup_name} (recorded {_recorded_when(check.manifest)}): "
            f"{name_problems(list(check.problems))}"
            for check in changed
        )
        raise BackupChanged(
            f"{len(changed)} SpeechMiner backup(s) at {route.to_site} ({route.destination}) no longer match "
            f"the manifest recorded when they arrived: {details}. The backup DC's index copy is damaged or "
            "was rewritten: do not promote it without checking (freshness no longer counts it). If "
            f"SpeechMiner rewrote it on purpose, delete its manifest <name>.json in {route.manifest_root} "
            "and rerun to record it anew"
        )
    manifest = newest_check.manifest
    assert manifest is not None  # recorded or verified above
    return {
        "site": route.to_site,
        "backup_name": newest,
        "bytes": manifest.bytes,
        "files": len(manifest.entries),
        "manifest_sha256": manifest.manifest_sha256,
        # When the backup arrived (SpeechMiner's last write): what its age is measured from.
        "shipped_at": iso_utc(utc_datetime(manifest.as_of)),
        "verified_at": iso_utc(utc_datetime(time.time() if now is None else now)),
        "mode": VERIFIED_IN_PLACE,
        "newly_recorded": newest_check.status == "recorded",
        "checked": {check.backup_name: check.status for check in checks},
        "manifests_pruned": pruned,
    }


def _recorded_when(manifest: PublishedManifest | None) -> str:
    recorded = utc_datetime(manifest.shipped_at) if manifest is not None else None
    return "at an unknown time" if recorded is None else format_utc(recorded)


def _listing_matches(folder: ObjectStoragePath, manifest: PublishedManifest) -> bool:
    """The folder lists exactly the recorded names and sizes (cheap: no contents read)."""
    if not lexists(folder):
        return False
    try:
        listed = {relative: int(info.get("size") or 0) for relative, info in walk(folder, strict=True)}
    except BackupError:
        return False
    return listed == {entry.path: entry.size for entry in manifest.entries}


def in_place_freshness(route: ShippingRoute, *, now: float | None = None) -> dict[str, Any]:
    """The newest recorded backup still in place, and its age; ``BackupStale`` beyond ``max_age_hours``."""
    now = time.time() if now is None else now
    root = storage_path(route.destination)
    names = list_backups(root, pattern=route.backup_name_pattern) if root.exists() else []
    newest: tuple[str, PublishedManifest] | None = None
    for name in reversed(names):
        if lexists(changed_path(route, name)):
            log.warning("%s at %s was found changed after it was recorded: not counted", name, route.to_site)
            continue
        manifest = read_manifest_file(manifest_path(route, name), default_name=name)
        if manifest is not None and manifest.as_of is not None and _listing_matches(root / name, manifest):
            newest = (name, manifest)
            break
    if newest is None:
        shown = ", ".join(printable(n) for n in names[-5:]) or "none"
        raise BackupStale(
            f"no verified SpeechMiner backup at {route.to_site} ({route.destination}): none of the backup "
            f"folders there ({shown}) is recorded and intact; "
            "the backup DC has no index it could promote; check SpeechMiner's Daily Index Backup and this "
            "DAG's earlier runs"
        )
    name, manifest = newest
    as_of = manifest.as_of
    assert as_of is not None
    age_hours = (now - as_of) / 3600
    result = {
        "site": route.to_site,
        "backup_name": name,
        "as_of": iso_utc(utc_datetime(as_of)),
        "age_hours": round(age_hours, 2),
        "max_age_hours": route.max_age_hours,
        "mode": VERIFIED_IN_PLACE,
    }
    if age_hours > route.max_age_hours:
        raise BackupStale(
            f"the newest verified SpeechMiner backup at {route.to_site} is {name}, {age_hours:.1f} h old "
            f"(SpeechMiner's last write at {format_utc(utc_datetime(as_of))}), more than "
            f"shipping.max_age_hours={route.max_age_hours:g}: the backup DC's index is stale; check that "
            "SpeechMiner still writes its Daily Index Backup to the backup DC"
        )
    return result
