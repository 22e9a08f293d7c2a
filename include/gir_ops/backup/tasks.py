"""The shipping DAG's task bodies: list, copy, verify and publish, prune, check freshness.

Each one takes the ``ShippingRoute`` and what the task before it returned (plain JSON in XCom), re-checks
every backup name it is given, and turns a ``BackupError`` a retry cannot heal into an
``AirflowFailException`` (``shared.fail_without_retry``); ``SourceChanged`` and ``WriteFailed`` are
retried, and the retry resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from include.gir_ops.backup.destination import apply_retention, publish, restore_interrupted_swap, unpublish
from include.gir_ops.backup.errors import (
    BackupError,
    BackupStale,
    PublishConflict,
    VerificationFailed,
    name_problems,
)
from include.gir_ops.backup.freshness import check_freshness, stale_message
from include.gir_ops.backup.links import lexists, refuse_link
from include.gir_ops.backup.manifest import PublishedManifest, manifest_document, read_manifest, verify_tree
from include.gir_ops.backup.route import ShippingRoute
from include.gir_ops.backup.spec import MANIFEST_NAME
from include.gir_ops.backup.transfer import CHUNK_SIZE, PROGRESS_EVERY_SECONDS, Throttle, copy_backup
from include.gir_ops.backup.tree import (
    ManifestEntry,
    SourceFile,
    check_backup_name,
    scan_backup,
    storage_path,
)
from include.gir_ops.shared import fail_without_retry, format_size

log = logging.getLogger(__name__)


def _same_listing(files: list[SourceFile], manifest: PublishedManifest) -> bool:
    """The source still lists what the published manifest recorded (names, sizes, source mtimes)."""
    listed = {item.path: item for item in files}
    if {e.path: e.size for e in manifest.entries} != {p: f.size for p, f in listed.items()}:
        return False
    for entry in manifest.document.get("entries", []):
        shipped_mtime, item = entry.get("source_mtime"), listed.get(entry.get("path"))
        known = item is not None and shipped_mtime is not None and item.mtime is not None
        if known and float(shipped_mtime) != item.mtime:
            return False
    return True


def manifest_task(route: ShippingRoute, backup_name: str, *, chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """List the backup (refusing what must not ship) and decide whether it still has to be shipped.

    A backup already published at the destination is read back and verified: if it still verifies it is
    not copied again; if it does not, it is withdrawn (its manifest deleted first) and re-shipped, copying
    only what is damaged, with an error in the log naming the damaged files. A published copy that
    verifies but no longer matches the source (SpeechMiner rewrote the folder) stays published: the new
    copy is staged, verified and only then swapped in (``plan["replace"]``).
    """
    with fail_without_retry(BackupError):
        source = route.source_folder(backup_name)
        files = scan_backup(source)
        total = sum(item.size for item in files)
        log.info("backup %s: %d files, %s", source, len(files), format_size(total))
        plan: dict[str, Any] = {
            "backup_name": backup_name,
            "source": str(source),
            "file_count": len(files),
            "bytes": total,
            "created_at": max((f.mtime for f in files if f.mtime is not None), default=None),
            "files": [[item.path, item.size, item.mtime] for item in files],
            "already_present": False,
            "repaired": [],
            "repair_reason": None,
            "replace": None,
        }
        final, staging = route.final(backup_name), route.staging(backup_name)
        refuse_link(final, "published backup")
        refuse_link(staging, "staging folder")
        refuse_link(route.retired(backup_name), "replaced backup")
        restore_interrupted_swap(final)
        if not lexists(final):
            return plan
        published = read_manifest(final)
        if published is None:
            raise PublishConflict(
                f"{final} exists at {route.to_site} without a {MANIFEST_NAME} (a crashed publish on an "
                "object store, or a manual copy): it is not trusted and this DAG will not overwrite it; "
                "move it away or delete it, then rerun"
            )
        if not _same_listing(files, published):
            log.warning(
                "published %s does not match the source any more (files, sizes or mtimes differ): shipping "
                "the source again; the published copy stays until the new one is verified, then is swapped",
                final,
            )
            plan["repair_reason"] = "the source changed since it was shipped"
            plan["replace"] = published.manifest_sha256
            return plan
        problems = verify_tree(final, published.entries, chunk_size=chunk_size)
        if not problems:
            log.info("%s is already present and verified at %s: nothing to copy", backup_name, route.to_site)
            plan["already_present"] = True
            return plan
        log.error(
            "published backup %s at %s FAILED verification (%s); withdrawing it and re-shipping the "
            "damaged files",
            final,
            route.to_site,
            name_problems(problems),
        )
        unpublish(final, staging)
        plan["repair_reason"] = f"published copy failed verification: {name_problems(problems)}"
        plan["repaired"] = [problem.path for problem in problems]
        return plan


def copy_task(
    route: ShippingRoute,
    plan: Mapping[str, Any],
    *,
    chunk_size: int = CHUNK_SIZE,
    progress_every: float = PROGRESS_EVERY_SECONDS,
    throttle: Throttle | None = None,
) -> dict[str, Any]:
    """Copy the planned files into ``<name>.partial`` (resuming); skipped when already present.

    The copy is capped at ``route.bandwidth_limit_mbps`` (``throttle`` replaces that cap, for tests).
    """
    with fail_without_retry(BackupError):
        name = check_backup_name(plan["backup_name"], route.backup_name_pattern)
    if plan["already_present"]:
        raise AirflowSkipException(
            f"{name} is already present and verified at {route.to_site}: nothing to copy"
        )
    with fail_without_retry(BackupError):
        files = [SourceFile(path, size, mtime) for path, size, mtime in plan["files"]]
        result = copy_backup(
            route.source_folder(plan["backup_name"]),
            files,
            route.staging(plan["backup_name"]),
            last=route.ready_marker,
            chunk_size=chunk_size,
            progress_every=progress_every,
            throttle=throttle or Throttle.from_mbps(route.bandwidth_limit_mbps),
        )
    log.info(
        "copied %s in %d file(s), appended to %d, kept %d already staged (%.1f s%s)",
        format_size(result.bytes_copied),
        len(result.files_copied),
        len(result.files_resumed),
        len(result.files_kept),
        result.seconds,
        ""
        if route.bandwidth_limit_mbps is None and throttle is None
        else f", {result.throttled_seconds:.1f} s of it waiting for the bandwidth cap",
    )
    summary = asdict(result)
    summary["entries"] = [[e.path, e.size, e.sha256] for e in result.entries]
    summary["backup_name"] = plan["backup_name"]
    return summary


def verify_and_publish_task(
    route: ShippingRoute,
    plan: Mapping[str, Any],
    copied: Mapping[str, Any],
    *,
    chunk_size: int = CHUNK_SIZE,
    now: float | None = None,
) -> dict[str, Any]:
    """Read the staged copy back, compare with the source hashes, write MANIFEST.json and publish."""
    with fail_without_retry(BackupError):
        name = plan["backup_name"]
        entries = [ManifestEntry(path, size, sha256) for path, size, sha256 in copied["entries"]]
        staging, final = route.staging(name), route.final(name)
        refuse_link(staging, "staging folder")
        problems = verify_tree(staging, entries, chunk_size=chunk_size)
        if problems:
            raise VerificationFailed(str(staging), problems)
        shipped_at = time.time() if now is None else now
        document = manifest_document(
            backup_name=name,
            entries=entries,
            source=plan["source"],
            source_site=route.from_site,
            site=route.to_site,
            created_at=plan.get("created_at"),
            shipped_at=shipped_at,
            source_mtimes={path: mtime for path, _, mtime in plan["files"]},
        )
        publish(staging, final, document, replace=plan.get("replace"))
    log.info(
        "published %s at %s: %d files, %s, manifest_sha256 %s",
        final,
        route.to_site,
        document["files"],
        format_size(document["bytes"]),
        document["manifest_sha256"],
    )
    return {
        "site": route.to_site,
        "backup_name": name,
        "bytes": document["bytes"],
        "files": document["files"],
        "manifest_sha256": document["manifest_sha256"],
        "shipped_at": document["shipped_at"],
    }


def retention_task(route: ShippingRoute, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Prune the destination, never the backup this run shipped (or found already present)."""
    with fail_without_retry(BackupError):
        protect = check_backup_name(plan["backup_name"], route.backup_name_pattern)
        result = apply_retention(
            route.destination_root(),
            keep=route.keep,
            protect=protect,
            destination_may_be_link=route.destination_may_be_link,
        )
    return asdict(result)


