"""Freshness: the newest verified backup at the destination must be younger than ``max_age_hours``.

Measured from when SpeechMiner finished writing it (the manifest's ``created_at``; ``shipped_at`` when the
store has no mtimes), because that is how old the index would be after a failover.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from include.gir_ops.backup.destination import destination_state
from include.gir_ops.backup.errors import BackupNotFound, BackupStale, SourceUnreachable
from include.gir_ops.backup.links import check_destination_root
from include.gir_ops.backup.tree import list_backups, mtime_of, storage_path, utc_datetime
from include.gir_ops.shared import format_age, format_utc, iso_utc, missing_path_detail

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import ObjectStoragePath

    from include.gir_ops.backup.route import ShippingRoute

# The shipping steps before freshness, in order: the stale alarm names the one that failed in this run.
SHIPPING_STEPS = ("wait_for_backup", "manifest", "copy", "verify_and_publish", "retention")


def check_freshness(
    destination: ObjectStoragePath,
    *,
    max_age_hours: float,
    site: str,
    now: float | None = None,
    destination_may_be_link: bool = False,
) -> dict[str, Any]:
    """The newest verified backup's age; raises ``BackupStale`` (with the age) beyond ``max_age_hours``.

    Links at the destination never count as backups.
    """
    if not destination.exists():
        raise BackupStale(
            f"no verified SpeechMiner backup at {site}: the destination cannot be read: "
            f"{missing_path_detail(str(destination), 'folder')}"
        )
    check_destination_root(destination, may_be_link=destination_may_be_link)
    now = time.time() if now is None else now
    state = destination_state(destination)
    dated = [(m.as_of, name) for name, m in state.verified.items() if m.as_of is not None]
    if not dated:
        raise BackupStale(
            f"no verified SpeechMiner backup at {site} ({destination}): the backup DC has no index it could "
            "promote; check this DAG's earlier runs and the source backups"
        )
    as_of, name = max(dated)
    as_of_utc = utc_datetime(as_of)
    age_hours = (now - as_of) / 3600
    result = {
        "site": site,
        "backup_name": name,
        "as_of": iso_utc(as_of_utc),
        "age_hours": round(age_hours, 2),
        "max_age_hours": max_age_hours,
    }
    if age_hours > max_age_hours:
        raise BackupStale(
            f"the newest verified SpeechMiner backup at {site} is {name}, {age_hours:.1f} h old (as of "
            f"{format_utc(as_of_utc)}), more than shipping.max_age_hours={max_age_hours:g}: the backup DC's "
            "index is stale; check that SpeechMiner still writes its Daily Index Backup and that this DAG "
            "ships it"
        )
    return result


def source_view(route: ShippingRoute, *, now: float | None = None) -> str:
    """The newest backup seen at the source and its age, or why the source cannot be read."""
    now = time.time() if now is None else now
    root = storage_path(route.source_root)
    try:
        names = list_backups(root, pattern=route.backup_name_pattern)
    except SourceUnreachable:
        return (
            f"the source ({route.from_site}) cannot be read from this worker: "
            f"{missing_path_detail(route.source_root, 'folder')}"
        )
    except BackupNotFound as exc:
        return f"the source ({route.from_site}): {exc}"
    except OSError as exc:
        return f"the source ({route.from_site}) cannot be listed: {route.source_root}: {exc.strerror or exc}"
    if not names:
        return f"no backup folder at the source ({route.from_site}, {route.source_root})"
    newest = names[-1]
    try:
        folder = root / newest
        mtime = mtime_of(folder.fs.info(folder.path))
    except OSError:
        mtime = None
    written = utc_datetime(mtime) if mtime is not None else None
    when = (
        f"last written {format_utc(written)}, {format_age(written, utc_datetime(now))}"
        if written
        else "age unknown"
    )
    return f"newest backup seen at the source ({route.from_site}): {newest} ({when})"


def failed_steps_view(states: Mapping[str, str | None] | None) -> str:
    """Which shipping step of this run failed (the first, in DAG order), from the run's task states."""
    if states is None:
        return "which step failed in this run is unknown (see the run's task states)"
    failed = [step for step in SHIPPING_STEPS if states.get(step) in ("failed", "upstream_failed")]
    first = next((step for step in failed if states.get(step) == "failed"), None)
    if first:
        return f"the step that failed in this run: {first} (its log says why)"
    return "no shipping step failed in this run: there was nothing newer at the source to ship"


def stale_message(
    exc: BackupStale,
    route: ShippingRoute,
    states: Mapping[str, str | None] | None,
    *,
    now: float | None = None,
) -> str:
    """The stale alarm: the destination's newest copy, the source's newest backup, the failed step."""
    return f"{exc}\n- {source_view(route, now=now)}\n- {failed_steps_view(states)}"
