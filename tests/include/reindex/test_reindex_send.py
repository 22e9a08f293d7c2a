"""Sending a pair against the simulator: purge first, each window once, resume after a failure."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from include.gir_ops.reindex.checkpoints import checkpoint_key
from include.gir_ops.reindex.plan import ReindexPair, ReindexParamError
from include.gir_ops.reindex.send import ReindexWindowFailed, send_pair
from include.gir_ops.reindex.windows import to_ms
from include.gir_ops.rws import RwsClient, RwsError
from include.gir_ops.shared import fail_without_retry
from include.gir_sim.state import SimError

CC_A, CC_B = "625a5cf1-dea8-4e46-b18b-831d4b254488", "0c7e2b9d-4f13-4a8e-9b6d-2e5f8a1c3d70"
HOUR_MS = 3_600_000
DAG_ID, RUN_ID = "gir_es_reindex_dc2", "manual__2026-11-26T02:00:00+00:00"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- sending -----------------------------------------------------------------------------------------


class MemoryCheckpoints:
    """The checkpoint store contract, in memory, recording every write."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.saved: list[int] = []
        self.deleted: list[str] = []

    def load(self, key: str) -> dict[str, Any] | None:
        value = self.data.get(key)
        return copy.deepcopy(value) if value is not None else None

    def save(self, key: str, value: dict[str, Any]) -> None:
        self.data[key] = copy.deepcopy(value)
        self.saved.append(value["windows_done"])

    def delete(self, key: str) -> None:
        self.data.pop(key, None)
        self.deleted.append(key)


def pair(days: int = 3, *, purge_old: bool = False, kind: str = "recordings") -> ReindexPair:
    return ReindexPair(
        site="DC2",
        contact_center_id=CC_A,
        kind=kind,
        start_ms=to_ms(utc(2026, 11, 1)),
        end_ms=to_ms(utc(2026, 11, 1 + days)),
        max_window_hours=24,
        purge_old=purge_old,
    )


def window_start(day: int) -> int:
    """from (ms) of window ``day`` (1-based) of ``pair()``."""
    return to_ms(utc(2026, 11, day))


def fail_window(gir: Any, from_ms: int, *, times: int, http_status: int = 400, status_code: int = 2) -> None:
    """Make the simulated RWS refuse the window starting at ``from_ms`` the next ``times`` times."""
    state = gir.simulator.state
    original = state.force_index
    remaining = {"times": times}

    def force_index(site: str, contact_center_id: str, kind: str, body: Any) -> dict[str, Any]:
        if isinstance(body, dict) and body.get("from") == from_ms and remaining["times"] > 0:
            remaining["times"] -= 1
            raise SimError(http_status, status_code, "injected fault for this window")
        return original(site, contact_center_id, kind, body)

    state.force_index = force_index


def posted(gir: Any) -> list[tuple[int, int, bool, int]]:
    """(from, to, purgeOld, HTTP status) of every forceIndex POST the DC2 simulator received, in order."""
    return [
        (r["body"]["from"], r["body"]["to"], r["body"]["purgeOld"], r["http_status"])
        for r in gir.posts("DC2", "/contact-centers/")
    ]


def hours_indexed_once(gir: Any, days: int) -> bool:
    hours = gir.indexed("DC2").get(CC_A, {}).get("recordings", {})
    expected = {window_start(1) + n * HOUR_MS: 1 for n in range(24 * days)}
    return hours == expected


@pytest.fixture
def sender(gir: Any) -> Callable[..., dict[str, Any]]:
    sleeps: list[float] = []

    def send(target: ReindexPair, store: MemoryCheckpoints, **kwargs: Any) -> dict[str, Any]:
        with RwsClient("DC2", "gir_rws_dc2", sleep=sleeps.append) as client:
            return send_pair(target, client=client, checkpoints=store, dag_id=DAG_ID, run_id=RUN_ID, **kwargs)

    return send


def test_each_window_is_posted_once_in_order(gir: Any, sender: Callable[..., Any]) -> None:
    store = MemoryCheckpoints()
    summary = sender(pair(3), store)
    assert posted(gir) == [
        (window_start(1), window_start(2), False, 200),
        (window_start(2), window_start(3), False, 200),
        (window_start(3), window_start(4), False, 200),
    ]
    assert hours_indexed_once(gir, 3)
    assert store.data == {}  # the checkpoint is gone once the pair completed
    assert summary == {
        "contact_center_id": CC_A,
        "kind": "recordings",
        "from": "2026-11-01T00:00Z",
        "to": "2026-11-04T00:00Z",
        "windows": 3,
        "windows_sent": 3,
        "windows_sent_by_earlier_tries": 0,
        "purged_first": False,
    }


