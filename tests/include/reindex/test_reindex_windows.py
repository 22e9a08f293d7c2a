"""Re-index windows: whole UTC hours, outward, tiled, and manual ranges refused with the param and the fix."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta, timezone

import pendulum
import pytest

from include.gir_ops.reindex.windows import (
    ReindexWindow,
    WindowError,
    from_ms,
    manual_range,
    parse_timestamp,
    split_windows,
    to_ms,
    widen_to_whole_hours,
)
from include.gir_ops.shared import ISO_WITH_OFFSET_PATTERN, format_utc

IST = timezone(timedelta(hours=5, minutes=30))
NOW = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def spans(windows: list[ReindexWindow]) -> list[tuple[datetime, datetime]]:
    return [(w.start, w.end) for w in windows]


# --- ms conversion -----------------------------------------------------------------------------------


def test_ms_are_exact_milliseconds_since_the_epoch() -> None:
    # The guide's example value: 1369272257713 ms = 2013-05-23T01:24:17.713Z.
    moment = datetime(2013, 5, 23, 1, 24, 17, 713000, tzinfo=UTC)
    assert to_ms(moment) == 1369272257713
    assert from_ms(1369272257713) == moment
    assert to_ms(utc(2026, 11, 18, 1)) == 1794963600000


def test_ms_of_offsets_and_pendulum_datetimes_agree() -> None:
    """Airflow hands tasks pendulum datetimes; the same instant must give the same ms."""
    instant = utc(2026, 11, 19, 20, 30)
    assert to_ms(instant.astimezone(IST)) == to_ms(instant)
    assert to_ms(pendulum.datetime(2026, 11, 20, 2, 0, tz="Asia/Kolkata")) == to_ms(instant)


def test_pendulum_boundaries_give_plain_utc_windows() -> None:
    """Airflow's data intervals are pendulum objects, whose differences cannot be floor-divided."""
    start = pendulum.datetime(2026, 11, 19, 2, 0, tz="Asia/Kolkata")
    windows = split_windows(start, start.add(days=1), 6)
    assert [w.hours for w in windows] == [6, 6, 6, 6, 1]
    assert {type(moment) for w in windows for moment in (w.start, w.end)} == {datetime}
    assert windows[0].start == utc(2026, 11, 18, 20)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        to_ms(datetime(2026, 11, 20))  # naive on purpose


# --- widening and splitting --------------------------------------------------------------------------


def test_whole_hour_boundaries_are_kept() -> None:
    assert widen_to_whole_hours(utc(2026, 11, 18, 1), utc(2026, 11, 19, 1)) == (
        utc(2026, 11, 18, 1),
        utc(2026, 11, 19, 1),
    )


def test_mid_hour_boundaries_of_a_utc_0530_dc_are_widened_outward() -> None:
    """02:00 in Asia/Kolkata is 20:30 UTC: the start goes back to 20:00, the end forward to 21:00."""
    start = datetime(2026, 11, 19, 2, 0, tzinfo=IST)
    end = datetime(2026, 11, 20, 2, 0, tzinfo=IST)
    assert widen_to_whole_hours(start, end) == (utc(2026, 11, 18, 20), utc(2026, 11, 19, 21))


def test_seconds_past_the_hour_widen_too() -> None:
    assert widen_to_whole_hours(utc(2026, 1, 1, 3, 0, 1), utc(2026, 1, 1, 4, 0, 0, 1)) == (
        utc(2026, 1, 1, 3),
        utc(2026, 1, 1, 5),
    )


def test_a_day_splits_into_windows_of_at_most_max_hours_that_tile_it() -> None:
    windows = split_windows(utc(2026, 11, 18, 20), utc(2026, 11, 19, 20), 6)
    assert spans(windows) == [
        (utc(2026, 11, 18, 20), utc(2026, 11, 19, 2)),
        (utc(2026, 11, 19, 2), utc(2026, 11, 19, 8)),
        (utc(2026, 11, 19, 8), utc(2026, 11, 19, 14)),
        (utc(2026, 11, 19, 14), utc(2026, 11, 19, 20)),
    ]


