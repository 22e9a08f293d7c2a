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

from include.gir_ops.shared import format_utc, parse_iso_utc

HOUR = timedelta(hours=1)


def normalized(value: Any) -> tuple[str, str, int, int] | None:
    """A send return value as (contact center, kind, start, end in epoch seconds), parsed once; None when
    it is not one. Integers: a year of values is merged with integer comparisons, not datetime ones."""
    if not isinstance(value, Mapping):
        return None
    cc, kind = value.get("contact_center_id"), value.get("kind")
    start, end = parse_iso_utc(value.get("from")), parse_iso_utc(value.get("to"))
    if not isinstance(cc, str) or not isinstance(kind, str) or start is None or end is None:
        return None
    return cc, kind, int(start.timestamp()), int(end.timestamp())


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


def merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching ranges (epoch seconds) joined; sorted."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def pair_coverage(
    contact_center_id: str,
    kind: str,
    ranges: Iterable[tuple[int, int]],
    start: datetime,
    end: datetime,
) -> PairCoverage:
    """Coverage of [start, end) (whole hours) by ``ranges`` (epoch seconds)."""
    lo, hi = int(start.timestamp()), int(end.timestamp())
    covered = 0
    missing: list[tuple[datetime, datetime]] = []
    cursor = lo
    for first, last in merge(ranges):
        a, b = max(first, lo), min(last, hi)
        if b <= a:
            continue
        if a > cursor:
            missing.append((_at(cursor), _at(a)))
        covered += b - a
        cursor = max(cursor, b)
    if cursor < hi:
        missing.append((_at(cursor), end))
    return PairCoverage(contact_center_id, kind, (hi - lo) // 3600, covered // 3600, tuple(missing))


def coverage(
    returned: Iterable[Any],
    *,
    contact_centers: Iterable[str],
    kinds: Iterable[str],
    start: datetime,
    end: datetime,
) -> list[PairCoverage]:
    """Every (contact center, kind) the DC should have re-indexed over [start, end).

    ``returned``: send return values, as dicts or already ``normalized``.
    ``contact_centers`` is the topology's list; when it is empty (discovered at run time) the contact
    centers the runs themselves reported are used.
    """
    by_pair: dict[tuple[str, str], list[tuple[int, int]]] = {}
    seen_centers: dict[str, None] = {}
    for value in returned:
        item = value if isinstance(value, tuple) else normalized(value)
        if item is None:
            continue
        cc, kind, a, b = item
        seen_centers[cc] = None
        by_pair.setdefault((cc, kind), []).append((a, b))
    centers = list(contact_centers) or sorted(seen_centers)
    return [
        pair_coverage(cc, kind, by_pair.get((cc, kind), ()), start, end) for cc in centers for kind in kinds
    ]
