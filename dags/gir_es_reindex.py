"""DAGs gir_es_reindex_<site>: the Elasticsearch forceIndex of every DC, daily where reindex.enabled.

One file, one DAG per DC of the topology, so an operator can pause, backfill or rerun one DC without
touching another. The guide asks that "the indexes are up-to-date in all data centers": a DC without
``reindex.enabled`` (the primary indexes as it goes) still gets its DAG, never scheduled, for manual runs
and backfills (the catch-up after an outage, a past range): its timetable, ``ManualAndBackfillOnlyTimetable``
(``include/gir_ops/reindex/timetable.py``, registered by ``plugins/gir_timetables.py``), has the cron
intervals of ``reindex.schedule`` for backfills but never offers the scheduler a run.

Thin wiring only; the logic lives in ``include/gir_ops/reindex/`` (ids and the trigger form in ``spec.py``,
windows, planning, checkpoints, sending).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import CronDataIntervalTimetable, dag, task

from include.gir_ops import notifications, shared
from include.gir_ops.pools import check_pools
from include.gir_ops.reindex import spec
from include.gir_ops.reindex.timetable import ManualAndBackfillOnlyTimetable
from include.gir_ops.topology import DataCenter, load_topology

if TYPE_CHECKING:
    from airflow.sdk import DAG

TOPOLOGY = load_topology()

PLAN_DOC = """
Works out what this run re-indexes, before anything is sent: the run's data interval (scheduled and
backfill runs, and manual runs without `from`/`to`) or a manual run's `from`/`to`, widened outward to whole
UTC hours and cut into windows of at most `reindex.max_window_hours`; the contact centers (topology, or
`GET /api/v2/ops/contact-centers` when the topology list is empty; a listed ID that is not plain hex fails
it at once); the kinds (screen recordings only where `rws.screen_recording`). Bad params (a `to` in the
future, a date before 1970 or not representable) fail it at once, without retry, with a message naming the
param and the fix. It first checks that the DC's RWS answers (`GET /api/v2/ops/contact-centers`, 3
attempts over about 15 s): when it does not, it fails once, "primary unreachable" (or "data center <site>
unreachable") naming the DC, the connection and what was tried, without Airflow retries and before any
POST, so a DC that is down (the primary during a failover) gets no retry storm. Clear it when RWS is back.
"""

SEND_DOC = """
One mapped task per contact center and kind (named "<contact center> <kind>"): one `forceIndex` POST per
window, in order, in the DC's RWS pool. Transient failures (connection refused, timeout, HTTP 5xx,
statusCode 4, HTTP 429 throttling, honouring its Retry-After up to 60 s) are resent with backoff inside
the task and then retried by Airflow; every other refusal
(401/403, statusCode 1, 2, 3, 5, 6, 7, 10) fails it at once with the code's meaning, the DC, the contact
center and the window. Progress is checkpointed after each window (an Airflow Variable
`gir_es_reindex_checkpoint__...`, deleted when the pair completes), so a retry or a clear of a failed task
resumes at the failed window and never re-sends (or re-purges) what already succeeded.
"""


def doc_md(dc: DataCenter) -> str:
    """The DAG's page for operators: what it sends for this DC, and how to run and rerun it."""
    dag_id = spec.dag_id(dc)
    contact_centers = (
        ", ".join(f"`{cc}`" for cc in dc.rws.contact_centers)
        if dc.rws.contact_centers
        else "discovered from RWS at run time (`GET /api/v2/ops/contact-centers`)"
    )
    kinds = "recordings and screen-recordings" if dc.rws.screen_recording else "recordings only"
    if dc.reindex.enabled:
        schedule = (
            f"- **Schedule**: `{dc.reindex.schedule}` in {dc.timezone}; each run re-indexes its data "
            "interval (the\n  period since the previous tick), so consecutive runs tile time."
        )
        several_days = f"""- Several days: *Backfill* (or `airflow backfill create --dag-id {dag_id}
  --from-date 2026-11-01 --to-date 2026-11-03`): the dates are **run start dates** (data interval
  starts), both ends included, in the deployment's time zone; each run re-indexes one schedule period
  from its start, so the hours covered end one period after the last start. For an exact calendar range
  use a manual run with `from`/`to`. Worked examples per DC: `docs/gir_es_reindex.md`, "Backfill: what
  the dates mean". The DAG is created unpaused (backfill runs of a paused DAG stay queued)."""
    else:
        schedule = f"""- **Schedule**: none, **backfill and manual only**: `reindex.enabled` is false for
  {dc.site} (it indexes as it goes), so the scheduler never starts a run, even unpaused (unpause it: the
  runs of a paused DAG, backfill or manual, do not start). Run it to catch up after an outage in which
  recordings were indexed in another DC. Backfill runs, and a run without `from`/`to`, re-index periods
  of `{dc.reindex.schedule}` ({dc.timezone}), the intervals a scheduled DAG would have."""
        several_days = f"""- Several days: *Trigger* → *Backfill*, or `airflow backfill create --dag-id
  {dag_id} --from-date 2026-11-01 --to-date 2026-11-04`: one run per period of
  `{dc.reindex.schedule}`, in the pool; or ONE manual run with `from` and `to` (cut into windows of at
  most {dc.reindex.max_window_hours}h)."""
    return f"""
# Elasticsearch re-index of {dc.site}

Keeps the Elasticsearch index of RWS in **{dc.site}** up to date, as the GIR guide asks of every DC that
keeps its own index: `POST /api/v2/ops/contact-centers/<id>/<kind>` with `operationName: forceIndex`
through RWS, per contact center and index kind, one POST per window.

{schedule}
- **Windows**: the interval widened outward to whole UTC hours (RWS rounds to the nearest hour), at most
  {dc.reindex.max_window_hours}h per POST.
- **Contact centers**: {contact_centers}.
- **Indexes**: {kinds}.
- **RWS connection**: `{dc.rws_conn_id}` (HTTP, basic auth = the RWS ops user).
- **Pool**: `{dc.rws_pool}` (created by `python -m include.gir_ops.bootstrap pools`); its size bounds the
  concurrent POSTs to this RWS, across scheduled, manual and backfill runs.

**Run it**
- Yesterday again: *Trigger* with no params: the schedule period ending at the logical date, or without
  a logical date the latest complete schedule period.
- Any past range: *Trigger* with `from` and `to` (ISO-8601 with offset), optionally `contact_centers`,
  `kinds` and `purge_old` (manual runs only; deletes the index first, then re-indexes the range).
{several_days}

**When it fails** the failed task is named "<contact center> <kind>" and its log ends with the RWS error
(code meaning, DC, contact center, window) and how far the pair got. Fix the cause (credentials in the
connection, RWS down, ...) and *Clear* the failed task: it resumes at the failed window. Bad params fail
task `plan` with the param and the fix. Operator docs: `docs/gir_es_reindex.md`.
"""


