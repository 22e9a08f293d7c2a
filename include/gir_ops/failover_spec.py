"""What the failover DAG is built from while the dag-processor parses it: ids, the trigger form, the
approvers and the approval operator.

Kept apart from ``failover`` (the steps' logic, the RWS client), which the tasks import when they run:
the dag-processor imports this module on every parse of ``dags/gir_eservices_failover.py``, so it
imports nothing heavy. ``failover`` imports the ids it needs from here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from include.gir_ops.params import trigger_param
from include.gir_ops.pools import CHECK_POOLS_TASK_ID as CHECK_POOLS
from include.gir_ops.topology import Topology, TopologyError

DAG_ID = "gir_eservices_failover"
SWITCH_POOL = "gir_rws_switch"
APPROVE, REJECT = "Approve", "Reject"
PARAM_KEYS = ("target_site", "reason", "change_ticket", "dry_run")
MIN_REASON_LENGTH = 10

# Task ids, shared by the DAG file, the audit and the tests.
PREFLIGHT, APPROVAL_NEEDED, APPROVE_FAILOVER = "preflight", "approval_needed", "approve_failover"
RECHECK, SWITCH, VERIFY, AUDIT, OUTCOME = (
    "recheck",
    "switch_eservices_site",
    "verify_switch",
    "audit",
    "outcome",
)
TASK_IDS = (
    CHECK_POOLS,
    PREFLIGHT,
    APPROVAL_NEEDED,
    APPROVE_FAILOVER,
    RECHECK,
    SWITCH,
    VERIFY,
    AUDIT,
    OUTCOME,
)


def iso_utc(value: Any) -> str | None:
    """A datetime as ISO-8601 UTC, anything else as text, None as None (for XCom and the audit)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


# --- the trigger form --------------------------------------------------------------------------------


def trigger_params(topology: Topology) -> dict[str, Any]:
    """The DAG's params: a JSON schema the UI renders as the trigger form and Airflow enforces at trigger.

    ``target_site`` and ``reason`` have no default: a run without them is refused when it is created
    (HTTP 400 from the REST API / UI), so nothing can be triggered by accident with a pre-filled site.
    """
    return {
        "target_site": trigger_param(
            type="string",
            enum=list(topology.sites),
            title="Target eServices site",
            description=(
                "The data center whose Interaction Server RWS should use (the eServices siteName). "
                f"Switching back to the primary is the same DAG with {topology.primary_site}."
            ),
        ),
        "reason": trigger_param(
            type="string",
            minLength=MIN_REASON_LENGTH,
            maxLength=2000,
            # At least 10 characters between the first and the last non-blank one.
            pattern=r"^\s*\S[\s\S]{8,}\S\s*$",
            title="Reason",
            description="Why this failover is needed; shown to the approver and kept in the audit record.",
        ),
        "change_ticket": trigger_param(
            None,
            type=["null", "string"],
            maxLength=200,
            title="Change ticket",
            description="Optional change or incident ticket, kept in the audit record.",
        ),
        "dry_run": trigger_param(
            False,
            type="boolean",
            title="Dry run",
            description="Do everything except the multimedia-switch POST (pre-flight, approval, audit).",
        ),
    }


def assigned_approvers(topology: Topology) -> list[dict[str, str]]:
    """``failover.approvers`` as HITLUser dicts ({"id", "name"}); ids are Airflow user ids."""
    if topology.failover is None:
        raise TopologyError(
            "the topology has no failover section; add failover.approvers and failover.audit_log"
        )
    return [{"id": a.id, "name": a.name or a.id} for a in topology.failover.approvers]


def preflight_inlets(topology: Topology) -> list[Any]:
    """The Assets whose latest events pre-flight reads: the keystore check and the shipped backup."""
    from include.gir_ops.assets import RCS_KEYSTORE_CHECK_ASSET, speechminer_backup_asset

    inlets: list[Any] = [RCS_KEYSTORE_CHECK_ASSET]
    if topology.shipping is not None:
        inlets.append(speechminer_backup_asset(topology.shipping.to_site))
    return inlets


class FailoverApprovalOperator(ApprovalOperator):
    """``ApprovalOperator`` that records the answer (XCom key ``decision``) before acting on it.

    On Reject (or a timeout, which answers Reject) the base class skips the downstream steps by raising,
    which drops its return value; the audit still has to say who rejected and when, and whether nobody
    answered at all. Everything else is the provider's operator unchanged.
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
