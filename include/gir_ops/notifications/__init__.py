"""Notifications to the on-call, through Apprise: what a DAG file wires in one line.

* ``@dag(..., **notifications.dag_kwargs(TOPOLOGY, DAG_ID, default_args={...}))``: the run-failed message
  (a DAG ``on_failure_callback``, plus a task ``on_failure_callback`` in ``default_args`` that keeps each
  failed task's scrubbed error line), the failover's outcome message, and the DAG's Deadline Alert.
* ``notifiers=notifications.approval_notifiers(TOPOLOGY, record_task_id=...)`` on a HITL operator: the
  approval-waiting message with the link to the Required Action.

Everything follows the topology's ``notifications`` section: without it, or with an event
``enabled: false``, nothing is added (``default_args`` come back as given). Parsed with every DAG file, so
this imports only ``airflow.sdk`` and the light :mod:`notifiers`; building and sending happen when a
callback runs (:mod:`messages`, :mod:`scrub`, :mod:`delivery`, :mod:`facts`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from include.gir_ops.notifications.notifiers import (
    ApprovalWaitingNotifier,
    FailoverOutcomeNotifier,
    RunFailedNotifier,
    deadline_missed,
    record_failure,
)
from include.gir_ops.topology import NotificationEvent, Topology

EVENTS = ("run_failed", "approval_waiting", "failover_outcome", "deadline_missed")
# The keystore check is late when it has not finished this many schedule periods after it was queued.
KEYSTORE_MISSED_PERIODS = 2
FAILOVER_DAG_ID = "gir_eservices_failover"  # = failover.spec.DAG_ID (not imported: every DAG parses this)
AIRFLOW_API_CONN_ID = "gir_airflow_api"  # = airflow_api.AIRFLOW_API_CONN_ID, kept light the same way


def route(topology: Topology, event: str) -> tuple[str, str | None] | None:
    """(Apprise connection, tag) of ``event``, or None when notifications or this event are off."""
    settings = topology.notifications
    if settings is None:
        return None
    chosen: NotificationEvent = getattr(settings, event)
    if not chosen.enabled:
        return None
    return chosen.conn_id or settings.conn_id, chosen.tag or settings.tag


def secret_conn_ids(topology: Topology) -> list[str]:
    """Every connection the project reads secrets from: their values are masked in any message."""
    ids = [dc.rws_conn_id for dc in topology.data_centers]
    ids += [rcs.password_conn_id for _, rcs in topology.rcs_instances if rcs.password_conn_id]
    ids.append(AIRFLOW_API_CONN_ID)
    if topology.notifications is not None:
        ids += [topology.notifications.conn_id]
        ids += [getattr(topology.notifications, e).conn_id for e in EVENTS]
    return [i for i in dict.fromkeys(ids) if i]


def _notifier(cls: type, topology: Topology, event: str, **kwargs: Any) -> Any | None:
    chosen = route(topology, event)
    if chosen is None:
        return None
    conn_id, tag = chosen
    return cls(conn_id=conn_id, tag=tag, secret_conn_ids=secret_conn_ids(topology), **kwargs)


def dag_kwargs(
    topology: Topology,
    dag_id: str,
    default_args: Mapping[str, Any] | None = None,
    verdict_task: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``@dag``: callbacks, Deadline Alert and ``default_args`` (given ones kept).

    ``verdict_task``: for a DAG with params that have no default (a manually triggered, approved change),
    the id of its last task that always runs (trigger rule all_done) and fails exactly when the run does;
    the run-failed message is then sent from that task's failure callback instead of the DAG's. (Airflow
    3.3 builds a DAG callback's context by validating the DAG's params, which raises under ``dag.test()``
    when a required param has no default.) The failover is such a DAG, with ``outcome``.
    """
    kwargs: dict[str, Any] = {}
    task_defaults = dict(default_args or {})
    if dag_id == FAILOVER_DAG_ID:
        _verdict_callbacks(topology, task_defaults, verdict_task or "outcome", failover=True)
    elif verdict_task:
        _verdict_callbacks(topology, task_defaults, verdict_task, failover=False)
    else:
        run_failed = _notifier(RunFailedNotifier, topology, "run_failed")
        if run_failed is not None:
            kwargs["on_failure_callback"] = [run_failed]
            task_defaults.setdefault("on_failure_callback", record_failure)
    if default_args is not None or task_defaults:
        kwargs["default_args"] = task_defaults
    alert = deadline_alert(topology, dag_id)
    if alert is not None:
        kwargs["deadline"] = alert
    return kwargs


