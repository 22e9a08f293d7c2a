"""The switch POST on the wire: sent at most once unless RWS proves it changed nothing (simulator and
requests-mock)."""

from __future__ import annotations

import json

import pytest
import requests_mock

from include.gir_ops.rws import RwsAuthError, RwsClient, RwsError, RwsUnreachable, not_processed
from tests.conftest import SimulatedGir
from tests.include.failover.failover_support import (
    SWITCH,
    environment_id,
    no_sleep,
    switch_client,
    switch_posts,
)

# --- the switch POST: sent at most once unless the outcome is known -----------------------------------


def test_switch_resent_after_503_with_status_code_4(gir: SimulatedGir) -> None:
    gir.fault("DC2", count=1, http_status=503, status_code=4, path_contains=SWITCH)
    answer = switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert answer.attempts == 2
    assert [(p["http_status"], p["status_code"]) for p in switch_posts(gir, "DC2")] == [(503, 4), (200, 0)]
    assert len(gir.simulator.state.environment.switches) == 1


def test_switch_resent_after_status_code_4_even_with_http_200(gir: SimulatedGir) -> None:
    gir.fault("DC2", count=1, http_status=200, status_code=4, path_contains=SWITCH)
    switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert len(switch_posts(gir, "DC2")) == 2


def test_switch_not_resent_after_status_code_3(gir: SimulatedGir) -> None:
    gir.fault("DC2", count=1, http_status=403, status_code=3, path_contains=SWITCH)
    with pytest.raises(RwsError) as caught:
        switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert caught.value.status_code == 3 and not caught.value.retryable
    assert len(switch_posts(gir, "DC2")) == 1
    assert gir.simulator.state.environment.switches == []


def test_switch_not_resent_after_a_dropped_connection(gir: SimulatedGir) -> None:
    """The request left this machine; RWS may have acted on it: never send it again."""
    gir.fault("DC2", count=1, mode="drop", path_contains=SWITCH)
    with pytest.raises(RwsUnreachable) as caught:
        switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert caught.value.request_sent is True
    assert len(switch_posts(gir, "DC2")) == 1


def test_a_get_is_still_resent_after_a_dropped_connection(gir: SimulatedGir) -> None:
    """The fix is limited to send-at-most-once calls: idempotent reads keep their retries."""
    gir.fault("DC2", count=1, mode="drop", path_contains="genesys-environments", method="GET")
    answer = switch_client(gir).genesys_environment(environment_id(gir))
    assert answer.attempts == 2


def test_switch_retried_when_the_connection_is_refused(gir: SimulatedGir) -> None:
    """Connection refused: nothing left this machine, so retrying is safe (and it gives up after 4)."""
    env_id = environment_id(gir)
    gir.simulator.stop_site("DC2")
    with pytest.raises(RwsUnreachable) as caught:
        switch_client(gir).multimedia_switch(env_id, "DC2")
    assert caught.value.request_sent is False
    assert len(caught.value.history) == 4


@pytest.mark.parametrize(
    ("status", "body"),
    [(502, "<html>Bad gateway</html>"), (504, ""), (200, "not json")],
    ids=["proxy-502", "gateway-timeout", "200-without-statusCode"],
)
def test_switch_not_resent_when_the_answer_is_not_from_rws(
    monkeypatch: pytest.MonkeyPatch, status: int, body: str
) -> None:
    """A proxy's 5xx (or a body without statusCode) does not say RWS changed nothing."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIR_RWS_TEST",
        json.dumps({"conn_type": "http", "host": "rws.test", "login": "ops", "password": "x"}),
    )
    with requests_mock.Mocker() as mocked:
        mocked.post(requests_mock.ANY, status_code=status, text=body)
        with pytest.raises(RwsError):
            RwsClient("DC2", "gir_rws_test", sleep=no_sleep).multimedia_switch("env", "DC2")
        assert mocked.call_count == 1


def test_rws_auth_error_is_a_known_refusal() -> None:
    """An auth refusal is a definite answer: the switch step reports it as failed, not unknown."""
    exc = RwsAuthError("refused", site="DC2", http_status=401, status_code=20)
    assert exc.status_code not in (None, 0) and not exc.retryable


@pytest.mark.parametrize(("http_status", "status_code"), [(500, 9), (500, 7), (200, 9)])
def test_switch_not_resent_when_rws_may_have_applied_it(
    gir: SimulatedGir, http_status: int, status_code: int
) -> None:
    """statusCode 9 (processing incomplete) or 7 (partial success): RWS may have switched. One POST only."""
    gir.fault("DC2", count=3, http_status=http_status, status_code=status_code, path_contains=SWITCH)
    with pytest.raises(RwsError) as caught:
        switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert caught.value.status_code == status_code
    assert len(switch_posts(gir, "DC2")) == 1
    assert not not_processed(caught.value)


def test_switch_resent_after_429_and_503_which_say_nothing_was_processed(gir: SimulatedGir) -> None:
    gir.fault("DC2", count=1, http_status=429, status_code=4, path_contains=SWITCH)
    gir.fault("DC2", count=1, http_status=503, status_code=4, path_contains=SWITCH)
    answer = switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    assert answer.attempts == 3
    assert [p["http_status"] for p in switch_posts(gir, "DC2")] == [429, 503, 200]
    assert len(gir.simulator.state.environment.switches) == 1
