"""The failover's own operators: the approval that records its answer, the deferred verification, and
the person's confirmation after the switch (with the follow-ups as a checklist).

Both are built while the dag-processor parses the DAG file, so this module imports only Airflow's operator
bases and the (light) trigger module; neither makes a network call before it runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import BaseOperator
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowSkipException

from include.gir_ops.failover.spec import (
    CONFIRMED_OPTION,
    NOT_CONFIRMED_OPTION,
    PREFLIGHT,
)
from include.gir_ops.failover.triggers import VERIFIED, EServicesSiteTrigger
from include.gir_ops.shared import iso_utc


class FailoverApprovalOperator(ApprovalOperator):
    """``ApprovalOperator`` that records the answer (XCom key ``decision``) before acting on it.

    On Reject (or a timeout, which answers Reject) the base class skips the downstream steps by raising,
    which drops its return value; the task log and XCom still show who rejected and when, and whether
    nobody answered at all. Everything else is the provider's operator unchanged. What authorizes a switch
    is never this XCom but Airflow's own HITL record (``authorization.approval_of_run``).
    """

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        chosen = list(event.get("chosen_options") or []) if "error" not in event else []
        if chosen and set(chosen) <= set(self.options):
            responder = event.get("responded_by_user")
            context["ti"].xcom_push(
                key="decision",
                value={
                    "chosen_options": chosen,
                    "responded_by_user": dict(responder) if responder else None,
                    "responded_at": iso_utc(event.get("responded_at")),
                    "timed_out": bool(event.get("timedout")),
                },
            )
        return super().execute_complete(context, event)


class VerifyEServicesSiteOperator(BaseOperator):
    """Defer to :class:`EServicesSiteTrigger` after a switch was POSTed; skip when nothing was sent.

    ``execute`` makes no network call at all: it reads the switch task's record and defers, so the
    worker slot is released at once. The trigger's verdict lands in XCom key ``record``.
    """

    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        switch_task_id: str,
        rws_nodes: list[dict[str, str]],
        dr_monitoring_delay_seconds: float,
        verify_margin_seconds: float,
        poll_interval_seconds: float | None = None,
        site_field: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.site_field = site_field
        self.switch_task_id = switch_task_id
        self.rws_nodes = rws_nodes
        self.dr_monitoring_delay_seconds = dr_monitoring_delay_seconds
        self.verify_margin_seconds = verify_margin_seconds
        window = dr_monitoring_delay_seconds + verify_margin_seconds
        self.poll_interval_seconds = poll_interval_seconds or min(5.0, max(0.25, window / 12))

    def execute(self, context: Any) -> None:
        switch = context["ti"].xcom_pull(task_ids=self.switch_task_id, key="record") or {}
        if not switch.get("posted"):
            raise AirflowSkipException(
                f"nothing to verify: no multimedia-switch was sent ({switch.get('detail') or 'no record'})"
            )
        window = self.dr_monitoring_delay_seconds + self.verify_margin_seconds
        self.log.info(
            "Deferring: polling every RWS until it reports eServicesSite %s, for up to %gs after the switch",
            switch["target_site"],
            window,
        )
        self.defer(
            trigger=EServicesSiteTrigger(
                rws_nodes=self.rws_nodes,
                environment_id=switch["environment_id"],
                target_site=switch["target_site"],
                switched_at=switch["switched_at"],
                dr_monitoring_delay_seconds=self.dr_monitoring_delay_seconds,
                verify_margin_seconds=self.verify_margin_seconds,
                poll_interval_seconds=self.poll_interval_seconds,
                site_field=self.site_field,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=window + 300),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> None:
        context["ti"].xcom_push(key="record", value=event)
        level = self.log.info if event.get("outcome") == VERIFIED else self.log.error
        level(
            "Verification of the switch to %s: %s: %s",
            event.get("target_site"),
            event["outcome"],
            event["detail"],
        )


class ConfirmSwitchOperator(HITLOperator):
    """Step 4 of the guide, done by a person: confirm the switch took effect and tick off the follow-ups.

    Asked whenever a multimedia-switch POST reached RWS (skipped otherwise, e.g. dry run, refusal): the
    on-call checks by hand (WDE connected to the target, RWS if it reports the site) and answers
    ``Confirmed`` or ``Not confirmed``, with one answer per follow-up of the run's scenario (done / not
    done / not applicable). Waits in awaiting_input without a worker slot; no answer within the timeout
    answers ``Not confirmed`` by nobody. What counts is Airflow's own HITL record of the answer (read by
    ``audit`` and ``catch_up_reindex`` through the REST API), never this task's XCom or state.

    The checklist depends on the run (target, scenario, pre-flight's backup finding), so the form's params
    are built when the task runs, and rebuilt identically when it resumes.
    """

    ui_color = "#fdf3e1"

    def __init__(self, *, switch_task_id: str, verify_task_id: str, **kwargs: Any) -> None:
        super().__init__(
            subject="Confirm the eServices switch",
            options=[CONFIRMED_OPTION, NOT_CONFIRMED_OPTION],
            defaults=[NOT_CONFIRMED_OPTION],
            multiple=False,
            **kwargs,
        )
        self.switch_task_id = switch_task_id
        self.verify_task_id = verify_task_id

    def _checklist(self, context: Any) -> list[Any]:
        from include.gir_ops.failover.checklist import checklist
        from include.gir_ops.failover.steps import read_request
        from include.gir_ops.topology import load_topology

        topology = load_topology()
        dag_run = context["dag_run"]
        request = read_request(dag_run.conf, context["params"], dag_run.triggering_user_name, topology)
        preflight = context["ti"].xcom_pull(task_ids=PREFLIGHT, key="record") or {}
        return checklist(
            topology,
            request.target_site,
            request.scenario,
            backup=preflight.get("backup"),
            change_ticket=request.change_ticket,
        )

    def _use_checklist(self, context: Any) -> list[Any]:
        from include.gir_ops.failover.checklist import checklist_params

        items = self._checklist(context)
        self.params = ParamsDict(checklist_params(items))
        return items

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        switch = ti.xcom_pull(task_ids=self.switch_task_id, key="record") or {}
        if not switch.get("posted"):
            raise AirflowSkipException(
                "nothing to confirm: no multimedia-switch reached RWS "
                f"({switch.get('detail') or 'no record'})"
            )
        verification = ti.xcom_pull(task_ids=self.verify_task_id, key="record") or {}
        items = self._use_checklist(context)
        target = switch.get("target_site")
        seen = verification.get("outcome") or "did not complete"
        self.subject = f"eServices switch to {target}: confirm it took effect and the follow-ups"
        self.body = "\n".join(
            [
                f"## Confirm the eServices switch to {target}",
                "",
                f"RWS accepted the multimedia-switch ({switch.get('detail')}).",
                f"**RWS verification:** {seen}: {verification.get('detail') or 'no result'}",
                "",
                f"Choose **{CONFIRMED_OPTION}** only after checking by hand that agent desktops (WDE) are "
                f"connected to the eServices of {target} (and, where RWS reports it, that GET "
                f".../genesys-environments/{switch.get('environment_id')} shows {target}). Choose "
                f"**{NOT_CONFIRMED_OPTION}** if you cannot. No answer in time counts as not confirmed.",
                "",
                "### Follow-ups (answer each: done / not done / not applicable)",
                "",
                *(f"- **{item.title}**: {item.text}" for item in items),
            ]
        )
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            self._use_checklist(context)
        return super().execute_complete(context, event)