def _verdict_callbacks(
    topology: Topology, task_defaults: dict[str, Any], verdict_task: str, *, failover: bool
) -> None:
    """The run-failed message (and the failover's outcome) from the verdict task's own callbacks."""
    outcome = (
        _notifier(
            FailoverOutcomeNotifier,
            topology,
            "failover_outcome",
            audit_task_id="audit",
            preflight_task_id="preflight",
            only_task_id=verdict_task,
        )
        if failover
        else None
    )
    run_failed = _notifier(RunFailedNotifier, topology, "run_failed", only_task_id=verdict_task)
    on_failure = [c for c in (record_failure if run_failed else None, run_failed, outcome) if c is not None]
    if on_failure:
        task_defaults.setdefault("on_failure_callback", on_failure)
    if outcome is not None:
        task_defaults.setdefault("on_success_callback", [outcome])


def approval_notifiers(topology: Topology, record_task_id: str | None = None) -> list[Any]:
    """``notifiers=`` for a HITL operator: the approval-waiting message, or [] when that event is off."""
    notifier = _notifier(ApprovalWaitingNotifier, topology, "approval_waiting", record_task_id=record_task_id)
    return [notifier] if notifier is not None else []


def deadline_spec(topology: Topology, dag_id: str) -> tuple[timedelta, str] | None:
    """(how long after the run was queued it must have finished, what the alert says) for ``dag_id``."""
    for dc in topology.data_centers:
        # Only a DC that re-indexes nightly: a manual-only DC's catch-up run may rightly take longer.
        if dag_id == f"gir_es_reindex_{dc.site_slug}" and dc.reindex.enabled:
            hours = dc.reindex.deadline_hours
            return timedelta(hours=hours), (
                f"The nightly Elasticsearch re-index of {dc.site} has not finished {hours:g} h after its "
                "interval ended (reindex.deadline_hours): the standby index is falling behind. Look at the "
                "run's send tasks (RWS down? pool full?)."
            )
    if topology.shipping is not None and dag_id == "gir_speechminer_backup_ship":
        hours = topology.shipping.deadline_hours
        return timedelta(hours=hours), (
            f"The SpeechMiner backup was not shipped to {topology.shipping.to_site} in time: the run has not "
            f"finished {hours:g} h after it was queued (shipping.deadline_hours). Look at wait_for_backup "
            "(backup not complete?) and copy."
        )
    if dag_id == "gir_rcs_keystore_check" and topology.rcs_instances:
        period = cron_period(topology.keystore_check.schedule, topology.primary.timezone)
        late = period * KEYSTORE_MISSED_PERIODS
        return late, (
            f"The RCS keystore check did not run for {KEYSTORE_MISSED_PERIODS} periods: this run has not "
            f"finished {_hours(late)} after it was queued (schedule {topology.keystore_check.schedule}). "
            "Keystore drift would go unnoticed: look for queued tasks (workers, pools) or a hung mount."
        )
    return None


def under_dags_test() -> bool:
    """True in ``airflow dags test``: Airflow 3.3.2's ``dag.test()`` keeps a DAG's Deadline Alerts in their
    encoded form where it expects their ids, and a run that succeeds then ends in ``AttributeError: 'dict'
    object has no attribute 'hex'`` (``DeadlineAlert.get_by_id``). That command never creates a deadline
    anyway (its run is never queued), so the DAG it parses goes without one."""
    return sys.argv[1:3] == ["dags", "test"]


