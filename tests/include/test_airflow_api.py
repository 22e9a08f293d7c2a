"""The pool check's Airflow REST API client: what it sends, what it concludes, what it never shows."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import requests
import requests_mock as requests_mock_module

from include.gir_ops.airflow_api import (
    AIRFLOW_API_CONN_ID,
    AirflowApiAuthError,
    AirflowApiClient,
    AirflowApiConnectionError,
    AirflowApiError,
    AirflowApiUnreachable,
)

BASE = "http://airflow-api.example:8080"
LOGIN = "gir_pools_reader"
PASSWORD = "api-Pa55-never-shown-7Qx"  # a test credential, asserted never to leak
TOKEN = "eyJ.test-token.never-shown"
TOKEN_URL = f"{BASE}/auth/token"
POOL_URL = f"{BASE}/api/v2/pools/gir_rws_dc2"
CONN_ENV = f"AIRFLOW_CONN_{AIRFLOW_API_CONN_ID.upper()}"


def _set_connection(monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> None:
    document: dict[str, Any] = {
        "conn_type": "http",
        "host": "airflow-api.example",
        "port": 8080,
        "schema": "http",
        "login": LOGIN,
        "password": PASSWORD,
        **overrides,
    }
    monkeypatch.setenv(CONN_ENV, json.dumps({k: v for k, v in document.items() if v is not None}))


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> AirflowApiClient:
    _set_connection(monkeypatch)
    return AirflowApiClient()


@pytest.fixture
def token(requests_mock: requests_mock_module.Mocker) -> Any:
    return requests_mock.post(TOKEN_URL, status_code=201, json={"access_token": TOKEN})


def _not_found(name: str) -> dict[str, Any]:
    """Airflow's own 404 for a pool (FastAPI HTTPException body)."""
    return {"status_code": 404, "json": {"detail": f"The Pool with name: `{name}` was not found"}}


def _no_secret(text: str) -> None:
    assert PASSWORD not in text
    assert TOKEN not in text


# --- what is sent --------------------------------------------------------------------------------------


