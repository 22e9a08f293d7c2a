"""The run conf that re-indexes exactly one missing range, checked before the page offers it."""

from __future__ import annotations

import re
from typing import Any

from include.gir_ops.reindex.spec import dag_id as reindex_dag_id
from include.gir_ops.shared import CONTACT_CENTER_ID_PATTERN, ISO_WITH_OFFSET_PATTERN, parse_iso_utc
from include.gir_ops.topology import load_topology


def reindex_conf(
    site: str, contact_center_id: str, kind: str, start: str, end: str
) -> tuple[str, dict[str, Any]]:
    """(DAG id, conf) of a manual re-index run; ValueError naming the field when a value does not fit."""
    topology = load_topology()
    dc = next((d for d in topology.reindex_data_centers if d.site == site), None)
    if dc is None:
        sites = [d.site for d in topology.reindex_data_centers]
        raise ValueError(f"site {site!r} does not re-index (reindex.enabled); use one of {sites}")
    if kind not in dc.reindex_kinds:
        raise ValueError(f"kind {kind!r} is not re-indexed at {site}; use one of {list(dc.reindex_kinds)}")
    if not re.fullmatch(CONTACT_CENTER_ID_PATTERN, contact_center_id):
        raise ValueError(f"contact_center_id {contact_center_id!r} is not a contact center ID")
    for name, value in (("from", start), ("to", end)):
        if not re.fullmatch(ISO_WITH_OFFSET_PATTERN, value) or parse_iso_utc(value) is None:
            raise ValueError(f"{name} {value!r} is not an ISO-8601 time with offset (e.g. 2026-11-01T00:00Z)")
    start_at, end_at = parse_iso_utc(start), parse_iso_utc(end)
    if start_at is None or end_at is None or end_at <= start_at:
        raise ValueError(f"to {end!r} must be after from {start!r}")
    conf = {
        "from": start,
        "to": end,
        "contact_centers": [contact_center_id],
        "kinds": [kind],
        "purge_old": False,
    }
    return reindex_dag_id(dc), conf
