"""Planning a re-index run: which range, contact centers and kinds; bad params refused before RWS is asked."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from include.gir_ops.reindex.plan import ReindexPair, ReindexParamError, plan_reindex
from include.gir_ops.reindex.windows import to_ms
from include.gir_ops.rws import RwsError
from include.gir_ops.shared import fail_without_retry
from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH, DataCenter, load_topology

BAD_CC = (
    "param 'contact_centers' must be a list of contact center IDs, each a dashed UUID (8-4-4-4-12 hex "
    "digits, e.g. 625a5cf1-dea8-4e46-b18b-831d4b254488) or plain hex (1-64 hex digits, e.g. 9a4c1e3f0b)"
)
CC_A, CC_B = "625a5cf1-dea8-4e46-b18b-831d4b254488", "0c7e2b9d-4f13-4a8e-9b6d-2e5f8a1c3d70"
NOW = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def dc(site: str) -> DataCenter:
    return load_topology(DEFAULT_TOPOLOGY_PATH).site(site)


class Discovery:
    """Stands in for RwsClient.contact_center_ids and remembers whether RWS was asked."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.calls = 0

    def __call__(self) -> list[str]:
        self.calls += 1
        return list(self.ids)


def plan(site: str, *, run_type: str = "scheduled", discovery: Discovery | None = None, **params: Any) -> Any:
    return plan_reindex(
        dc(site),
        run_type=run_type,
        data_interval_start=utc(2026, 11, 18, 1),
        data_interval_end=utc(2026, 11, 19, 1),
        params=params,
        discover_contact_centers=discovery or Discovery(["abc1", "abc2", "abc3"]),
        now=NOW,
    )


# --- planning ----------------------------------------------------------------------------------------


def test_a_scheduled_run_plans_its_data_interval_for_every_contact_center_and_kind() -> None:
    discovery = Discovery([])
    pairs = plan("DC2", discovery=discovery)
    assert [(p.contact_center_id, p.kind) for p in pairs] == [
        (CC_A, "recordings"),
        (CC_A, "screen-recordings"),
        (CC_B, "recordings"),
        (CC_B, "screen-recordings"),
    ]
    assert {(p.start_ms, p.end_ms, p.max_window_hours, p.purge_old) for p in pairs} == {
        (to_ms(utc(2026, 11, 18, 1)), to_ms(utc(2026, 11, 19, 1)), 24, False)
    }
    assert discovery.calls == 0  # the topology lists the contact centers: RWS is not asked
    assert pairs[0].label == f"{CC_A} recordings"


def test_contact_centers_are_discovered_when_the_topology_list_is_empty() -> None:
    discovery = Discovery(["AB01", "ab02"])
    pairs = plan("DC3", discovery=discovery)
    assert discovery.calls == 1
    assert [(p.contact_center_id, p.kind) for p in pairs] == [("ab01", "recordings"), ("ab02", "recordings")]
    assert pairs[0].max_window_hours == 6


