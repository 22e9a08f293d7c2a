"""DAG gir_speechminer_backup_ship: SpeechMiner's Daily Index Backup in the backup DC, verified.

``shipping.mode: copy`` ships it from the primary DC; ``verify-in-place`` (SpeechMiner writes it to the
backup DC itself, as the guide describes) only verifies and records what arrived.

Thin on purpose: the logic lives in ``include/gir_ops/backup/``. Without a ``shipping`` section in the
topology shipping is not configured: this file defines no DAG and logs one warning saying so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, CronDataIntervalTimetable, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowFailException

# Named here so the dag-processor pre-imports it once instead of in every parse (it pre-imports the
# airflow modules a DAG file names; include.gir_ops.backup.triggers imports it too).
from airflow.triggers.base import BaseTrigger  # noqa: F401

from include.gir_ops import notifications, shared
from include.gir_ops.backup import spec
from include.gir_ops.backup.sensors import SpeechMinerBackupSensor
from include.gir_ops.topology import ShippingSettings, load_topology

if TYPE_CHECKING:
    from include.gir_ops.backup.route import ShippingRoute

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
  at `{to_site}` is older than {max_age:g} h, with its age, the newest backup seen at the source and its
  age (or why the source cannot be read: a missing folder vs a share not mounted), and which step of this
  run failed.
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

**Topology** (`shipping`): from_site, to_site, destination, mode (`copy` here), keep, schedule,
ready_marker, quiet_minutes, max_age_hours, wait_timeout_minutes, poll_seconds, backup_name_pattern,
destination_may_be_link. Storage
credentials, if a URL is `scheme://conn_id@...`, come from that Airflow connection. Without a `shipping`
section no DAG is defined. Full operator notes: `docs/gir_speechminer_backup_ship.md`.
"""


IN_PLACE_DOC_MD = """
# Verify SpeechMiner's daily index backup where it arrived, in the backup DC

The GIR guide: *configure the SpeechMiner Daily Index Backup and write the backup to the backup data
center*. Here SpeechMiner writes it to `{to_site}` itself (`{destination}`; `shipping.mode:
verify-in-place`): this DAG copies nothing, it proves every day that the newest backup arrived, is complete
and recent, and that the backups it recorded earlier are unchanged.

- `wait_for_backup`: waits, deferred (no worker slot), until the newest backup folder at `{to_site}` is
  complete: marker `{marker}` {marker_rule}. Fails at once when there is no backup folder at all; after
  {wait:g} min it fails naming the folder, what is missing and the last change.
- `verify_in_place`: hashes every file of the newest backup and records its manifest in
  `{manifest_root}/<name>.json` (never inside SpeechMiner's folder), then re-reads every recorded backup
  among the newest {keep} and compares it with its manifest: a changed, missing or added file fails the
  run (no retry) naming the backup and the files. Manifests of backups SpeechMiner deleted are removed.
  Emits the `{asset}` Asset event (`shipped_at` = SpeechMiner's last write).
- `freshness`: runs **always**: fails when the newest recorded, intact backup is older than {max_age:g} h
  (measured from SpeechMiner's last write).
- `fail_run_if_shipping_failed`: makes the run red when the wait or the verification failed.

**Run**: scheduled `{schedule}` in {timezone}. To check now: trigger the DAG (no conf). Full operator
notes, and what comes from the guide versus what is our assumption: `docs/gir_speechminer_backup_ship.md`.
"""


def _route() -> ShippingRoute:
    """The shipping route, built inside a task: the logic modules are too heavy to import on every parse."""
    from include.gir_ops.backup.route import ShippingRoute

    return ShippingRoute.from_topology(TOPOLOGY)