def test_a_widened_range_ends_with_a_shorter_window() -> None:
    windows = split_windows(utc(2026, 11, 18, 20, 30), utc(2026, 11, 19, 20, 30), 6)
    assert [w.hours for w in windows] == [6, 6, 6, 6, 1]
    assert windows[0].start == utc(2026, 11, 18, 20)
    assert windows[-1].end == utc(2026, 11, 19, 21)


def test_one_window_when_the_range_fits() -> None:
    windows = split_windows(utc(2026, 11, 18, 1), utc(2026, 11, 19, 1), 24)
    assert spans(windows) == [(utc(2026, 11, 18, 1), utc(2026, 11, 19, 1))]
    assert windows[0].from_ms == 1794963600000
    assert windows[0].to_ms == 1795050000000


def test_consecutive_mid_hour_intervals_leave_no_gap_and_overlap_at_most_one_hour() -> None:
    """Each daily run of a UTC+05:30 DC widens outward: together they cover every hour, none missed."""
    ticks = [datetime(2026, 11, day, 2, 0, tzinfo=IST) for day in range(1, 9)]
    covered: list[datetime] = []
    for start, end in itertools.pairwise(ticks):
        for window in split_windows(start, end, 6):
            hour = window.start
            while hour < window.end:
                covered.append(hour)
                hour += timedelta(hours=1)
    first, last = covered[0], covered[-1]
    every_hour = {first + timedelta(hours=n) for n in range(int((last - first) / timedelta(hours=1)) + 1)}
    assert set(covered) == every_hour
    repeats = {hour for hour in covered if covered.count(hour) > 1}
    assert len(repeats) == len(ticks) - 2  # one boundary hour per pair of consecutive runs


def test_window_label_names_utc_times_and_the_ms_sent() -> None:
    window = split_windows(utc(2026, 11, 18, 1), utc(2026, 11, 19, 1), 24)[0]
    assert window.label() == ("[2026-11-18T01:00Z, 2026-11-19T01:00Z) (from=1794963600000, to=1795050000000)")


