"""The destination as a whole: publishing in one step, swapping a replaced copy, withdrawing, retention.

* **publish**: after verification ``MANIFEST.json`` is written and the backup made visible under its
  final name in one step (file://: ``rename(<name>.partial, <name>)``; other stores: move, then write
  ``MANIFEST.json`` last). A failed rename or folder fsync is undone: nothing (or the old copy) stays
  published.
* **retention** keeps the newest ``keep`` verified backups, never deletes the one just shipped, never
  deletes a folder without a verified manifest (it warns instead), and deletes stale ``.partial``
  staging folders of older backups with a warning.
* Nothing is deleted, renamed or written through a symbolic link (``links``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.gir_ops.backup.errors import BackupError, BackupRefused, PublishConflict, WriteFailed
from include.gir_ops.backup.links import (
    check_destination_root,
    lexists,
    refuse_link,
    refuse_links_inside,
)
from include.gir_ops.backup.manifest import PublishedManifest, read_manifest, write_json
from include.gir_ops.backup.spec import MANIFEST_NAME, PARTIAL_SUFFIX, RETIRED_SUFFIX
from include.gir_ops.backup.transfer import fsync_dir
from include.gir_ops.backup.tree import is_local, natural_key, printable, top_level, walk

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)


# --- renames and deletes -------------------------------------------------------------------------------


def _rename(src: ObjectStoragePath, dst: ObjectStoragePath) -> None:
    """One POSIX rename on a local store; a failure is ``WriteFailed`` naming both folders."""
    try:
        os.rename(src.path, dst.path)
    except OSError as exc:
        raise WriteFailed(f"renaming {src} to {dst} failed ({exc})") from exc


def _undo_rename(src: ObjectStoragePath, dst: ObjectStoragePath) -> None:
    try:
        os.rename(src.path, dst.path)
    except OSError as exc:
        log.error("could not rename %s back to %s (%s): check the destination by hand", src, dst, exc)


def sibling(folder: ObjectStoragePath, suffix: str) -> ObjectStoragePath:
    """``<folder><suffix>`` beside ``folder`` (its ``.partial`` or ``.retired`` name)."""
    return folder.parent / f"{folder.name}{suffix}"


def _remove_tree(path: ObjectStoragePath, role: str = "backup folder") -> None:
    """Delete a folder: its manifest first, so no reader sees a half-deleted backup as complete.

    Refused (``BackupRefused``, nothing deleted) when the folder or anything inside it is a link.
    """
    refuse_links_inside(path, role)
    manifest = path / MANIFEST_NAME
    if lexists(manifest):
        manifest.fs.rm(manifest.path)
    if lexists(path):
        path.fs.rm(path.path, recursive=True)


# --- publishing ----------------------------------------------------------------------------------------


def publish(
    staging: ObjectStoragePath,
    final: ObjectStoragePath,
    document: Mapping[str, Any],
    *,
    replace: str | None = None,
) -> None:
    """Make a verified staged backup visible under its final name in one step.

    file://: ``MANIFEST.json`` is written inside the staging folder, then the folder is renamed (one POSIX
    rename: a reader sees either no ``<name>`` or the complete one). Other stores cannot rename a folder
    atomically: the files are moved first and ``MANIFEST.json`` is written last, so the reader rule (only
    a folder with a valid manifest is complete) holds at every moment.

    ``replace`` is the ``manifest_sha256`` of a published copy this verified one replaces (the source
    changed since it was shipped): the old copy stays published until this moment, then is swapped out
    (renamed to ``<name>.retired``, the new one renamed in, the old one deleted). Any other existing
    ``<name>`` is a ``PublishConflict``. A failed rename or folder fsync undoes the swap: the old copy
    (or nothing) stays published.
    """
    refuse_link(staging, "staging folder")
    refuse_link(final, "published backup")
    retired = sibling(final, RETIRED_SUFFIX)
    refuse_link(retired, "replaced backup")
    present = lexists(final)
    if present and replace is None:
        raise PublishConflict(
            f"{final} already exists; move it away (or delete it if it is not a backup you need), then rerun"
        )
    if present:
        current = read_manifest(final)
        if current is None or current.manifest_sha256 != replace:
            raise PublishConflict(
                f"{final} is not the published copy this run planned to replace (its MANIFEST.json changed); "
                "nothing was published: rerun"
            )
        if lexists(retired):
            log.warning("removing %s, left over from an interrupted swap", retired)
            _remove_tree(retired, "replaced backup")
    if is_local(staging) and is_local(final):
        _publish_by_rename(staging, final, document, retired=retired if present else None)
        return
    if present:
        refuse_links_inside(final, "published backup")
        (final / MANIFEST_NAME).fs.rm((final / MANIFEST_NAME).path)
        final.fs.mv(final.path, retired.path, recursive=True)
    staging.fs.mv(staging.path, final.path, recursive=True)
    expected = {entry["path"]: entry["size"] for entry in document["entries"]}
    moved = {relative: int(info.get("size") or 0) for relative, info in walk(final, strict=True)}
    if moved != expected:
        raise PublishConflict(f"{final}: the moved files do not match the verified staging; rerun to re-ship")
    write_json(final / MANIFEST_NAME, document)
    if present:
        _drop_retired(retired)


def _publish_by_rename(
    staging: ObjectStoragePath,
    final: ObjectStoragePath,
    document: Mapping[str, Any],
    *,
    retired: ObjectStoragePath | None,
) -> None:
    """file://: manifest into staging, fsync, rename (swapping out the old copy via ``retired``), fsync."""
    write_json(staging / MANIFEST_NAME, document)
    fsync_dir(staging)
    if retired is not None:
        _rename(final, retired)  # the old, complete copy leaves its name only now
        try:
            _rename(staging, final)
        except WriteFailed:
            _undo_rename(retired, final)
            raise
    else:
        _rename(staging, final)
    try:
        fsync_dir(final.parent)
    except WriteFailed:
        _undo_rename(final, staging)
        if retired is not None:
            _undo_rename(retired, final)
        raise
    if retired is not None:
        _drop_retired(retired)


