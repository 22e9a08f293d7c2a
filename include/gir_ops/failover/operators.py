"""The failover's own operators: the approval that records its answer, and the deferred verification.

Both are built while the dag-processor parses the DAG file, so this module imports only Airflow's operator
bases and the (light) trigger module; neither makes a network call before it runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
