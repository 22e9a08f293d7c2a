"""Re-index windows: which hours one ``forceIndex`` POST covers. Pure functions, no Airflow needed.

RWS rounds ``from`` and ``to`` to the *nearest* hour, so a window that starts or ends mid-hour loses
(or gains) up to half an hour without telling anyone: a DC at UTC+05:30 whose schedule ticks at 02:00
local time has data interval boundaries at hh:30 UTC. Every range is therefore widened *outward* to
whole UTC hours before it is cut into windows of at most ``max_window_hours``; consecutive runs then
overlap by at most one hour instead of leaving a gap. Re-indexing an hour twice is harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from include.gir_ops.shared import ISO_WITH_OFFSET_PATTERN, as_utc, format_utc

HOUR = timedelta(hours=1)
HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# The longest manual range accepted: a typo in the year must not queue a century of POSTs.
MAX_MANUAL_RANGE = timedelta(days=3660)

_ISO_WITH_OFFSET = re.compile(ISO_WITH_OFFSET_PATTERN)
_EXAMPLE = "2026-11-20T00:00:00+01:00 or 2026-11-19T23:00:00Z"


class WindowError(ValueError):
    """A manual range cannot be re-indexed as given; the message names the param and the fix."""


@dataclass(frozen=True, order=True)
class ReindexWindow:
    """One forceIndex POST: [start, end) in UTC, both on whole hours."""

    start: datetime
    end: datetime

    @property
    def from_ms(self) -> int:
        return to_ms(self.start)

    @property
    def to_ms(self) -> int:
        return to_ms(self.end)

    @property
    def hours(self) -> int:
        return (self.end - self.start) // HOUR

    def label(self) -> str:
        """How the window appears in logs and errors: ISO UTC, plus the ms RWS receives."""
        return f"[{format_utc(self.start)}, {format_utc(self.end)}) (from={self.from_ms}, to={self.to_ms})"


def plain_utc(moment: datetime) -> datetime:
    """``shared.as_utc`` for exact arithmetic: a timezone is required and a plain ``datetime`` comes out.

    A naive time is ambiguous between data centers, so it is refused rather than taken as UTC. Airflow
    hands out pendulum objects, whose differences cannot be floor-divided by a ``timedelta``.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no timezone; re-index boundaries must be timezone-aware")
    utc = as_utc(moment)
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC
    )


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding); ``moment`` must be timezone-aware."""
    return (plain_utc(moment) - _EPOCH) // _MS


def from_ms(milliseconds: int) -> datetime:
    return _EPOCH + milliseconds * _MS


def floor_hour(moment: datetime) -> datetime:
    return plain_utc(moment).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == plain_utc(moment) else floored + HOUR


def last_schedule_period(cron: str, timezone: str, now: datetime) -> tuple[datetime, datetime]:
    """The latest complete period of a cron schedule in ``timezone`` as of ``now`` (UTC ends).

    What a manual run without a logical date re-indexes: the same period the scheduled run that last
    fired covered, so "Trigger" with no params does what an operator expects.
    """
    from zoneinfo import ZoneInfo

    from croniter import croniter

    ticks = croniter(cron, plain_utc(now).astimezone(ZoneInfo(timezone)))
    end = ticks.get_prev(datetime)
    start = ticks.get_prev(datetime)
    return plain_utc(start), plain_utc(end)


def widen_to_whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) grown outward to whole UTC hours: never loses a minute to RWS's rounding."""
    if end <= start:
        raise ValueError(f"empty range: end {format_utc(end)} is not after start {format_utc(start)}")
    return floor_hour(start), ceil_hour(end)


def split_windows(start: datetime, end: datetime, max_window_hours: int) -> list[ReindexWindow]:
    """Widen [start, end) to whole hours and cut it into consecutive windows of <= max_window_hours.

    Windows are aligned on the (widened) start, tile the range with no gap and no overlap, and only the
    last one may be shorter.
    """
    if max_window_hours < 1:
        raise ValueError(f"max_window_hours must be at least 1, got {max_window_hours}")
    first, last = widen_to_whole_hours(start, end)
    step = max_window_hours * HOUR
    windows: list[ReindexWindow] = []
    cursor = first
    while cursor < last:
        window_end = min(cursor + step, last)
        windows.append(ReindexWindow(cursor, window_end))
        cursor = window_end
    return windows


