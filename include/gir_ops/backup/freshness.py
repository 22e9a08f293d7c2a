"""Freshness: the newest verified backup at the destination must be younger than ``max_age_hours``.

Measured from when SpeechMiner finished writing it (the manifest's ``created_at``; ``shipped_at`` when the
store has no mtimes), because that is how old the index would be after a failover.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from include.gir_ops.backup.destination import destination_state
from include.gir_ops.backup.errors import BackupStale
from include.gir_ops.backup.links import check_destination_root
from include.gir_ops.backup.tree import utc_datetime
from include.gir_ops.shared import format_utc, iso_utc

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


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
