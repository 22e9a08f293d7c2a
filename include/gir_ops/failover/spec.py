"""What the failover DAG file needs while the dag-processor parses it, and the words every step speaks.

Ids, the trigger form, the approvers, the Assets pre-flight reads; and the outcome vocabulary (``Outcome``,
``Verdict``, ``FailoverRefused``) that the steps, the approval rule, the verdict table and the audit share.
The dag-processor imports this module on every parse of ``dags/gir_eservices_failover.py``, so it imports
nothing heavy: the steps' logic (RWS client, Airflow API client) is imported by the tasks when they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from include.gir_ops.backup.spec import speechminer_backup_asset
from include.gir_ops.keystore.spec import RCS_KEYSTORE_CHECK_ASSET
from include.gir_ops.params import trigger_param
from include.gir_ops.pools import CHECK_POOLS_TASK_ID as CHECK_POOLS
from include.gir_ops.topology import FailoverSettings, Topology, TopologyError

DAG_ID = "gir_eservices_failover"
APPROVE, REJECT = "Approve", "Reject"
PARAM_KEYS = ("target_site", "reason", "change_ticket", "dry_run", "scenario")
MIN_REASON_LENGTH = 10

# The first decision of an incident (trigger param ``scenario``): the follow-ups differ. SRS redirection,
# SpeechMiner promotion and moving the recording processing are whole-DC steps: with only the
# Interaction Server down, the primary's instances still run and doing them would create a second primary.
INTERACTION_SERVER_ONLY, WHOLE_DC = "interaction-server-down", "data-center-lost"
SCENARIOS = {
    INTERACTION_SERVER_ONLY: "the Interaction Server is down, the rest of the data center works",
    WHOLE_DC: "the whole data center is lost (or must be left)",
}
# The answers of the human step after the switch (``confirm_switch``).
CONFIRMED_OPTION, NOT_CONFIRMED_OPTION = "Confirmed", "Not confirmed"
CHECKLIST_ANSWERS = ("done", "not done", "not applicable")

# Task ids, shared by the DAG file, the steps, the audit and the tests.
PREFLIGHT, APPROVAL_NEEDED, APPROVE_FAILOVER = "preflight", "approval_needed", "approve_failover"
RECHECK, SWITCH, VERIFY, AUDIT, OUTCOME = (
    "recheck",
    "switch_eservices_site",
    "verify_switch",
    "audit",
    "outcome",
)
CONFIRM, CATCH_UP = "confirm_switch", "catch_up_reindex"
TASK_IDS = (
    CHECK_POOLS,
    PREFLIGHT,
    APPROVAL_NEEDED,
    APPROVE_FAILOVER,
    RECHECK,
    SWITCH,
    VERIFY,
    CONFIRM,
    CATCH_UP,
    AUDIT,
    OUTCOME,
)

# --- the outcome vocabulary ---------------------------------------------------------------------------


class Outcome(StrEnum):
    """How a run ended, as the audit record and the ``outcome`` task name it (the values are the contract)."""

    VERIFIED = "verified"
    # RWS did not report the site, a person confirmed the switch by hand (confirm_switch).
    CONFIRMED = "confirmed"
    ALREADY_CURRENT = "already-current"
    DRY_RUN = "dry-run"
    SITE_CHANGED = "site-changed"
    UNVERIFIED = "unverified"
    REJECTED = "rejected"
    TIMED_OUT = "timed-out"
    SELF_APPROVAL_REFUSED = "self-approval-refused"
    NOT_AUTHORIZED = "not-authorized"
    PREFLIGHT_FAILED = "preflight-failed"
    SWITCH_FAILED = "switch-failed"
    SWITCH_UNKNOWN = "switch-unknown"
    VERIFY_FAILED = "verify-failed"
    ERROR = "error"

    @property
    def ok(self) -> bool:
        """The run succeeds only for these: switched and seen (by RWS or a person), nothing to switch, or a
        dry run."""
        return self in (Outcome.VERIFIED, Outcome.CONFIRMED, Outcome.ALREADY_CURRENT, Outcome.DRY_RUN)


@dataclass(frozen=True)
class Verdict:
    """An outcome and the sentence that explains it to the operator."""

    outcome: Outcome
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome.ok


class FailoverRefused(Exception):
    """A step refuses to go on for a reason a retry cannot change; ``outcome`` names it in the audit.

    Its text is "<outcome>: <message>", which is what the failed task shows.
    """

    def __init__(self, outcome: Outcome | str, message: str) -> None:
        self.outcome = Outcome(outcome)
        self.message = message
        super().__init__(f"{self.outcome}: {message}")

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.outcome, self.message)


def failover_settings(topology: Topology) -> FailoverSettings:
    """The topology's failover section; a run without one refuses before it reads or asks anything."""
    if topology.failover is None:
        raise FailoverRefused(
            Outcome.PREFLIGHT_FAILED,
            "the topology has no failover section; add failover.approvers and failover.audit_log",
        )
    return topology.failover


# --- the trigger form and the DAG's parts ---------------------------------------------------------------


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
        "scenario": trigger_param(
            INTERACTION_SERVER_ONLY,
            type="string",
            enum=list(SCENARIOS),
            title="Scenario",
            description=(
                f"{INTERACTION_SERVER_ONLY}: {SCENARIOS[INTERACTION_SERVER_ONLY]} (follow-ups: WDE only). "
                f"{WHOLE_DC}: {SCENARIOS[WHOLE_DC]} (also SRS redirection, SpeechMiner promotion and "
                "recording processing in the target). Never pick the whole-DC set while the primary still "
                "runs: it would create a second primary. When switching back, the scenario of the outage."
            ),
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
    inlets: list[Any] = [RCS_KEYSTORE_CHECK_ASSET]
    if topology.shipping is not None:
        inlets.append(speechminer_backup_asset(topology.shipping.to_site))
    return inlets


def rws_nodes(topology: Topology) -> list[dict[str, str]]:
    """Every DC's RWS as the verification trigger takes it: site names and connection ids, no secret."""
    return [{"site": dc.site, "conn_id": dc.rws_conn_id} for dc in topology.data_centers]