def parse_timestamp(param: str, value: object) -> datetime:
    """An ISO-8601 date and time *with* a UTC offset; anything else is refused with an example.

    The trigger form checks the same pattern (``shared.ISO_WITH_OFFSET_PATTERN``), but a conf sent
    through the CLI or the REST API skips the form, so it is checked again here.
    """
    if not isinstance(value, str) or not value.strip():
        raise WindowError(
            f"param {param!r}: expected an ISO-8601 date and time with offset such as {_EXAMPLE}, "
            f"got {value!r}"
        )
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise WindowError(
            f"param {param!r}: {text!r} is not an ISO-8601 date and time; write it like {_EXAMPLE}"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise WindowError(
            f"param {param!r}: {text!r} has no UTC offset, so it is ambiguous between data centers; "
            f"add one, e.g. {_EXAMPLE}"
        )
    if not _ISO_WITH_OFFSET.match(text):
        raise WindowError(
            f"param {param!r}: {text!r} is not in the form YYYY-MM-DDTHH:MM[:SS[.fff]] followed by Z or "
            f"+HH:MM; write it like {_EXAMPLE}"
        )
    try:
        utc = plain_utc(moment)
    except (OverflowError, ValueError):
        # 0001-01-01T00:30+01:00 parses, but its UTC time falls before year 1: not a date Python holds.
        raise WindowError(
            f"param {param!r}: {text!r} cannot be represented in UTC (it falls outside the years "
            f"1-9999); check the year, e.g. {_EXAMPLE}"
        ) from None
    if utc < _EPOCH:
        raise WindowError(
            f"param {param!r}: {text!r} is before {format_utc(_EPOCH)}: RWS takes from/to as milliseconds "
            f"since then, so it cannot be sent; check the year, e.g. {_EXAMPLE}"
        )
    return utc


def manual_range(from_value: object, to_value: object, *, now: datetime) -> tuple[datetime, datetime]:
    """Validate a manual run's ``from``/``to``: a past range of at least one hour, ``to`` after ``from``.

    Both ends must lie in the past: a ``to`` in the future would queue POSTs for hours that hold nothing
    (``to=2036-...`` was 3,644 windows per pair, after a purge with ``purge_old``).

    Returns the range exactly as given (in UTC); widening to whole hours happens in ``split_windows``.
    """
    start = parse_timestamp("from", from_value)
    end = parse_timestamp("to", to_value)
    if end <= start:
        raise WindowError(
            f"param 'to' ({format_utc(end)}) is not after param 'from' ({format_utc(start)}): the range "
            "is empty; swap them or fix the dates"
        )
    if end - start < HOUR:
        minutes = (end - start) / timedelta(minutes=1)
        raise WindowError(
            f"the range from {format_utc(start)} to {format_utc(end)} is only {minutes:g} minutes: "
            "forceIndex works on whole hours (RWS rounds both ends to the nearest hour), so params "
            "'from' and 'to' must be at least one hour apart"
        )
    if start >= now:
        raise WindowError(
            f"param 'from' ({format_utc(start)}) is in the future (now is {format_utc(now)}): there is "
            "nothing to re-index yet; choose a start in the past"
        )
    if end > now:
        raise WindowError(
            f"param 'to' ({format_utc(end)}) is in the future (now is {format_utc(now)}): hours after now "
            "hold nothing to re-index (and with purge_old the index would be deleted first); set 'to' to "
            "now or earlier: the hour in progress is re-indexed in full, ranges widen to whole hours"
        )
    if end - start > MAX_MANUAL_RANGE:
        raise WindowError(
            f"the range from {format_utc(start)} to {format_utc(end)} spans "
            f"{(end - start).days} days, more than the {MAX_MANUAL_RANGE.days} days accepted in one run; "
            "check the year, or split it into several runs"
        )
    return start, end