def deadline_alert(topology: Topology, dag_id: str) -> DeadlineAlert | None:
    """The DAG's Deadline Alert (Airflow 3.3), measured from when a run was queued: for a scheduled run
    that is when its data interval ends (re-index, backup) or its tick (keystore check)."""
    spec = deadline_spec(topology, dag_id)
    chosen = route(topology, "deadline_missed")
    if spec is None or chosen is None or under_dags_test():
        return None
    interval, what = spec
    conn_id, tag = chosen
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(deadline_missed, kwargs={"conn_id": conn_id, "tag": tag, "what": what}),
        name=f"{dag_id} late",
    )


@functools.lru_cache(maxsize=32)
def cron_period(cron: str, timezone: str) -> timedelta:
    """The longest gap between two consecutive ticks of ``cron`` (wall clock) over a week of ticks at most:
    the period of a regular schedule, the longest one of an irregular one (weekdays only: 3 days).

    Computed on every parse of the keystore DAG file, so on naive wall-clock times (the zone does not
    change a period) and over a few ticks only. ``timezone`` stays in the signature for the cache key.
    """
    from datetime import datetime

    from croniter import croniter

    start = datetime(2024, 1, 1)  # a Monday
    ticks = croniter(cron, start)
    previous = ticks.get_next(datetime)
    longest = timedelta(0)
    for _ in range(8):
        current = ticks.get_next(datetime)
        longest = max(longest, current - previous)
        previous = current
        if current - start > timedelta(days=8):
            break
    return longest


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours >= 1 else f"{hours * 60:g} min"


def doctor_rows(topology: Topology) -> list[dict[str, str]]:
    """gir_doctor's rows: every configured channel (connection and tag) takes a real test message.

    A channel that refuses it is a FAIL: an alert that reaches nobody is found on deployment day, not during
    the incident. Sending is the only honest check (Apprise cannot tell whether a URL works otherwise).
    """
    from include.gir_ops.notifications.delivery import Route, deliver
    from include.gir_ops.notifications.messages import Message

    fix = (
        "check Apprise connection {conn_id} (type apprise, extra "
        '{{"config": {{"path": "<apprise URL>"}}}}) and the service behind it; see docs/notifications.md'
    )
    if topology.notifications is None:
        return [
            {
                "check": "notifications",
                "status": "NOT CONFIGURED",
                "result": "the topology has no `notifications` section: failed runs, waiting approvals and "
                "missed deadlines show only in the Airflow UI",
                "fix": "add a `notifications` section naming an Apprise connection (docs/notifications.md)",
            }
        ]
    channels: dict[tuple[str, str | None], list[str]] = {}
    for event in EVENTS:
        chosen = route(topology, event)
        if chosen is not None:
            channels.setdefault(chosen, []).append(event)
    if not channels:
        return [
            {
                "check": "notifications",
                "status": "NOT CONFIGURED",
                "result": "every notification event is switched off (`enabled: false`)",
                "fix": "switch on the events the on-call needs (docs/notifications.md)",
            }
        ]
    rows = []
    for (conn_id, tag), events in channels.items():
        sent = deliver(
            Route("doctor", conn_id, tag),
            Message(
                "[gir-ops] gir_doctor: test message",
                f"gir_doctor checks that this channel reaches the on-call (it carries: {', '.join(events)}). "
                "No action needed.",
            ),
        )
        rows.append(
            {
                "check": f"notifications {conn_id}" + (f" (tag {tag})" if tag else ""),
                "status": "OK" if sent else "FAIL",
                "result": f"a test message was accepted ({', '.join(events)})"
                if sent
                else f"the channel did not take a test message ({', '.join(events)} would be lost; the "
                "worker log says why)",
                "fix": "" if sent else fix.format(conn_id=conn_id),
            }
        )
    return rows
