"""What the re-index DAG file needs while it is parsed: the DAG and task ids and the trigger form.

Imported on every parse of ``dags/gir_es_reindex.py``, so it imports only Airflow's SDK and the project's
light modules; planning and sending (with the RWS client) are imported inside the tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.gir_ops.params import trigger_param
from include.gir_ops.shared import CONTACT_CENTER_ID_PATTERN, ISO_WITH_OFFSET_PATTERN
from include.gir_ops.topology import REINDEX_KINDS, DataCenter

if TYPE_CHECKING:
    from airflow.sdk import Param

DAG_ID_PREFIX = "gir_es_reindex_"
PLAN_TASK_ID = "plan"
SEND_TASK_ID = "send"


def dag_id(dc: DataCenter) -> str:
    """One DAG per re-indexing DC: gir_es_reindex_<site slug>."""
    return f"{DAG_ID_PREFIX}{dc.site_slug}"


def _timestamp_param(title: str, description: str) -> Param:
    """An optional ISO-8601 date-time with offset: the form's date-time picker sends ...T00:00:00.000Z."""
    return trigger_param(
        None,
        type=["null", "string"],
        format="date-time",
        pattern=ISO_WITH_OFFSET_PATTERN,
        title=title,
        description=description,
    )


def trigger_params(dc: DataCenter) -> dict[str, Param]:
    """The trigger form of one DC's DAG; every default is valid for scheduled runs.

    ``from``/``to`` are checked again by ``windows.parse_timestamp``: a conf sent through the CLI or the
    REST API skips the form.
    """
    kinds_used = list(dc.reindex_kinds)
    # "examples" makes the trigger form offer a multi-select instead of a free-text list.
    known_contact_centers: dict[str, Any] = (
        {"examples": list(dc.rws.contact_centers)} if dc.rws.contact_centers else {}
    )
    return {
        "from": _timestamp_param(
            "From (manual runs only)",
            "Start of a custom range, ISO-8601 with offset, e.g. 2026-11-01T00:00:00Z. Leave empty to "
            "re-index the run's data interval. Needs 'to'.",
        ),
        "to": _timestamp_param(
            "To (manual runs only)",
            "End of the custom range (exclusive), at least one hour after 'from', and not in the future.",
        ),
        "contact_centers": trigger_param(
            [],
            type="array",
            items={"type": "string", "pattern": CONTACT_CENTER_ID_PATTERN},
            uniqueItems=True,
            **known_contact_centers,
            title="Contact centers",
            description=(
                f"Contact center IDs to re-index (dashed UUID as RWS lists them, e.g. "
                f"625a5cf1-dea8-4e46-b18b-831d4b254488, or plain hex; any case); empty = every contact "
                f"center of {dc.site}."
            ),
        ),
        "kinds": trigger_param(
            [],
            type="array",
            items={"type": "string", "enum": list(REINDEX_KINDS)},
            uniqueItems=True,
            examples=kinds_used,
            title="Index kinds",
            description=f"Which indexes; empty = every kind {dc.site} uses ({', '.join(kinds_used)}).",
        ),
        "purge_old": trigger_param(
            False,
            type="boolean",
            title="Purge the old index first (manual runs only)",
            description="Deletes each contact center's index of each kind before re-indexing (needed "
            "after an RWS upgrade that changes the index schema). Sent with the first window of each "
            "contact center and kind only; needs 'from' and 'to' covering everything to keep.",
        ),
    }