def test_a_token_is_fetched_once_and_each_pool_is_read_with_the_bearer(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(POOL_URL, json={"name": "gir_rws_dc2", "slots": 1})
    requests_mock.get(f"{BASE}/api/v2/pools/gir_rws_switch", json={"name": "gir_rws_switch", "slots": 1})

    with client:
        assert client.missing_pools(["gir_rws_dc2", "gir_rws_switch"]) == []

    sent = requests_mock.request_history
    assert [(r.method, r.url) for r in sent] == [
        ("POST", TOKEN_URL),
        ("GET", POOL_URL),
        ("GET", f"{BASE}/api/v2/pools/gir_rws_switch"),
    ]
    assert sent[0].json() == {"username": LOGIN, "password": PASSWORD}
    assert "Authorization" not in sent[0].headers  # the password travels in the body only, once
    for request in sent[1:]:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"  # never basic auth with the password
        assert request.body is None


def test_a_pool_name_is_url_quoted(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(f"{BASE}/api/v2/pools/odd%2Fname%20x", **_not_found("odd/name x"))
    assert client.missing_pools(["odd/name x"]) == ["odd/name x"]


def test_a_base_url_with_a_path_prefix_is_kept(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    _set_connection(monkeypatch, host="https://proxy.example/airflow", port=None, schema="https")
    requests_mock.post(
        "https://proxy.example/airflow/auth/token", status_code=201, json={"access_token": TOKEN}
    )
    requests_mock.get("https://proxy.example/airflow/api/v2/pools/gir_rws_dc2", json={"name": "gir_rws_dc2"})
    assert AirflowApiClient().pool_exists("gir_rws_dc2") is True


# --- what it concludes ---------------------------------------------------------------------------------


def test_airflows_404_means_the_pool_is_missing(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(POOL_URL, **_not_found("gir_rws_dc2"))
    requests_mock.get(f"{BASE}/api/v2/pools/gir_rws_switch", json={"name": "gir_rws_switch"})
    assert client.missing_pools(["gir_rws_dc2", "gir_rws_switch"]) == ["gir_rws_dc2"]


def test_a_404_that_is_not_airflows_means_a_wrong_url(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(POOL_URL, status_code=404, text="<html>Not Found</html>")
    with pytest.raises(AirflowApiConnectionError) as caught:
        client.pool_exists("gir_rws_dc2")
    assert caught.value.retryable is False
    assert "does not point at the Airflow API server's base URL" in str(caught.value)


@pytest.mark.parametrize("status", [401, 400])
def test_refused_credentials_are_not_retried_and_never_shown(
    client: AirflowApiClient,
    requests_mock: requests_mock_module.Mocker,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    requests_mock.post(TOKEN_URL, status_code=status, json={"detail": "Invalid credentials"})
    with caplog.at_level(logging.DEBUG), pytest.raises(AirflowApiAuthError) as caught:
        client.pool_exists("gir_rws_dc2")
    assert caught.value.retryable is False
    assert (
        f"the Airflow API at {BASE} refused the login 'gir_pools_reader' of connection 'gir_airflow_api' "
        f"(HTTP {status} on POST /auth/token)"
    ) in str(caught.value)
    assert "role user" in str(caught.value)
    _no_secret(str(caught.value) + caplog.text)
    assert requests_mock.call_count == 1  # no pool was asked about


def test_a_user_without_read_access_to_pools_is_told_which_role(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(POOL_URL, status_code=403, json={"detail": "Forbidden"})
    with pytest.raises(AirflowApiAuthError) as caught:
        client.pool_exists("gir_rws_dc2")
    assert caught.value.retryable is False
    message = str(caught.value)
    assert "user 'gir_pools_reader' of connection 'gir_airflow_api' may not read pools (HTTP 403)" in message
    assert "SimpleAuthManager role user, FAB role User" in message


def test_no_token_endpoint_means_the_url_is_not_the_api_server(
    client: AirflowApiClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(TOKEN_URL, status_code=404, text="not here")
    with pytest.raises(AirflowApiConnectionError, match="has no POST /auth/token") as caught:
        client.pool_exists("gir_rws_dc2")
    assert caught.value.retryable is False


@pytest.mark.parametrize("where", ["token", "pool"])
def test_5xx_is_retryable(
    client: AirflowApiClient, requests_mock: requests_mock_module.Mocker, where: str
) -> None:
    if where == "token":
        requests_mock.post(TOKEN_URL, status_code=503, text="busy")
    else:
        requests_mock.post(TOKEN_URL, status_code=201, json={"access_token": TOKEN})
        requests_mock.get(POOL_URL, status_code=500, json={"detail": "boom"})
    with pytest.raises(AirflowApiError) as caught:
        client.pool_exists("gir_rws_dc2")
    assert caught.value.retryable is True
    assert caught.value.http_status in (500, 503)


def test_an_unreachable_api_server_is_retryable(
    client: AirflowApiClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(TOKEN_URL, exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(AirflowApiUnreachable) as caught:
        client.pool_exists("gir_rws_dc2")
    assert caught.value.retryable is True
    assert f"the Airflow API at {BASE} could not be reached for a token for user 'gir_pools_reader'" in str(
        caught.value
    )


# --- the connection ------------------------------------------------------------------------------------


def test_a_missing_connection_says_how_to_create_it(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    monkeypatch.delenv(CONN_ENV, raising=False)
    with pytest.raises(AirflowApiConnectionError) as caught:
        AirflowApiClient().pool_exists("gir_rws_dc2")
    message = str(caught.value)
    assert caught.value.retryable is False
    assert message.startswith(
        "the Airflow connection 'gir_airflow_api' does not exist; create the HTTP connection"
    )
    assert (
        "GIR_AIRFLOW_API_PASSWORD=<password> python -m include.gir_ops.bootstrap airflow-api --url" in message
    )
    assert "airflow connections add gir_airflow_api --conn-json" in message
    assert "AIRFLOW_CONN_GIR_AIRFLOW_API" in message
    assert requests_mock.call_count == 0


def test_a_connection_without_password_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    _set_connection(monkeypatch, password=None)
    with pytest.raises(AirflowApiConnectionError, match="'gir_airflow_api' has no password; create"):
        AirflowApiClient().pool_exists("gir_rws_dc2")
    assert requests_mock.call_count == 0


# --- what the failover's steps read ---------------------------------------------------------------------

RUN_ID = "manual__2026-11-30T09:42:44.108748+00:00"
RUN_PATH = (
    f"{BASE}/api/v2/dags/gir_eservices_failover/dagRuns/manual__2026-11-30T09%3A42%3A44.108748%2B00%3A00"
)


def test_a_dag_run_is_read_with_its_run_id_url_quoted(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(RUN_PATH, json={"run_id": RUN_ID, "triggered_by": "rest_api"})
    assert client.dag_run("gir_eservices_failover", RUN_ID)["triggered_by"] == "rest_api"
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_missing_dag_run_is_an_error_not_an_empty_answer(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(RUN_PATH, status_code=404, json={"detail": "not found"})
    with pytest.raises(AirflowApiError, match="has no DAG run") as caught:
        client.dag_run("gir_eservices_failover", RUN_ID)
    assert caught.value.retryable is False


def test_a_hitl_detail_is_read_and_none_when_airflow_has_none(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    url = f"{RUN_PATH}/taskInstances/approve_failover/-1/hitlDetails"
    requests_mock.get(url, json={"response_received": True, "responded_by_user": {"id": "approver"}})
    assert (
        client.hitl_detail("gir_eservices_failover", RUN_ID, "approve_failover")["response_received"] is True
    )
    requests_mock.get(url, status_code=404, json={"detail": "no HITL detail"})
    assert client.hitl_detail("gir_eservices_failover", RUN_ID, "approve_failover") is None


# --- the one write: triggering a run with a run id of our choosing ---------------------------------------

RUNS_URL = f"{BASE}/api/v2/dags/gir_es_reindex_dc1/dagRuns"


def test_trigger_dag_run_posts_the_run_id_and_conf_and_409_means_it_exists(
    client: AirflowApiClient, token: Any, requests_mock: requests_mock_module.Mocker
) -> None:
    run_id = "gir_failover_catch_up__manual__2026-11-20T03_00_00+00_00"
    conf = {"from": "2026-11-20T01:00:00+00:00", "to": "2026-11-20T05:00:00+00:00"}
    requests_mock.post(
        RUNS_URL,
        [
            {"status_code": 200, "json": {"dag_run_id": run_id, "state": "queued"}},
            {"status_code": 409, "json": {"detail": "exists"}},
        ],
    )
    requests_mock.get(
        f"{RUNS_URL}/{requests.utils.quote(run_id, safe='')}", json={"dag_run_id": run_id, "state": "running"}
    )
    with client:
        assert client.trigger_dag_run("gir_es_reindex_dc1", run_id, conf, note="catch-up") == (
            True,
            {"dag_run_id": run_id, "state": "queued"},
        )
        created, existing = client.trigger_dag_run("gir_es_reindex_dc1", run_id, conf)
    assert (created, existing["state"]) == (False, "running")
    posts = [r for r in requests_mock.request_history if r.method == "POST" and r.url == RUNS_URL]
    assert [p.json() for p in posts] == [
        {"dag_run_id": run_id, "logical_date": None, "conf": conf, "note": "catch-up"},
        {"dag_run_id": run_id, "logical_date": None, "conf": conf},
    ]
    assert all(p.headers["Authorization"] == f"Bearer {TOKEN}" for p in posts)


@pytest.mark.parametrize(
    ("status", "error", "text", "retryable"),
    [
        (404, AirflowApiError, "has no DAG 'gir_es_reindex_dc1' to trigger (HTTP 404)", False),
        (
            403,
            AirflowApiAuthError,
            "may not trigger gir_es_reindex_dc1 (HTTP 403); give it SimpleAuthManager "
            "role user or FAB role User",
            False,
        ),
        (503, AirflowApiError, "answered HTTP 503 to triggering", True),
    ],
    ids=["no-dag", "forbidden", "server-error"],
)
def test_trigger_dag_run_failures_say_what_to_fix(
    client: AirflowApiClient,
    token: Any,
    requests_mock: requests_mock_module.Mocker,
    *,
    status: int,
    error: type[Exception],
    text: str,
    retryable: bool,
) -> None:
    requests_mock.post(RUNS_URL, status_code=status, json={"detail": "nope"})
    with client, pytest.raises(error) as caught:
        client.trigger_dag_run("gir_es_reindex_dc1", "r1", {})
    assert text in str(caught.value)
    assert caught.value.retryable is retryable
    _no_secret(str(caught.value))
