"""The notifiers and callbacks the DAGs are wired with; built while the dag-processor parses, so light.

Each is an Airflow ``BaseNotifier`` (usable as a DAG callback and in a HITL operator's ``notifiers=``)
that builds its message from the callback's context and sends it through :mod:`delivery`, which never
raises: a notification channel that is down is logged and never fails or delays a run beyond its own
timeout. Nothing in a notifier is templated (``template_fields`` is empty), so no Jinja in a param or an
error text is ever rendered.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)


class GirNotifier(BaseNotifier):
    """One event to one route. ``secret_conn_ids``: connections whose secrets must never appear."""

    template_fields: Sequence[str] = ()
    event = ""

    def __init__(
        self,
        *,
        conn_id: str,
        tag: str | None = None,
        secret_conn_ids: Sequence[str] = (),
        only_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.tag = tag
        self.secret_conn_ids = list(secret_conn_ids)
        # As a task callback in default_args: act only for this task (the run's verdict), ignore the rest.
        self.only_task_id = only_task_id

    def build(self, context: Mapping[str, Any], secrets: list[str]) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any) -> None:
        """As a callback: nothing to render (no template fields), and nothing may escape into the caller.

        ``BaseNotifier.__call__`` renders templates first with the context's DAG (under ``dag.test()`` a
        serialized DAG that cannot) and re-raises what ``notify`` raised; a notification must do neither.
        """
        try:
            self.notify(args[0] if len(args) == 1 else {"dag": args[0] if args else None})
        except Exception as exc:
            log.error("Notification %s failed (%s); the run goes on", self.event, type(exc).__name__)

    def notify(self, context: Any) -> None:
        """Build and send; log and return on any error (a notification never fails a task or a run)."""
        task = context.get("task") if hasattr(context, "get") else None
        if self.only_task_id and getattr(task, "task_id", None) != self.only_task_id:
            return
        try:
            from include.gir_ops.notifications.delivery import Route, connection, deliver
            from include.gir_ops.notifications.scrub import known_secrets

            route = Route(self.event, self.conn_id, self.tag)
            conn = connection(route)
            if conn is None:  # logged: no channel to send through, so nothing is read or built
                return
            message = self.build(context, known_secrets([*self.secret_conn_ids, self.conn_id]))
            if message is not None:
                deliver(route, message, conn)
        except Exception as exc:
            log.error(
                "Notification %s could not be built or sent (%s); the run goes on",
                self.event,
                type(exc).__name__,
            )
            log.debug("notification failure", exc_info=True)


def _run_ids(context: Mapping[str, Any]) -> tuple[str, str]:
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(dag, "dag_id", None) or "?"
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id") or "?"
    return dag_id, run_id


class RunFailedNotifier(GirNotifier):
    """DAG-level ``on_failure_callback``: the run, its failed tasks and their error lines, a link."""

    event = "run_failed"

    def build(self, context: Mapping[str, Any], secrets: list[str]) -> Any:
        from include.gir_ops.notifications import facts, links, messages

        dag_id, run_id = _run_ids(context)
        failed = facts.failed_tasks(dag_id, run_id, context)
        exc = context.get("exception")
        task, ti = context.get("task"), context.get("ti")
        if exc is not None and task is not None and task.task_id not in {f["task_id"] for f in failed}:
            # As a verdict task's callback: Airflow may not show this task as failed yet.
            failed.append(
                {
                    "task_id": task.task_id,
                    "map_index": getattr(ti, "map_index", -1),
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
        return messages.run_failed(
            dag_id=dag_id,
            run_id=run_id,
            run_link=links.run_link(dag_id, run_id),
            failed=failed,
            reason=context.get("reason"),
            secrets=secrets,
        )


class ApprovalWaitingNotifier(GirNotifier):
    """HITL ``notifiers=``: runs in the approval task when the request is written, before it waits.

    The request's facts come from the record of ``record_task_id`` (the failover's pre-flight: request,
    warnings) when there is one, else from the run's params and the task's own subject.
    """

    event = "approval_waiting"

    def __init__(self, *, record_task_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record_task_id = record_task_id

    def build(self, context: Mapping[str, Any], secrets: list[str]) -> Any:
        from include.gir_ops.notifications import links, messages

        dag_id, run_id = _run_ids(context)
        task, ti = context["task"], context["ti"]
        record: Mapping[str, Any] = {}
        if self.record_task_id:
            record = ti.xcom_pull(task_ids=self.record_task_id, key="record") or {}
        request = record.get("request") or {}
        params = context.get("params") or {}
        dag_run = context.get("dag_run")
        timeout = getattr(task, "response_timeout", None)
        try:
            link = task.generate_link_to_ui(task_instance=ti, base_url=links.base_url())
        except Exception:
            link = links.required_action_link(dag_id, run_id, task.task_id, getattr(ti, "map_index", -1))
        return messages.approval_waiting(
            dag_id=dag_id,
            run_id=run_id,
            subject=str(getattr(task, "subject", "") or "approval requested"),
            requester=request.get("triggered_by") or getattr(dag_run, "triggering_user_name", None),
            target=request.get("target_site") or params.get("target_site"),
            reason=request.get("reason") or params.get("reason"),
            warnings=list(record.get("warnings") or []),
            approvers=[u.get("id", "?") for u in (getattr(task, "assigned_users", None) or [])],
            timeout_minutes=timeout.total_seconds() / 60 if timeout else None,
            action_link=link,
            secrets=secrets,
        )


class FailoverOutcomeNotifier(GirNotifier):
    """DAG-level success and failure callback of the failover: the outcome its audit recorded."""

    event = "failover_outcome"

    def __init__(self, *, audit_task_id: str, preflight_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.audit_task_id = audit_task_id
        self.preflight_task_id = preflight_task_id

    def build(self, context: Mapping[str, Any], secrets: list[str]) -> Any:
        from include.gir_ops.notifications import facts, links, messages

        dag_id, run_id = _run_ids(context)
        audit = facts.xcom(dag_id, run_id, self.audit_task_id, "record", context) or {}
        preflight = facts.xcom(dag_id, run_id, self.preflight_task_id, "record", context) or {}
        request = preflight.get("request") or {}
        dag_run = context.get("dag_run")
        conf = dict(getattr(dag_run, "conf", None) or {})
        outcome = audit.get("outcome")
        return messages.failover_outcome(
            dag_id=dag_id,
            run_id=run_id,
            outcome=outcome,
            ok=outcome in ("verified", "already-current", "dry-run"),
            detail=audit.get("detail"),
            requester=request.get("triggered_by") or getattr(dag_run, "triggering_user_name", None),
            target=request.get("target_site") or conf.get("target_site"),
            audit_location=audit.get("location"),
            run_link=links.run_link(dag_id, run_id),
            secrets=secrets,
        )


def record_failure(context: Any) -> None:
    """Task ``on_failure_callback`` (after the last try): keep the scrubbed error line for the run's message.

    Runs in the failed task's own process, where the exception is, and where Airflow's secrets masker
    knows every connection password the task read. Never raises.
    """
    try:
        from include.gir_ops.notifications.facts import FAILURE_XCOM_KEY
        from include.gir_ops.notifications.scrub import one_line

        exc = context.get("exception")
        text = f"{type(exc).__name__}: {exc}" if exc is not None else "failed (no exception recorded)"
        context["ti"].xcom_push(key=FAILURE_XCOM_KEY, value={"error": one_line(text)})
    except Exception as exc:
        log.warning("could not record the error line for the failure notification: %s", type(exc).__name__)


async def deadline_missed(
    *,
    conn_id: str,
    tag: str | None,
    what: str,
    context: Mapping[str, Any] | None = None,
) -> None:
    """Deadline Alert callback (``AsyncCallback``, run by the triggerer): the run is late. Never raises.

    ``context`` is what the scheduler hands over when the deadline passes: ``dag_run`` (the run as the REST
    API shows it) and ``deadline``. A run that already ended before its deadline (it failed: the failure
    notification told) is not reported again.
    """
    try:
        from include.gir_ops.notifications import links, messages
        from include.gir_ops.notifications.delivery import Route, adeliver

        dag_run = dict((context or {}).get("dag_run") or {})
        deadline = dict((context or {}).get("deadline") or {})
        dag_id, run_id = str(dag_run.get("dag_id") or "?"), str(dag_run.get("dag_run_id") or "?")
        if dag_run.get("end_date") and str(dag_run.get("state")) in ("success", "failed"):
            log.info(
                "%s %s ended (%s) before its deadline: no deadline notification",
                dag_id,
                run_id,
                dag_run.get("state"),
            )
            return
        message = messages.deadline_missed(
            dag_id=dag_id,
            run_id=run_id,
            what=what,
            deadline=str(deadline.get("deadline_time") or "?"),
            queued_at=dag_run.get("queued_at"),
            state=dag_run.get("state"),
            run_link=links.run_link(dag_id, run_id),
        )
        await adeliver(Route("deadline_missed", conn_id, tag), message)
    except Exception as exc:
        log.error("Deadline notification could not be built or sent (%s)", type(exc).__name__)