def test_purge_old_goes_with_the_first_window_only(gir: Any, sender: Callable[..., Any]) -> None:
    sender(pair(3, purge_old=True), MemoryCheckpoints())
    assert [purge for _, _, purge, _ in posted(gir)] == [True, False, False]
    assert [start for start, _, _, _ in posted(gir)] == [window_start(1), window_start(2), window_start(3)]
    assert gir.simulator.state.sites["DC2"].purges == [(CC_A, "recordings")]
    assert hours_indexed_once(gir, 3)  # nothing indexed after the purge was thrown away


@pytest.mark.parametrize("purge_old", [False, True])
def test_a_retry_resumes_at_the_failed_window_and_never_resends_or_repurges(
    gir: Any, sender: Callable[..., Any], purge_old: bool
) -> None:
    store = MemoryCheckpoints()
    fail_window(gir, window_start(3), times=1)
    with pytest.raises(ReindexWindowFailed) as caught:
        sender(pair(5, purge_old=purge_old), store, flush_every_seconds=3600)
    message = str(caught.value)
    assert "window 3/5 [2026-11-03T00:00Z, 2026-11-04T00:00Z)" in message
    assert "statusCode 2 = a parameter is not valid for the current state" in message
    assert f"windows 1-2 of 5 of {CC_A} recordings (up to 2026-11-03T00:00Z) are re-indexed" in message
    assert "a retry resumes at window 3" in message
    assert caught.value.retryable is False
    assert store.saved[-1] == 2  # flushed on the way out even though the interval had not elapsed

    summary = sender(pair(5, purge_old=purge_old), store)  # the retry (e.g. after clearing the task)

    starts = [start for start, _, _, _ in posted(gir)]
    assert starts == [window_start(d) for d in (1, 2, 3, 3, 4, 5)]  # 1 and 2 once; 3 failed, then sent
    assert [purge for _, _, purge, _ in posted(gir)] == [purge_old] + [False] * 5
    assert hours_indexed_once(gir, 5)  # a second purge would have dropped windows 1-2
    assert len(gir.simulator.state.sites["DC2"].purges) == (1 if purge_old else 0)
    assert summary["windows_sent"] == 3
    assert summary["windows_sent_by_earlier_tries"] == 2
    assert store.data == {}


def test_a_failed_purge_stops_the_pair_and_is_repeated_first(gir: Any, sender: Callable[..., Any]) -> None:
    store = MemoryCheckpoints()
    fail_window(gir, window_start(1), times=1)
    with pytest.raises(ReindexWindowFailed) as caught:
        sender(pair(3, purge_old=True), store)
    assert "this was the purgeOld POST" in str(caught.value)
    assert "the other 2 window(s) of 625a5cf1-dea8-4e46-b18b-831d4b254488 recordings were not sent" in str(
        caught.value
    )
    assert posted(gir) == [(window_start(1), window_start(2), True, 400)]
    assert store.data == {}

    sender(pair(3, purge_old=True), store)
    assert [(start, purge) for start, _, purge, _ in posted(gir)][1:] == [
        (window_start(1), True),
        (window_start(2), False),
        (window_start(3), False),
    ]


def test_partial_success_fails_the_window_with_an_explanation(gir: Any, sender: Callable[..., Any]) -> None:
    fail_window(gir, window_start(2), times=1, http_status=200, status_code=7)
    with pytest.raises(ReindexWindowFailed) as caught:
        sender(pair(3), MemoryCheckpoints())
    assert "statusCode 7 = partial success" in str(caught.value)
    assert "re-indexed only part of window 2" in str(caught.value)
    assert "it is not counted as done and a retry sends it again in full" in str(caught.value)
    assert caught.value.retryable is False
    assert len(posted(gir)) == 2


def test_a_transient_failure_is_retried_in_the_client_and_then_left_to_airflow(
    gir: Any, sender: Callable[..., Any]
) -> None:
    fail_window(gir, window_start(2), times=4, http_status=503, status_code=4)
    with pytest.raises(ReindexWindowFailed) as caught, fail_without_retry(ReindexWindowFailed, RwsError):
        sender(pair(3), MemoryCheckpoints())
    assert caught.value.retryable is True  # passed through, so Airflow's own retries apply
    assert "(gave up after 4 attempts)" in str(caught.value)
    assert [start for start, _, _, _ in posted(gir)] == [window_start(1)] + [window_start(2)] * 4