def _run_states(context: dict[str, Any]) -> dict[str, str | None] | None:
    """This run's task states (task id -> state), for the stale alarm; None when Airflow cannot say."""
    try:
        found = context["ti"].get_task_states(dag_id=context["dag"].dag_id, run_ids=[context["run_id"]])
    except Exception:  # an older Task SDK or a supervisor without the call: the alarm says "unknown"
        return None
    states = found.get(context["run_id"], found) if isinstance(found, dict) else None
    return {str(k): (str(v) if v is not None else None) for k, v in states.items()} if states else None


def _doc_md(shipping: ShippingSettings, source_root: str | None, timezone: str) -> str:
    marker_rule = (
        "(our convention, not SpeechMiner's) must exist"
        if shipping.ready_marker
        else (
            f"unset, so: nothing (files or folders) changed for {shipping.quiet_minutes:g} min and "
            "two scans that far apart listed the same files"
        )
    )
    if shipping.mode == "verify-in-place":
        return IN_PLACE_DOC_MD.format(
            to_site=shipping.to_site,
            destination=shipping.destination,
            marker=shipping.ready_marker or "(none)",
            marker_rule=marker_rule,
            wait=shipping.wait_timeout_minutes,
            manifest_root=shipping.manifest_root,
            keep=shipping.keep,
            asset=spec.speechminer_backup_asset(shipping.to_site).name,
            max_age=shipping.max_age_hours,
            schedule=shipping.schedule,
            timezone=timezone,
        )
    return DOC_MD.format(
        from_site=shipping.from_site,
        to_site=shipping.to_site,
        source_root=source_root,
        destination=shipping.destination,
        marker=shipping.ready_marker or "(none)",
        marker_rule=marker_rule,
        wait=shipping.wait_timeout_minutes,
        keep=shipping.keep,
        max_age=shipping.max_age_hours,
        schedule=shipping.schedule,
        timezone=timezone,
        asset=spec.speechminer_backup_asset(shipping.to_site).name,
        pattern=shipping.backup_name_pattern,
    )