def _drop_retired(retired: ObjectStoragePath) -> None:
    """Delete the copy a swap replaced; a failure only warns (retention deletes it later)."""
    try:
        _remove_tree(retired, "replaced backup")
    except (BackupError, OSError) as exc:
        log.warning("could not delete the replaced copy %s (%s); retention deletes it later", retired, exc)


def unpublish(final: ObjectStoragePath, staging: ObjectStoragePath) -> None:
    """Withdraw a published backup that failed verification, keeping its files as staging to resume from.

    Refused, with nothing changed, when the published folder, its manifest or the staging folder is a link.
    """
    refuse_link(final, "published backup")
    manifest = final / MANIFEST_NAME
    refuse_link(manifest, "manifest")
    refuse_link(staging, "staging folder")
    if lexists(manifest):
        manifest.fs.rm(manifest.path)  # from here on no reader trusts it
    if lexists(staging):
        log.warning("removing stale staging %s before withdrawing %s into it", staging, final)
        _remove_tree(staging, "staging folder")
    if is_local(final) and is_local(staging):
        _rename(final, staging)
        fsync_dir(final.parent)
    else:
        final.fs.mv(final.path, staging.path, recursive=True)


def restore_interrupted_swap(final: ObjectStoragePath) -> bool:
    """A crash between the two renames of a swap leaves ``<name>.retired`` and no ``<name>``: put the old,
    verified copy back under its name (file:// only). True when it did."""
    retired = sibling(final, RETIRED_SUFFIX)
    if not is_local(final) or lexists(final) or not lexists(retired):
        return False
    refuse_links_inside(retired, "replaced backup")
    try:
        manifest = read_manifest(retired)
    except BackupError:
        manifest = None
    if manifest is None:
        return False
    log.warning(
        "restoring %s from %s: a swap was interrupted before the new copy was renamed in", final, retired
    )
    _rename(retired, final)
    fsync_dir(final.parent)
    return True


# --- what is at the destination, and retention ---------------------------------------------------------


@dataclass
class DestinationState:
    verified: dict[str, PublishedManifest] = field(default_factory=dict)
    unverified: dict[str, str] = field(default_factory=dict)  # folder name -> why it is not trusted
    partials: list[str] = field(default_factory=list)  # backup names with a <name>.partial folder
    retired: list[str] = field(default_factory=list)  # backup names with a <name>.retired folder
    other: list[str] = field(default_factory=list)  # files or links at the top level
    links: dict[str, str] = field(default_factory=dict)  # top-level symbolic links -> their target


def destination_state(destination: ObjectStoragePath) -> DestinationState:
    """Classify everything at the top of the destination; reads manifests only, never backup contents.

    A symbolic link is never entered: it is listed in ``other`` and ``links``.
    """
    state = DestinationState()
    if not destination.exists():
        return state
    for name, info in top_level(destination):
        if info.get("islink"):
            state.other.append(name)
            state.links[name] = printable(str(info.get("destination", "?")))
        elif info.get("type") != "directory":
            state.other.append(name)
        elif name.endswith(PARTIAL_SUFFIX):
            state.partials.append(name[: -len(PARTIAL_SUFFIX)])
        elif name.endswith(RETIRED_SUFFIX):
            state.retired.append(name[: -len(RETIRED_SUFFIX)])
        else:
            try:
                manifest = read_manifest(destination / name)
            except BackupError as exc:
                state.unverified[name] = str(exc)
                continue
            if manifest is None:
                state.unverified[name] = f"no {MANIFEST_NAME}"
            else:
                state.verified[name] = manifest
    return state


