"""What the keystore check DAG is built from while the dag-processor parses it: ids, params, the Asset.

Imported on every parse of ``dags/gir_rcs_keystore_check.py``, so it imports only ``airflow.sdk`` and
the project's light modules; the check itself (``cryptography``, object storage) is imported by the task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

from include.gir_ops.params import trigger_param

if TYPE_CHECKING:
    from include.gir_ops.topology import Topology

DAG_ID = "gir_rcs_keystore_check"

# Task ids, shared by the DAG file, the docs and the tests.
CHECK_REPLICATION = "check_replication"
ENFORCE_REPLICATION = "enforce_replication"

# The topology section the DAG needs: without an RCS instance there is nothing to check, and no DAG.
TOPOLOGY_SECTION = "data_centers[].rcs"

# Bounds of the ``parallel_reads`` param (the topology's ``keystore_check.parallel_reads`` is its default).
MAX_PARALLEL_READS = 256

# Named, not given a URI: a URI with a custom scheme makes Airflow look for a scheme normalizer among every
# provider, which tripled the parse time of the DAG files that declare it.
# Event extra: ok (bool), checked_at (ISO-8601 UTC), reference, states ({instance: state}), warnings (list),
# summary. Read by the failover pre-flight, red or green.
RCS_KEYSTORE_CHECK_ASSET = Asset(name="gir_rcs_keystore_check", group="gir")


def trigger_params(topology: Topology) -> dict[str, Any]:
    """The trigger form: the reference instance, how many keystores are read at once (topology defaults)."""
    names = [rcs.name for _, rcs in topology.rcs_instances]
    return {
        "reference": trigger_param(
            None,
            type=["null", "string"],
            enum=[None, *names],
            title="Reference instance",
            description=(
                "The RCS instance the others must equal in this run. Empty: an instance in the DC whose "
                "Interaction Server is current (asked of RWS), so a lost primary DC does not leave the check "
                f"without a reference; when no RWS reports the site, {topology.keystore_reference}."
            ),
        ),
        "parallel_reads": trigger_param(
            topology.keystore_check.parallel_reads,
            type="integer",
            minimum=1,
            maximum=MAX_PARALLEL_READS,
            description="How many keystores are read at the same time.",
        ),
    }


# --- the replication DAG (gir_rcs_keystore_replicate) ----------------------------------------------------

REPLICATE_DAG_ID = "gir_rcs_keystore_replicate"
REPLICATE_SECTION = "keystore_replication (approvers, audit_log)"
PREFLIGHT, APPROVAL_NEEDED, APPROVE_REPLICATION = "preflight", "approval_needed", "approve_replication"
REPLICATE, VERIFY, AUDIT, OUTCOME = "replicate", "verify", "audit", "outcome"
REPLICATE_TASK_IDS = (PREFLIGHT, APPROVAL_NEEDED, APPROVE_REPLICATION, REPLICATE, VERIFY, AUDIT, OUTCOME)
REPLICATE_PARAM_KEYS = ("targets", "dry_run", "reason")
MIN_REASON_LENGTH = 10
APPROVE, REJECT = "Approve", "Reject"


def replicate_params(topology: Topology) -> dict[str, Any]:
    """The trigger form. ``reason`` has no default: a run without it is refused when it is created."""
    names = [rcs.name for _, rcs in topology.rcs_instances if rcs.name != topology.keystore_reference]
    return {
        "targets": trigger_param(
            [],
            type="array",
            items={"type": "string", "enum": names},
            uniqueItems=True,
            title="Target RCS instances",
            description="The instances whose keystore is replaced by the reference's "
            f"({topology.keystore_reference}). Empty: those the latest check found drift or missing.",
        ),
        "dry_run": trigger_param(
            False,
            type="boolean",
            title="Dry run",
            description="Pre-flight only: list what would be replaced; nobody is asked, nothing written.",
        ),
        "reason": trigger_param(
            type="string",
            minLength=MIN_REASON_LENGTH,
            maxLength=2000,
            pattern=r"^\s*\S[\s\S]{8,}\S\s*$",
            title="Reason",
            description="Why the keystores are replaced; shown to the approver and kept in the audit record.",
        ),
    }


def replication_approvers(topology: Topology) -> list[dict[str, str]]:
    """``keystore_replication.approvers`` as HITLUser dicts ({"id", "name"})."""
    settings = topology.keystore_replication
    if settings is None:
        return []
    return [{"id": a.id, "name": a.name or a.id} for a in settings.approvers]