@pytest.mark.parametrize("max_hours", [0, -1])
def test_max_window_hours_must_be_positive(max_hours: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_windows(utc(2026, 1, 1), utc(2026, 1, 2), max_hours)


def test_an_empty_range_has_no_windows_to_send() -> None:
    with pytest.raises(ValueError, match="empty range"):
        split_windows(utc(2026, 1, 2), utc(2026, 1, 1), 24)


# --- parsing the manual params -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T00:00:00Z", utc(2026, 11, 20)),
        ("2026-11-20T00:00:00.000Z", utc(2026, 11, 20)),  # what the trigger form's picker sends
        ("2026-11-20T00:00:00+01:00", utc(2026, 11, 19, 23)),
        ("2026-11-20T05:30+05:30", utc(2026, 11, 20)),
    ],
)
def test_iso_timestamps_with_offset_are_accepted(text: str, expected: datetime) -> None:
    assert parse_timestamp("from", text) == expected
    assert re.match(ISO_WITH_OFFSET_PATTERN, text)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-20T00:00:00", "has no UTC offset"),
        ("2026-11-20", "has no UTC offset"),
        ("20/11/2026 00:00", "is not an ISO-8601 date and time"),
        ("2026-11-20 00:00:00+00:00", "is not in the form"),
        ("", "expected an ISO-8601 date and time"),
        (1795050000000, "expected an ISO-8601 date and time"),
    ],
)
def test_bad_timestamps_name_the_param_and_show_an_example(value: object, message: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_timestamp("to", value)
    text = str(caught.value)
    assert "param 'to'" in text
    assert message in text
    assert "2026-11-19T23:00:00Z" in text  # the example of a correct value
    if isinstance(value, str) and value:
        assert not re.match(ISO_WITH_OFFSET_PATTERN, value)


def test_a_valid_manual_range_is_returned_in_utc_as_given() -> None:
    assert manual_range("2026-11-01T00:00:00+01:00", "2026-11-04T00:00:00+01:00", now=NOW) == (
        utc(2026, 10, 31, 23),
        utc(2026, 11, 3, 23),
    )


def test_exactly_one_hour_is_enough() -> None:
    assert manual_range("2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z", now=NOW)


@pytest.mark.parametrize(
    ("from_value", "to_value", "expected"),
    [
        (
            "2026-11-05T00:00:00Z",
            "2026-11-01T00:00:00Z",
            "param 'to' (2026-11-01T00:00Z) is not after param 'from' (2026-11-05T00:00Z)",
        ),
        ("2026-11-05T00:00:00Z", "2026-11-05T00:00:00Z", "swap them or fix the dates"),
        ("2026-11-05T10:15:00Z", "2026-11-05T10:45:00Z", "is only 30 minutes"),
        ("2026-11-05T10:00:00Z", "2026-11-05T10:59:59Z", "must be at least one hour apart"),
        ("2026-11-27T00:00:00Z", "2026-11-28T00:00:00Z", "param 'from' (2026-11-27T00:00Z) is in the future"),
        ("2006-11-27T00:00:00Z", "2026-11-20T00:00:00Z", "check the year"),
    ],
)
def test_bad_manual_ranges_are_refused_with_the_fix(from_value: str, to_value: str, expected: str) -> None:
    with pytest.raises(WindowError, match=re.escape(expected)):
        manual_range(from_value, to_value, now=NOW)


@pytest.mark.parametrize(
    ("to_value", "shown"),
    [
        ("2036-11-20T00:00:00Z", "2036-11-20T00:00Z"),  # once accepted: 3,644 windows per pair
        ("2026-11-27T00:00:00Z", "2026-11-27T00:00Z"),
        ("2026-11-26T02:31:00Z", "2026-11-26T02:31Z"),  # one minute ahead is still the future
    ],
)
def test_a_range_that_ends_in_the_future_is_refused_naming_to(to_value: str, shown: str) -> None:
    """``to=2036-...`` must not be accepted (with purge_old: a purge first, then 3,644 windows per pair)."""
    with pytest.raises(WindowError) as caught:
        manual_range("2026-11-25T00:00:00Z", to_value, now=NOW)
    assert str(caught.value) == (
        f"param 'to' ({shown}) is in the future (now is 2026-11-26T02:30Z): hours after now hold nothing to "
        "re-index (and with purge_old the index would be deleted first); set 'to' to now or earlier: the "
        "hour in progress is re-indexed in full, ranges widen to whole hours"
    )


def test_a_range_that_ends_now_is_allowed() -> None:
    """ "Up to now" is typed as now (any offset); widening then covers the hour in progress in full."""
    assert manual_range("2026-11-25T00:00:00Z", "2026-11-26T03:30:00+01:00", now=NOW) == (
        utc(2026, 11, 25),
        NOW,
    )


@pytest.mark.parametrize("param", ["from", "to"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Valid ISO text whose UTC time is before year 1: an OverflowError retried twice before.
        ("0001-01-01T00:30+01:00", "cannot be represented in UTC (it falls outside the years 1-9999)"),
        ("9999-12-31T23:30-01:00", "cannot be represented in UTC (it falls outside the years 1-9999)"),
        ("1969-12-31T23:00:00Z", "is before 1970-01-01T00:00Z: RWS takes from/to as milliseconds since then"),
    ],
)
def test_dates_rws_cannot_take_are_param_errors_naming_the_field(param: str, text: str, message: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_timestamp(param, text)
    assert str(caught.value).startswith(f"param {param!r}: {text!r} {message}")
    assert "check the year" in str(caught.value)


def test_an_unrepresentable_from_fails_manual_range_as_a_window_error() -> None:
    with pytest.raises(WindowError, match=r"^param 'from': '0001-01-01T00:30\+01:00' cannot be represented"):
        manual_range("0001-01-01T00:30+01:00", "2026-11-20T00:00:00Z", now=NOW)
    assert manual_range("1970-01-01T00:00:00Z", "1970-01-01T01:00:00Z", now=NOW) == (
        utc(1970, 1, 1),
        utc(1970, 1, 1, 1),
    )


def test_utc_labels_are_short_and_keep_what_matters() -> None:
    assert format_utc(datetime(2026, 11, 20, 2, 0, tzinfo=IST)) == "2026-11-19T20:30Z"
    assert format_utc(utc(2026, 11, 20, 1, 2, 3)) == "2026-11-20T01:02:03Z"
    assert format_utc(datetime(2026, 11, 20, 1, 2, 3, 450000, tzinfo=UTC)) == "2026-11-20T01:02:03.450Z"