@dataclass
class RetentionResult:
    kept: list[str]
    deleted: list[str]
    partials_deleted: list[str]
    unverified_left: list[str]
    other_left: list[str]
    retired_deleted: list[str] = field(default_factory=list)


def apply_retention(
    destination: ObjectStoragePath,
    *,
    keep: int,
    protect: str | None,
    destination_may_be_link: bool = False,
) -> RetentionResult:
    """Keep the newest ``keep`` verified backups (natural name order) and ``protect``; delete older ones.

    Never fewer than one. A folder without a verified manifest is never deleted: a warning names it.
    A ``<name>.partial`` staging folder is deleted (with a warning) when a verified ``<name>`` exists or
    ``<name>`` is older than the newest verified backup: this DAG always ships the newest backup, so such a
    staging folder would never be resumed. Newer staging folders are left for the next run to resume.
    A ``<name>.retired`` folder (a swap interrupted after the new copy was renamed in) is deleted when
    ``<name>`` is verified.

    Symbolic links are never followed or deleted through: a candidate that is or contains a link is left
    alone, a link at the top is left alone, and after everything else was pruned ``BackupRefused`` names
    them all.
    """
    check_destination_root(destination, may_be_link=destination_may_be_link)
    keep = max(1, keep)
    state = destination_state(destination)
    refused: list[str] = [
        f"{destination}/{name} (a link to {target})" for name, target in state.links.items()
    ]

    def remove(name: str, role: str) -> bool:
        try:
            _remove_tree(destination / name, role)
        except BackupRefused as exc:
            log.error("retention: NOT deleting %s/%s: %s", destination, name, exc)
            refused.append(str(exc))
            return False
        return True

    ordered = sorted(state.verified, key=natural_key)
    kept = set(ordered[-keep:])
    if protect is not None and protect in state.verified:
        kept.add(protect)
    deleted = []
    for name in ordered:
        if name in kept:
            continue
        log.info("retention: deleting verified backup %s/%s (keeping the newest %d)", destination, name, keep)
        if remove(name, "backup folder"):
            deleted.append(name)
    for name, why in sorted(state.unverified.items()):
        log.warning(
            "retention: NOT deleting %s/%s: it has no verified manifest (%s); inspect it and delete it by "
            "hand if it is not needed",
            destination,
            name,
            why,
        )
    newest = ordered[-1] if ordered else None
    partials_deleted = [
        f"{name}{PARTIAL_SUFFIX}"
        for name in _stale_partials(destination, state, protect=protect, newest=newest)
        if remove(f"{name}{PARTIAL_SUFFIX}", "staging folder")
    ]
    retired_deleted = [
        f"{name}{RETIRED_SUFFIX}"
        for name in _replaced_copies(destination, state)
        if remove(f"{name}{RETIRED_SUFFIX}", "replaced backup")
    ]
    for name in state.other:
        if name not in state.links:
            log.warning("retention: leaving %s/%s alone: not a backup folder", destination, name)
    if refused:
        raise BackupRefused(
            f"retention at {destination} refused {len(refused)} symbolic link(s), never followed or deleted "
            f"through: {'; '.join(refused)}. Everything else was pruned; remove the links by hand (and find "
            "out who made them): the destination belongs to this DAG"
        )
    return RetentionResult(
        kept=sorted(kept, key=natural_key),
        deleted=deleted,
        partials_deleted=partials_deleted,
        unverified_left=sorted(state.unverified),
        other_left=sorted(state.other),
        retired_deleted=retired_deleted,
    )


def _stale_partials(
    destination: ObjectStoragePath, state: DestinationState, *, protect: str | None, newest: str | None
) -> list[str]:
    """Backup names whose ``.partial`` staging folder will never be resumed (warned about)."""
    stale_names = []
    for name in sorted(state.partials, key=natural_key):
        if name == protect and name not in state.verified:
            continue
        stale = name in state.verified or (newest is not None and natural_key(name) < natural_key(newest))
        if not stale:
            continue
        log.warning(
            "retention: deleting stale staging folder %s/%s%s: an unfinished copy of an older backup that "
            "will never be resumed (readers never trust .partial folders)",
            destination,
            name,
            PARTIAL_SUFFIX,
        )
        stale_names.append(name)
    return stale_names


def _replaced_copies(destination: ObjectStoragePath, state: DestinationState) -> list[str]:
    """Backup names whose ``.retired`` copy (a swap interrupted after the new copy went in) can go."""
    names = []
    for name in sorted(state.retired, key=natural_key):
        if name not in state.verified:
            log.warning(
                "retention: leaving %s/%s%s: %s is not verified; the next run restores it",
                destination,
                name,
                RETIRED_SUFFIX,
                name,
            )
            continue
        log.warning(
            "retention: deleting %s/%s%s, replaced by a newer copy", destination, name, RETIRED_SUFFIX
        )
        names.append(name)
    return names