def build_backup_ship_dag(shipping: ShippingSettings) -> DAG:
    """The shipping DAG for the topology's ``shipping`` route; the source DC's clock drives the schedule."""
    source = TOPOLOGY.site(shipping.from_site)
    in_place = shipping.mode == "verify-in-place"
    # Where the sensor looks: the backup DC itself in verify-in-place mode, else the primary's folder
    # (never None there: the topology refuses a copy route without one).
    source_root = shipping.destination if in_place else source.speechminer.index_backup
    asset = spec.speechminer_backup_asset(shipping.to_site)

    @dag(
        dag_id=spec.DAG_ID,
        schedule=CronDataIntervalTimetable(shipping.schedule, timezone=source.timezone),
        start_date=shared.DAG_START_DATE,
        catchup=False,
        # Created unpaused: a paused scheduled DAG silently does nothing (docs/deployment.md).
        is_paused_upon_creation=shared.paused_upon_creation(),
        max_active_runs=1,
        tags=["gir", "speechminer", "backup", f"site:{shipping.from_site}", f"site:{shipping.to_site}"],
        **notifications.dag_kwargs(
            TOPOLOGY,
            spec.DAG_ID,
            default_args={"owner": "gir-ops", "retries": 2, "retry_delay": timedelta(minutes=5)},
        ),
        doc_md=_doc_md(shipping, source_root, source.timezone),
    )
    def gir_speechminer_backup_ship() -> None:
        wait_for_backup = SpeechMinerBackupSensor(
            task_id=spec.WAIT_FOR_BACKUP,
            source_root=source_root,
            ready_marker=shipping.ready_marker,
            quiet_minutes=shipping.quiet_minutes,
            wait_timeout_minutes=shipping.wait_timeout_minutes,
            poll_seconds=shipping.poll_seconds,
            backup_name_pattern=shipping.backup_name_pattern,
            source_site=shipping.from_site,
            doc_md="Deferred wait for the newest backup to be complete (marker, else quiet period).",
        )

        @task(
            task_id=spec.MANIFEST,
            doc_md="List the backup, refuse what must not ship, re-verify a copy already at the destination.",
        )
        def manifest(ready: dict[str, Any]) -> dict[str, Any]:
            from include.gir_ops.backup import tasks

            return tasks.manifest_task(_route(), ready["backup_name"])

        @task(
            task_id=spec.COPY,
            doc_md=(
                "Stream into <name>.partial, hashing the source; resumes from staged files. Safe to retry."
            ),
        )
        def copy(plan: dict[str, Any]) -> dict[str, Any]:
            from include.gir_ops.backup import tasks

            return tasks.copy_task(_route(), plan)

        @task(
            task_id=spec.VERIFY_AND_PUBLISH,
            outlets=[asset],
            doc_md="Read back, compare with the source hashes, write MANIFEST.json, publish.",
        )
        def verify_and_publish(
            plan: dict[str, Any], copied: dict[str, Any], **context: Any
        ) -> dict[str, Any]:
            from include.gir_ops.backup import tasks

            published = tasks.verify_and_publish_task(_route(), plan, copied)
            context["outlet_events"][asset].extra = published
            return published

        @task(
            task_id=spec.RETENTION,
            trigger_rule=TriggerRule.NONE_FAILED,
            doc_md="Keep the newest verified backups; warn, never guess.",
        )
        def retention(plan: dict[str, Any]) -> dict[str, Any]:
            from include.gir_ops.backup import tasks

            return tasks.retention_task(_route(), plan)

        @task(
            task_id=spec.FRESHNESS,
            trigger_rule=TriggerRule.ALL_DONE,
            doc_md="Fail loudly when the newest verified copy is too old.",
        )
        def freshness(**context: Any) -> dict[str, Any]:
            from include.gir_ops.backup import tasks

            return tasks.freshness_task(_route(), states=_run_states(context))

        @task(
            task_id=spec.FAIL_RUN_IF_SHIPPING_FAILED,
            trigger_rule=TriggerRule.ONE_FAILED,
            retries=0,
            doc_md=(
                "Runs only when a shipping task failed, to make the run fail (freshness is the other leaf). "
                "Never retried: it does no work, it only reports the failure above it."
            ),
        )
        def fail_run_if_shipping_failed() -> None:
            raise AirflowFailException(
                "shipping failed: see the failed task above (wait_for_backup, manifest, copy, "
                "verify_and_publish, retention or verify_in_place) for the folder or file and what to do"
            )

        if in_place:

            @task(
                task_id=spec.VERIFY_IN_PLACE,
                outlets=[asset],
                doc_md="Record the newest backup's manifest; re-verify the recorded ones; prune the gone.",
            )
            def verify_in_place(ready: dict[str, Any], **context: Any) -> dict[str, Any]:
                from include.gir_ops.backup import tasks

                verified = tasks.verify_in_place_task(_route(), ready["backup_name"])
                context["outlet_events"][asset].extra = verified
                return verified

            @task(
                task_id=spec.FRESHNESS,
                trigger_rule=TriggerRule.ALL_DONE,
                doc_md="Fail loudly when the newest recorded, intact backup is too old.",
            )
            def in_place_freshness() -> dict[str, Any]:
                from include.gir_ops.backup import tasks

                return tasks.in_place_freshness_task(_route())

            verified = verify_in_place(wait_for_backup.output)
            verified >> in_place_freshness()
            [wait_for_backup, verified] >> fail_run_if_shipping_failed()
            return

        plan = manifest(wait_for_backup.output)
        copied = copy(plan)
        published = verify_and_publish(plan, copied)
        pruned = retention(plan)
        published >> pruned
        pruned >> freshness()
        [wait_for_backup, plan, copied, published, pruned] >> fail_run_if_shipping_failed()

    return gir_speechminer_backup_ship()


if TOPOLOGY.shipping is None:
    shared.not_configured(
        spec.DAG_ID,
        "shipping section",
        "add one (from_site, to_site, destination) to enable SpeechMiner backup shipping",
    )
else:
    build_backup_ship_dag(TOPOLOGY.shipping)