def freshness_task(
    route: ShippingRoute, *, now: float | None = None, states: Mapping[str, str | None] | None = None
) -> dict[str, Any]:
    """Fail (no retry) when the newest verified backup at the destination is too old, saying what the
    source holds and which step of this run failed (``states``: this run's task states)."""
    with fail_without_retry(BackupError):
        try:
            result = check_freshness(
                storage_path(route.destination),
                max_age_hours=route.max_age_hours,
                site=route.to_site,
                now=now,
                destination_may_be_link=route.destination_may_be_link,
            )
        except BackupStale as exc:
            raise BackupStale(stale_message(exc, route, states, now=now)) from exc
    log.info(
        "newest verified backup at %s: %s, %.1f h old (limit %g h)",
        route.to_site,
        result["backup_name"],
        result["age_hours"],
        route.max_age_hours,
    )
    return result


# --- shipping.mode verify-in-place ----------------------------------------------------------------------


def verify_in_place_task(
    route: ShippingRoute, backup_name: str, *, now: float | None = None
) -> dict[str, Any]:
    """Record the newest backup SpeechMiner wrote to the backup DC, re-verify the recorded ones (no retry on
    a change: it will not heal by itself)."""
    from include.gir_ops.backup.in_place import verify_in_place

    with fail_without_retry(BackupError):
        return verify_in_place(route, backup_name, now=now)


def in_place_freshness_task(route: ShippingRoute, *, now: float | None = None) -> dict[str, Any]:
    """Fail (no retry) when the newest recorded, intact backup in the backup DC is too old."""
    from include.gir_ops.backup.in_place import in_place_freshness

    with fail_without_retry(BackupError):
        result = in_place_freshness(route, now=now)
    log.info(
        "newest verified backup at %s: %s, %.1f h old (limit %g h)",
        route.to_site,
        result["backup_name"],
        result["age_hours"],
        route.max_age_hours,
    )
    return result