def test_a_tampered_pair_never_puts_its_contact_center_into_the_url(
    gir: Any, sender: Callable[..., Any]
) -> None:
    """The pair comes from plan's XCom, which the REST API can overwrite: the ID is checked again."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.gir_ops.rws import RwsInvalidId

    tampered = ReindexPair.from_dict(pair(1).to_dict() | {"contact_center_id": "../../genesys-environments"})
    with pytest.raises(ReindexWindowFailed) as caught:
        sender(tampered, MemoryCheckpoints())
    assert isinstance(caught.value.rws_error, RwsInvalidId)
    assert caught.value.retryable is False
    assert (
        "contact center ID '../../genesys-environments' from the forceIndex request is refused: it contains "
        "a path separator ('/' or '\\')"
    ) in str(caught.value)
    assert gir.requests("DC2") == []  # nothing was sent at all
    with pytest.raises(AirflowFailException), fail_without_retry(ReindexWindowFailed, RwsError):
        sender(tampered, MemoryCheckpoints())


def test_a_checkpoint_of_another_plan_is_ignored(
    gir: Any, sender: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryCheckpoints()
    key = checkpoint_key(DAG_ID, RUN_ID, CC_A, "recordings")
    store.data[key] = {
        "dag_id": DAG_ID,
        "run_id": RUN_ID,
        "contact_center_id": CC_A,
        "kind": "recordings",
        "plan": pair(5).fingerprint(),  # a checkpoint of a 5-day plan ...
        "windows_done": 2,
    }
    with caplog.at_level(logging.WARNING):
        sender(pair(3), store)  # ... does not apply to this 3-day plan
    assert len(posted(gir)) == 3
    assert "belongs to another plan" in caplog.text


def test_progress_is_written_per_interval_immediately_after_a_purge_and_not_after_completion(
    gir: Any, sender: Callable[..., Any]
) -> None:
    every_window = MemoryCheckpoints()
    sender(pair(3), every_window, flush_every_seconds=0)
    assert every_window.saved == [1, 2, 3]

    rarely = MemoryCheckpoints()
    sender(pair(3), rarely, flush_every_seconds=3600)
    assert rarely.saved == []
    assert len(rarely.deleted) == 1

    purging = MemoryCheckpoints()
    sender(pair(3, purge_old=True), purging, flush_every_seconds=3600)
    assert purging.saved == [1]


def test_fail_without_retry_turns_what_cannot_heal_into_airflow_fail_exception() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    errors = (ReindexParamError, ReindexWindowFailed, RwsError)
    assert ReindexParamError("param 'to' is missing").retryable is False  # params never heal by retrying
    with pytest.raises(AirflowFailException, match="param 'to' is missing"), fail_without_retry(*errors):
        raise ReindexParamError("param 'to' is missing")
    refused = RwsError("RWS DC2 rejected ...: statusCode 2", site="DC2", status_code=2, retryable=False)
    with pytest.raises(AirflowFailException, match="statusCode 2"), fail_without_retry(*errors):
        raise ReindexWindowFailed(str(refused), retryable=False, rws_error=refused)
    unreachable = RwsError("RWS DC2 could not be reached", site="DC2", retryable=True)
    with pytest.raises(RwsError), fail_without_retry(*errors):
        raise unreachable
    # A window that failed for a reason that can heal is left to Airflow's retries, unchanged.
    with pytest.raises(ReindexWindowFailed) as caught, fail_without_retry(*errors):
        raise ReindexWindowFailed(str(unreachable), retryable=True, rws_error=unreachable)
    assert caught.value.rws_error is unreachable


def test_checkpoint_keys_are_safe_distinct_and_short() -> None:
    run_id = "manual__2026-11-26T02:40:15.156047+00:00_mJNYQDzV"
    keys = {checkpoint_key(DAG_ID, run_id, cc, kind) for cc in (CC_A, CC_B) for kind in ("a", "b")}
    assert len(keys) == 4
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", key)
        assert len(key) < 250
        assert key.startswith("gir_es_reindex_checkpoint__gir_es_reindex_dc2__manual__2026-11-26T02_40_15")