def build_reindex_dag(dc: DataCenter) -> DAG:
    """The DAG of one DC; everything DC-specific comes from the topology."""

    @dag(
        dag_id=spec.dag_id(dc),
        # Never scheduled where the DC does not re-index daily: backfill and manual runs only (see the
        # module docstring; catchup=False and no end_date keep the scheduler away from it).
        schedule=(
            CronDataIntervalTimetable(dc.reindex.schedule, timezone=dc.timezone)
            if dc.reindex.enabled
            else ManualAndBackfillOnlyTimetable(dc.reindex.schedule, timezone=dc.timezone)
        ),
        start_date=shared.DAG_START_DATE,
        catchup=False,
        # Created unpaused: a paused scheduled DAG silently does nothing (docs/deployment.md).
        is_paused_upon_creation=shared.paused_upon_creation(),
        max_active_runs=1,
        tags=["gir", "elasticsearch", "reindex", dc.site, *([] if dc.reindex.enabled else ["manual-only"])],
        **notifications.dag_kwargs(
            TOPOLOGY,
            spec.dag_id(dc),
            default_args={
                "owner": "gir-ops",
                "retries": 2,
                "retry_delay": timedelta(minutes=5),
                "pool": dc.rws_pool,
                "pool_slots": 1,
            },
        ),
        params=spec.trigger_params(dc),
        doc_md=doc_md(dc),
        description=(
            f"forceIndex of the Elasticsearch index of RWS {dc.site}, per contact center and kind"
            + ("" if dc.reindex.enabled else " (backfill and manual runs only: reindex.enabled is false)")
        ),
    )
    def gir_es_reindex() -> None:
        @task(task_id=spec.PLAN_TASK_ID, doc_md=PLAN_DOC)
        def plan(**context: Any) -> list[dict[str, Any]]:
            from include.gir_ops.reindex.plan import ReindexParamError, plan_reindex
            from include.gir_ops.rws import RwsClient, RwsError

            with (
                shared.fail_without_retry(ReindexParamError, RwsError),
                RwsClient(dc.site, dc.rws_conn_id) as client,
            ):
                # After the params are checked and before anything is sent, one GET: a DC that is down
                # fails here, once, naming it (no retry storm); discovery reuses its answer.
                role = "primary" if dc.site == TOPOLOGY.primary_site else f"data center {dc.site}"
                listing: list[Any] = []

                def discover() -> list[str]:
                    listing.append(client.ensure_reachable(role=role))
                    return client.contact_center_ids(listing[0])

                pairs = plan_reindex(
                    dc,
                    run_type=context["dag_run"].run_type,
                    data_interval_start=context.get("data_interval_start"),
                    data_interval_end=context.get("data_interval_end"),
                    params=context["params"],
                    discover_contact_centers=discover,
                )
                if not listing:
                    client.ensure_reachable(role=role)
            return [pair.to_dict() for pair in pairs]

        @task(
            task_id=spec.SEND_TASK_ID,
            doc_md=SEND_DOC,
            map_index_template="{{ task.op_kwargs['pair']['contact_center_id'] }} "
            "{{ task.op_kwargs['pair']['kind'] }}",
        )
        def send(pair: dict[str, Any], **context: Any) -> dict[str, Any]:
            from include.gir_ops.reindex.checkpoints import VariableCheckpoints
            from include.gir_ops.reindex.plan import ReindexPair
            from include.gir_ops.reindex.send import ReindexWindowFailed, send_pair
            from include.gir_ops.rws import RwsClient, RwsError

            with (
                shared.fail_without_retry(ReindexWindowFailed, RwsError),
                RwsClient(dc.site, dc.rws_conn_id) as client,
            ):
                return send_pair(
                    ReindexPair.from_dict(pair),
                    client=client,
                    checkpoints=VariableCheckpoints(),
                    dag_id=context["dag"].dag_id,
                    run_id=context["run_id"],
                )

        # check_pools first, in default_pool: plan and send run in the DC's pool, never scheduled if it
        # does not exist.
        planned = plan()
        check_pools() >> planned
        send.expand(pair=planned)

    return gir_es_reindex()


# Every DC gets its DAG (the topology has at least one): scheduled where reindex.enabled, else backfill and
# manual runs only.
for _dc in TOPOLOGY.data_centers:
    build_reindex_dag(_dc)
