"""Re-index coverage: which hours of the last 30 days each (contact center, kind) was re-indexed for.

Input is what the ``send`` tasks of ``gir_es_reindex_<site>`` returned (one value per contact center and
kind per run: ``{"contact_center_id", "kind", "from", "to"}``, returned only when every window of the pair
was sent); ranges are merged as intervals, so a year of runs costs one sort, not one set per hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from include.gir_ops.shared import format_utc

HOUR = timedelta(hours=1)


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 time as the send task writes it (2026-11-18T01:00Z); None when it is not one."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class PairCoverage:
    """One contact center and kind: hours covered of hours expected, and the hours still missing."""

    contact_center_id: str
    kind: str
    expected_hours: int
    covered_hours: int
    missing: tuple[tuple[datetime, datetime], ...]

    @property
    def ratio(self) -> float:
        return self.covered_hours / self.expected_hours if self.expected_hours else 1.0

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "contact_center_id": self.contact_center_id,
            "kind": self.kind,
            "expected_hours": self.expected_hours,
            "covered_hours": self.covered_hours,
            "ratio": round(self.ratio, 6),
            "missing": [{"from": format_utc(a), "to": format_utc(b)} for a, b in self.missing],
        }


def merge(ranges: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping or touching ranges joined; sorted."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def pair_coverage(
    contact_center_id: str,
    kind: str,
    ranges: Iterable[tuple[datetime, datetime]],
    start: datetime,
    end: datetime,
) -> PairCoverage:
    """Coverage of [start, end) (whole hours) by ``ranges``."""
    covered = 0.0
    missing: list[tuple[datetime, datetime]] = []
    cursor = start
    for first, last in merge(ranges):
        a, b = max(first, start), min(last, end)
        if b <= a:
            continue
        if a > cursor:
            missing.append((cursor, a))
        covered += (b - a) / HOUR
        cursor = max(cursor, b)
    if cursor < end:
        missing.append((cursor, end))
    expected = int((end - start) / HOUR)
    return PairCoverage(contact_center_id, kind, expected, int(covered), tuple(missing))


def coverage(
    returned: Iterable[Mapping[str, Any]],
    *,
    contact_centers: Iterable[str],
    kinds: Iterable[str],
    start: datetime,
    end: datetime,
) -> list[PairCoverage]:
    """Every (contact center, kind) the DC should have re-indexed over [start, end).

    ``contact_centers`` is the topology's list; when it is empty (discovered at run time) the contact
    centers the runs themselves reported are used.
    """
    by_pair: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
    seen_centers: list[str] = []
    for value in returned:
        cc, kind = value.get("contact_center_id"), value.get("kind")
        a, b = parse_time(value.get("from")), parse_time(value.get("to"))
        if not isinstance(cc, str) or not isinstance(kind, str) or a is None or b is None:
            continue
        if cc not in seen_centers:
            seen_centers.append(cc)
        by_pair.setdefault((cc, kind), []).append((a, b))
    centers = list(contact_centers) or sorted(seen_centers)
    return [
        pair_coverage(cc, kind, by_pair.get((cc, kind), ()), start, end) for cc in centers for kind in kinds
    ]