def test_discovered_uuids_are_matched_case_insensitively_and_sent_lowercase() -> None:
    """RWS may list an ID in upper case and the operator may type it in another case: same contact center."""
    listed = ["625A5CF1-DEA8-4E46-B18B-831D4B254488", "0c7e2b9d-4f13-4a8e-9b6d-2e5f8a1c3d70"]
    pairs = plan(
        "DC3",
        run_type="manual",
        discovery=Discovery(listed),
        **{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"},
        contact_centers=["625a5cf1-DEA8-4e46-b18b-831D4B254488"],
    )
    assert [p.contact_center_id for p in pairs] == ["625a5cf1-dea8-4e46-b18b-831d4b254488"]


def test_screen_recordings_only_where_the_dc_uses_screen_recording() -> None:
    assert {p.kind for p in plan("DC2")} == {"recordings", "screen-recordings"}
    assert {p.kind for p in plan("DC3")} == {"recordings"}


def test_a_manual_run_reindexes_from_to_for_the_chosen_contact_centers_and_kinds() -> None:
    pairs = plan(
        "DC2",
        run_type="manual",
        **{"from": "2026-11-01T00:00:00+01:00", "to": "2026-11-04T00:00:00+01:00"},
        contact_centers=[CC_B.upper()],  # compared case-insensitively, sent lower-case
        kinds=["screen-recordings"],
        purge_old=True,
    )
    assert pairs == [
        ReindexPair(
            site="DC2",
            contact_center_id=CC_B,
            kind="screen-recordings",
            start_ms=to_ms(utc(2026, 10, 31, 23)),
            end_ms=to_ms(utc(2026, 11, 3, 23)),
            max_window_hours=24,
            purge_old=True,
        )
    ]
    assert len(pairs[0].windows()) == 3


def test_pairs_survive_the_trip_through_xcom() -> None:
    pair = plan("DC2")[1]
    assert ReindexPair.from_dict(copy.deepcopy(pair.to_dict())) == pair


@pytest.mark.parametrize(
    ("site", "run_type", "params", "expected"),
    [
        ("DC2", "scheduled", {"purge_old": True}, "param 'purge_old' is true on a scheduled run"),
        ("DC2", "backfill", {"purge_old": True}, "param 'purge_old' is true on a backfill run"),
        (
            "DC2",
            "backfill",
            {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"},
            "params 'from'/'to' are set on a backfill run",
        ),
        ("DC2", "manual", {"from": "2026-11-01T00:00:00Z"}, "param 'to' is missing"),
        ("DC2", "manual", {"to": "2026-11-01T00:00:00Z"}, "param 'from' is missing"),
        (
            "DC2",
            "manual",
            {"from": "2026-11-05T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
            "param 'to' (2026-11-01T00:00Z) is not after param 'from' (2026-11-05T00:00Z)",
        ),
        (
            "DC2",
            "manual",
            {"from": "2026-11-05T00:00:00Z", "to": "2026-11-05T00:40:00Z"},
            "is only 40 minutes",
        ),
        (
            "DC2",
            "manual",
            {"from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z"},
            "param 'from' (2026-12-01T00:00Z) is in the future",
        ),
        ("DC2", "manual", {"from": "2026-11-01T00:00:00", "to": "2026-11-02T00:00:00Z"}, "no UTC offset"),
        ("DC2", "manual", {"purge_old": True}, "param 'purge_old' needs 'from' and 'to'"),
        (
            "DC2",
            "manual",
            {"contact_centers": ["0badc0de"]},
            "param 'contact_centers': 0badc0de is not a contact center of DC2 (known from the topology: "
            "625a5cf1-dea8-4e46-b18b-831d4b254488, 0c7e2b9d-4f13-4a8e-9b6d-2e5f8a1c3d70)",
        ),
        ("DC2", "manual", {"contact_centers": ["not-hex"]}, BAD_CC),
        # The form's pattern lets a trailing newline through (re.search); each would go into a URL path.
        ("DC2", "manual", {"contact_centers": [f"{CC_A}\n"]}, BAD_CC),
        ("DC2", "manual", {"contact_centers": ["../ab"]}, BAD_CC),
        ("DC2", "manual", {"contact_centers": ["ab%2Fcd"]}, BAD_CC),
        ("DC2", "manual", {"contact_centers": ["ab cd"]}, BAD_CC),
        ("DC2", "manual", {"contact_centers": ["a" * 65]}, "or plain hex (1-64 hex digits"),
        # A UUID that is not exactly 8-4-4-4-12, or wrapped as some tools print it.
        ("DC2", "manual", {"contact_centers": ["625a5cf1-dea8-4e46-b18b-831d4b25448"]}, BAD_CC),
        ("DC2", "manual", {"contact_centers": ["625a5cf1dea8-4e46-b18b-831d4b254488"]}, BAD_CC),
        ("DC2", "manual", {"contact_centers": ["{625a5cf1-dea8-4e46-b18b-831d4b254488}"]}, BAD_CC),
        ("DC2", "manual", {"contact_centers": ["urn:uuid:625a5cf1-dea8-4e46-b18b-831d4b254488"]}, BAD_CC),
        # The same digits without dashes are another ID in a URL path: refused, with the form RWS knows.
        (
            "DC2",
            "manual",
            {"contact_centers": ["625a5cf1dea84e46b18b831d4b254488"]},
            "625a5cf1dea84e46b18b831d4b254488 is written 625a5cf1-dea8-4e46-b18b-831d4b254488 there",
        ),
        (
            "DC2",
            "manual",
            {"from": "2026-11-01T00:00:00Z", "to": "2036-11-01T00:00:00Z", "purge_old": True},
            "param 'to' (2036-11-01T00:00Z) is in the future (now is 2026-11-26T02:30Z)",
        ),
        (
            "DC2",
            "manual",
            {"from": "0001-01-01T00:30+01:00", "to": "2026-11-02T00:00:00Z"},
            "param 'from': '0001-01-01T00:30+01:00' cannot be represented in UTC",
        ),
        (
            "DC2",
            "manual",
            {"from": "2026-11-01T00:00:00Z", "to": "0001-01-01T00:30+01:00"},
            "param 'to': '0001-01-01T00:30+01:00' cannot be represented in UTC",
        ),
        ("DC2", "manual", {"kinds": ["videos"]}, "param 'kinds': unknown index kind(s) ['videos']"),
        (
            "DC3",
            "manual",
            {"kinds": ["screen-recordings"]},
            "param 'kinds': screen-recordings is not used in DC3 (rws.screen_recording is false",
        ),
        ("DC2", "manual", {"purge_old": "yes"}, "param 'purge_old' must be true or false"),
    ],
)
def test_bad_params_are_refused_before_rws_is_asked(
    site: str, run_type: str, params: dict[str, Any], expected: str
) -> None:
    discovery = Discovery(["abc1"])
    with pytest.raises(ReindexParamError, match=re.escape(expected)):
        plan(site, run_type=run_type, discovery=discovery, **params)
    assert discovery.calls == 0


def test_an_unrepresentable_date_fails_at_once_instead_of_being_retried() -> None:
    """A date UTC cannot hold is a param error, not an OverflowError that Airflow retries."""
    from airflow.sdk.exceptions import AirflowFailException

    discovery = Discovery(["abc1"])
    with (
        pytest.raises(AirflowFailException, match=r"^param 'from': '0001-01-01T00:30\+01:00' cannot be"),
        fail_without_retry(ReindexParamError, RwsError),
    ):
        plan(
            "DC2",
            run_type="manual",
            discovery=discovery,
            **{"from": "0001-01-01T00:30+01:00", "to": "2026-11-02T00:00:00Z"},
        )
    assert discovery.calls == 0


def test_an_unknown_contact_center_names_what_rws_reported() -> None:
    with pytest.raises(ReindexParamError) as caught:
        plan("DC3", run_type="manual", discovery=Discovery(["ab01", "ab02"]), contact_centers=["ab03"])
    assert "ab03 is not a contact center of DC3" in str(caught.value)
    assert "known from RWS DC3 (GET /api/v2/ops/contact-centers): ab01, ab02" in str(caught.value)


def test_no_contact_center_at_all_is_an_error_not_a_silent_success() -> None:
    with pytest.raises(ReindexParamError, match="lists no contact center for DC3: nothing to re-index"):
        plan("DC3", discovery=Discovery([]))


def test_a_manual_run_without_logical_date_or_range_takes_the_latest_schedule_period() -> None:
    """`Trigger` with no logical date and no params re-indexes what the last scheduled run covered."""
    pairs = plan_reindex(
        dc("DC2"),
        run_type="manual",
        data_interval_start=None,
        data_interval_end=None,
        params={},
        discover_contact_centers=Discovery([]),
        now=utc(2026, 11, 20, 15, 30),
    )
    # DC2: "0 2 * * *" Europe/Paris = 01:00 UTC in November; the latest complete day before 15:30 UTC.
    assert {(p.start_ms, p.end_ms) for p in pairs} == {
        (to_ms(utc(2026, 11, 19, 1)), to_ms(utc(2026, 11, 20, 1)))
    }


def test_without_a_schedule_fallback_a_missing_interval_is_a_clear_error() -> None:
    from include.gir_ops.reindex.plan import ReindexParams, reindex_range

    with pytest.raises(ReindexParamError, match="this run has no data interval"):
        reindex_range(
            run_type="manual",
            data_interval_start=None,
            data_interval_end=None,
            params=ReindexParams.from_mapping({}),
            now=NOW,
        )


def test_a_zero_width_interval_points_at_the_timetable() -> None:
    with pytest.raises(ReindexParamError, match="must be a CronDataIntervalTimetable"):
        plan_reindex(
            dc("DC2"),
            run_type="scheduled",
            data_interval_start=utc(2026, 11, 19, 1),
            data_interval_end=utc(2026, 11, 19, 1),
            params={},
            discover_contact_centers=Discovery([]),
            now=NOW,
        )


# --- a DC without reindex.enabled: an unscheduled DAG ------------------------------------------------


def unscheduled(moment: datetime | None, **params: Any) -> Any:
    """DC1 (reindex.enabled false), a run with a zero-width interval: created while its DAG had no schedule
    (Airflow's NullTimetable), or without a logical date."""
    return plan_reindex(
        dc("DC1"),
        run_type="manual",
        data_interval_start=moment,
        data_interval_end=moment,
        params=params,
        discover_contact_centers=Discovery([]),
        now=NOW,
    )


def test_an_unscheduled_run_without_from_to_takes_the_cron_period_before_its_logical_date() -> None:
    pairs = unscheduled(utc(2026, 11, 20, 12))  # reindex.schedule 0 2 * * * in UTC for DC1
    assert {(p.start_ms, p.end_ms) for p in pairs} == {
        (to_ms(utc(2026, 11, 19, 2)), to_ms(utc(2026, 11, 20, 2)))
    }


def test_an_unscheduled_run_without_a_logical_date_takes_the_last_period_before_now() -> None:
    pairs = unscheduled(None)  # NOW is 2026-11-26T02:30Z
    assert {(p.start_ms, p.end_ms) for p in pairs} == {
        (to_ms(utc(2026, 11, 25, 2)), to_ms(utc(2026, 11, 26, 2)))
    }


def test_an_unscheduled_run_with_from_to_reindexes_that_range() -> None:
    pairs = unscheduled(utc(2026, 11, 20), **{"from": "2026-11-01T00:00:00Z", "to": "2026-11-04T00:00:00Z"})
    assert {(p.start_ms, p.end_ms) for p in pairs} == {(to_ms(utc(2026, 11, 1)), to_ms(utc(2026, 11, 4)))}
    assert len(pairs[0].windows()) == 3


def test_a_backfill_run_of_the_unscheduled_dc_reindexes_exactly_its_cron_interval() -> None:
    """ManualAndBackfillOnlyTimetable gives backfill runs the cron interval: it is re-indexed as is."""
    pairs = plan_reindex(
        dc("DC1"),
        run_type="backfill",
        data_interval_start=utc(2026, 11, 19, 2),
        data_interval_end=utc(2026, 11, 20, 2),
        params={},
        discover_contact_centers=Discovery([]),
        now=NOW,
    )
    assert {(p.start_ms, p.end_ms) for p in pairs} == {
        (to_ms(utc(2026, 11, 19, 2)), to_ms(utc(2026, 11, 20, 2)))
    }
