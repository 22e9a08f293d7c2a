"""DAG gir_speechminer_backup_ship: SpeechMiner's Daily Index Backup, primary DC -> backup DC, verified.

Thin on purpose: the logic lives in ``include/gir_ops/backup.py`` and ``backup_triggers.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, TriggerRule, dag, get_current_context, task

# Named here so the dag-processor pre-imports it once instead of in every parse (it pre-imports the
# airflow modules a DAG file names; include.gir_ops.backup_triggers imports it too).
from airflow.triggers.base import BaseTrigger  # noqa: F401

from include.gir_ops.assets import speechminer_backup_asset
from include.gir_ops.backup_triggers import SpeechMinerBackupSensor
from include.gir_ops.topology import load_topology

DAG_ID = "gir_speechminer_backup_ship"
TOPOLOGY = load_topology()

DOC_MD = """
# Ship SpeechMiner's daily index backup to the backup DC

The GIR guide: *configure the SpeechMiner Daily Index Backup and write the backup to the backup data center*,
so the backup index can become primary when the primary DC is lost. This DAG copies the newest backup from
`{from_site}` ({source_root}) to `{to_site}` ({destination}) and proves the copy is complete and intact.

Tasks, in order:

- `wait_for_backup`: waits, deferred (no worker slot), until the newest backup folder is complete: marker
  `{marker}` {marker_rule}. Fails at once when there is no backup folder at all; after {wait:g} min it
  fails naming the folder, what is missing and the last change.
- `manifest`: lists every file (path, size, mtime); refuses symlinks, special files and names escaping the
  folder (names them); re-verifies a copy already at `{to_site}` and re-ships only damaged files. A copy
  whose source changed stays published until the new one is verified, then is swapped.
- `copy`: streams into `<name>.partial/`, the source SHA-256 computed while copying; logs bytes, percent
  and MB/s every 10 s; a rerun keeps what is already staged. Skipped when already present.
- `verify_and_publish`: reads the staged copy back, compares size + SHA-256 of every file (a difference
  fails and names the files; nothing is published), writes `MANIFEST.json`, renames `<name>.partial` to
  `<name>` in one step, emits the `{asset}` Asset event.
- `retention`: keeps the newest {keep} verified backups, never the one just shipped, never a folder without
  a verified manifest (it warns instead); deletes stale `.partial` folders of older backups (warns).
- `freshness`: runs **always**, even when nothing new was shipped: fails when the newest verified backup
  at `{to_site}` is older than {max_age:g} h, with its age.
