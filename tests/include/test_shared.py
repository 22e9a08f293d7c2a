"""The shared helpers every feature uses: failing without retry, and times and sizes for people."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.gir_ops import shared


class Permanent(Exception):
    pass


class Transient(Exception):
    retryable = True


def test_fail_without_retry_ends_the_task_at_once_unless_the_error_is_retryable() -> None:
    with pytest.raises(AirflowFailException, match=r"^bad input$"), shared.fail_without_retry(Permanent):
        raise Permanent("bad input")
    with pytest.raises(Transient), shared.fail_without_retry(Permanent, Transient):
        raise Transient("come back later")
    with pytest.raises(KeyError), shared.fail_without_retry(Permanent):
        raise KeyError("not named: left to Airflow's retries")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "?"),
        (0, "0 B"),
        (1877, "1877 B"),
        (65535, "65535 B"),
        (64 * 1024, "64.00 KiB"),
        (3 * 1024**2 // 2, "1.50 MiB"),
        (2 * 1024**3, "2.00 GiB"),
        (5 * 1024**4, "5120.00 GiB"),
    ],
)
def test_format_size(size: int | None, text: str) -> None:
    assert shared.format_size(size) == text


def test_times_for_people_and_for_records() -> None:
    moment = datetime(2026, 11, 18, 2, 0, tzinfo=timezone(timedelta(hours=1)))
    assert shared.format_utc(moment) == "2026-11-18T01:00Z"
    assert shared.format_utc(moment.replace(second=5)) == "2026-11-18T01:00:05Z"
    assert shared.format_utc(moment.replace(microsecond=250000)) == "2026-11-18T01:00:00.250Z"
    assert shared.iso_utc(moment) == "2026-11-18T01:00:00+00:00"
    assert shared.iso_utc(None) is None and shared.iso_utc("as is") == "as is"
    assert shared.as_utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    assert shared.format_age(now - timedelta(minutes=12), now) == "12 min ago"
    assert shared.format_age(now - timedelta(hours=3), now) == "3.0 h ago"
    assert shared.format_age(None, now) == "at an unknown time"


def test_parse_iso_utc_reads_what_our_records_hold_and_skips_the_rest() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from include.gir_ops.shared import parse_iso_utc

    assert parse_iso_utc("2026-11-18T01:00Z") == datetime(2026, 11, 18, 1, tzinfo=UTC)
    assert parse_iso_utc("2026-11-18T06:30:00+05:30") == datetime(2026, 11, 18, 1, tzinfo=UTC)
    assert parse_iso_utc("2026-11-18T01:00:00") == datetime(2026, 11, 18, 1, tzinfo=UTC)  # naive: UTC
    aware = datetime(2026, 11, 18, 1, tzinfo=timezone(timedelta(hours=2)))
    assert parse_iso_utc(aware) is aware
    assert parse_iso_utc(datetime(2026, 11, 18, 1)) == datetime(2026, 11, 18, 1, tzinfo=UTC)
    for value in ("", "yesterday", None, 1763427600, ["2026-11-18T01:00Z"]):
        assert parse_iso_utc(value) is None, value