- `fail_run_if_shipping_failed`: makes the run red when a shipping task failed (freshness is the other
  leaf and would otherwise decide the run's state alone).

**Never escaped, never swallowed**: a symbolic link anywhere at the destination (staging, published copy,
retention candidates, the destination itself unless `destination_may_be_link`) fails the task naming it and
is never followed, written or deleted through; a failed fsync, close or rename fails the task naming the file
and publishes nothing. Only folders matching `backup_name_pattern` (`{pattern}`) are backups.

**Readers** trust `<destination>/<name>/` only when `MANIFEST.json` exists and its entries match the files;
`*.partial` folders are never complete. A backup already present and verified is not copied again (copy and
verify are *skipped*, no new Asset event).

**Run**: scheduled `{schedule}` in {timezone} (after SpeechMiner's backup window). To ship now: trigger the
DAG (no conf). After a failure, trigger again or clear `manifest` with downstream: the rerun resumes from
the staged files. Backfills make no sense here (each run ships the newest backup); `catchup` is off and one
run at a time.

**Topology** (`shipping`): from_site, to_site, destination, keep, schedule, ready_marker, quiet_minutes,
max_age_hours, wait_timeout_minutes, poll_seconds, backup_name_pattern, destination_may_be_link. Storage
credentials, if a URL is `scheme://conn_id@...`, come from that Airflow connection. Full operator notes:
`docs/gir_speechminer_backup_ship.md`.
"""


def _route() -> Any:
    """The shipping route, built inside a task: ``backup`` is too heavy to import on every DAG parse."""
    from include.gir_ops.backup import ShippingRoute

    return ShippingRoute.from_topology(TOPOLOGY)


if TOPOLOGY.shipping is not None:
    SHIPPING = TOPOLOGY.shipping
    SOURCE_ROOT = TOPOLOGY.site(SHIPPING.from_site).speechminer.index_backup
    ASSET = speechminer_backup_asset(SHIPPING.to_site)
    SOURCE_TZ = TOPOLOGY.site(SHIPPING.from_site).timezone

    @dag(
        dag_id=DAG_ID,
        schedule=CronDataIntervalTimetable(SHIPPING.schedule, timezone=SOURCE_TZ),
        start_date=pendulum.datetime(2026, 1, 1, tz=SOURCE_TZ),
        catchup=False,
        max_active_runs=1,
        tags=["gir", "speechminer", "backup", f"site:{SHIPPING.from_site}", f"site:{SHIPPING.to_site}"],
        default_args={"owner": "gir-ops", "retries": 2, "retry_delay": timedelta(minutes=5)},
        doc_md=DOC_MD.format(
            from_site=SHIPPING.from_site,
            to_site=SHIPPING.to_site,
            source_root=SOURCE_ROOT,
            destination=SHIPPING.destination,
            marker=SHIPPING.ready_marker or "(none)",
            marker_rule=(
                "must exist"
                if SHIPPING.ready_marker
                else (
                    f"unset, so: nothing (files or folders) changed for {SHIPPING.quiet_minutes:g} min and "
                    "two scans that far apart listed the same files"
                )
            ),
            wait=SHIPPING.wait_timeout_minutes,
            keep=SHIPPING.keep,
            max_age=SHIPPING.max_age_hours,
            schedule=SHIPPING.schedule,
            timezone=SOURCE_TZ,
            asset=ASSET.name,
            pattern=SHIPPING.backup_name_pattern,
        ),
    )
    def gir_speechminer_backup_ship() -> None:
        wait_for_backup = SpeechMinerBackupSensor(
            task_id="wait_for_backup",
            source_root=SOURCE_ROOT,
            ready_marker=SHIPPING.ready_marker,
            quiet_minutes=SHIPPING.quiet_minutes,
            wait_timeout_minutes=SHIPPING.wait_timeout_minutes,
            poll_seconds=SHIPPING.poll_seconds,
            backup_name_pattern=SHIPPING.backup_name_pattern,
            doc_md="Deferred wait for the newest backup to be complete (marker, else quiet period).",
        )

        @task(
            doc_md="List the backup, refuse what must not ship, re-verify a copy already at the destination."
        )
        def manifest(ready: dict[str, Any]) -> dict[str, Any]:
            from include.gir_ops import backup

            return backup.manifest_task(_route(), ready["backup_name"])

        @task(
            doc_md="Stream into <name>.partial, hashing the source; resumes from staged files. Safe to retry."
        )
        def copy(plan: dict[str, Any]) -> dict[str, Any]:
            from include.gir_ops import backup

            return backup.copy_task(_route(), plan)

        @task(
            outlets=[ASSET], doc_md="Read back, compare with the source hashes, write MANIFEST.json, publish."
        )
        def verify_and_publish(plan: dict[str, Any], copied: dict[str, Any]) -> dict[str, Any]:
            from include.gir_ops import backup

            published = backup.verify_and_publish_task(_route(), plan, copied)
            get_current_context()["outlet_events"][ASSET].extra = published
            return published

        @task(
            trigger_rule=TriggerRule.NONE_FAILED,
            doc_md="Keep the newest verified backups; warn, never guess.",
        )
        def retention(plan: dict[str, Any]) -> dict[str, Any]:
            from include.gir_ops import backup

            return backup.retention_task(_route(), plan)

        @task(
            trigger_rule=TriggerRule.ALL_DONE, doc_md="Fail loudly when the newest verified copy is too old."
        )
        def freshness() -> dict[str, Any]:
            from include.gir_ops import backup

            return backup.freshness_task(_route())

        @task(
            trigger_rule=TriggerRule.ONE_FAILED,
            retries=0,
            doc_md=(
                "Runs only when a shipping task failed, to make the run fail (freshness is the other leaf). "
                "Never retried: it does no work, it only reports the failure above it."
            ),
        )
        def fail_run_if_shipping_failed() -> None:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                "shipping failed: see the failed task above (wait_for_backup, manifest, copy, "
                "verify_and_publish or retention) for the folder or file and what to do"
            )

        plan = manifest(wait_for_backup.output)
        copied = copy(plan)
        published = verify_and_publish(plan, copied)
        pruned = retention(plan)
        published >> pruned
        pruned >> freshness()
        [wait_for_backup, plan, copied, published, pruned] >> fail_run_if_shipping_failed()

    gir_speechminer_backup_ship()
