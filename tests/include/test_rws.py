"""The RWS client: both checks, messages an on-call engineer can act on, retries only where they can help."""

from __future__ import annotations

import base64
import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import requests_mock as requests_mock_module

from include.gir_ops.rws import (
    IDEMPOTENT,
    MAX_RETRY_AFTER_SECONDS,
    SEND_AT_MOST_ONCE,
    RetryPolicy,
    RwsAuthError,
    RwsClient,
    RwsError,
    RwsInvalidId,
    RwsPartialSuccess,
    RwsThrottled,
    RwsUnreachable,
    parse_retry_after,
    validate_environment_id,
)
from include.gir_ops.shared import CONTACT_CENTER_ID_FORMS

CONN_ID = "gir_rws_test"
BASE = "http://rws-dc2.example:8090"
PASSWORD = "s3cret-ops-password-Zq81"  # a test credential, asserted never to leak
AUTH_HEADER = "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
CC = "625a5cf1-dea8-4e46-b18b-831d4b254488"
FORCE_INDEX_URL = f"{BASE}/api/v2/ops/contact-centers/{CC}/recordings"
FROM_MS, TO_MS = 1794963600000, 1795050000000


def _set_connection(monkeypatch: pytest.MonkeyPatch, *, host: str, port: int, **extra: Any) -> None:
    document: dict[str, Any] = {
        "conn_type": "http",
        "host": host,
        "port": port,
        "login": "ops",
        "password": PASSWORD,
    }
    if extra:
        document["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(document))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    _set_connection(monkeypatch, host="rws-dc2.example", port=8090)
    return []


@pytest.fixture
def client(sleeps: list[float]) -> RwsClient:
    return RwsClient("DC2", CONN_ID, sleep=sleeps.append)


def gws(status_code: int, http_status: int = 200, message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"statusCode": status_code}
    if message:
        body["statusMessage"] = message
    return {"json": body, "status_code": http_status}


def force_index(client: RwsClient, **kwargs: Any) -> Any:
    return client.force_index(CC, "recordings", FROM_MS, TO_MS, **kwargs)


# --- a good answer -----------------------------------------------------------------------------------


def test_force_index_sends_the_guides_body_with_json_and_basic_auth(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(FORCE_INDEX_URL, **gws(0))
    answer = force_index(client, purge_old=True)
    sent = requests_mock.last_request
    assert sent.json() == {"operationName": "forceIndex", "from": FROM_MS, "to": TO_MS, "purgeOld": True}
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Authorization"] == AUTH_HEADER
    assert (answer.http_status, answer.status_code, answer.attempts) == (200, 0, 1)


def test_unknown_kind_is_refused_before_anything_is_sent(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    with pytest.raises(ValueError, match="unknown re-index kind 'videos'"):
        client.force_index(CC, "videos", FROM_MS, TO_MS)
    assert requests_mock.call_count == 0


def test_contact_center_ids_come_from_the_end_of_each_uri(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(
        f"{BASE}/api/v2/ops/contact-centers",
        json={
            "statusCode": 0,
            "uris": [f"{BASE}/api/v2/ops/contact-centers/ABC123", f"{BASE}/api/v2/ops/contact-centers/0f0f/"],
        },
    )
    assert client.contact_center_ids() == ["abc123", "0f0f"]


def test_discovered_uuid_contact_center_ids_are_accepted_and_sent_lowercase(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    """Real RWS lists contact centers by dashed UUID (in any case); each is kept and sent in lower case."""
    requests_mock.get(
        f"{BASE}/api/v2/ops/contact-centers",
        json={
            "statusCode": 0,
            "uris": [
                f"{BASE}/api/v2/ops/contact-centers/625A5CF1-DEA8-4E46-B18B-831D4B254488",
                f"{BASE}/api/v2/ops/contact-centers/0c7e2b9d-4f13-4a8e-9b6d-2e5f8a1c3d70/",
                f"{BASE}/api/v2/ops/contact-centers/9A4C1E3F0B",
            ],
        },
    )
    ids = client.contact_center_ids()
    assert ids == [CC, "0c7e2b9d-4f13-4a8e-9b6d-2e5f8a1c3d70", "9a4c1e3f0b"]
    requests_mock.post(FORCE_INDEX_URL, json={"statusCode": 0})
    client.force_index(CC.upper(), "recordings", FROM_MS, TO_MS)
    assert requests_mock.last_request.url == FORCE_INDEX_URL  # .url keeps the case as sent


# --- both checks: HTTP status and statusCode ---------------------------------------------------------


def test_http_200_with_a_non_zero_status_code_is_an_error(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, **gws(2, 200, "index busy"))
    with pytest.raises(RwsError) as caught:
        force_index(client)
    message = str(caught.value)
    assert (
        "RWS DC2 rejected forceIndex of recordings for contact center 625a5cf1-dea8-4e46-b18b-831d4b254488"
        in message
    )
    assert f"[{FROM_MS}, {TO_MS})" in message  # the window
    assert "statusCode 2 = a parameter is not valid for the current state (index busy)" in message
    assert requests_mock.call_count == 1
    assert sleeps == []


def test_a_body_without_status_code_is_not_taken_for_success(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(FORCE_INDEX_URL, text="<html>proxy login</html>", status_code=200)
    with pytest.raises(RwsError, match="no statusCode in the body; is the connection pointing at RWS"):
        force_index(client)
    assert requests_mock.call_count == 1


def test_the_callers_description_names_dc_contact_center_and_window(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(FORCE_INDEX_URL, **gws(6, 404))
    what = f"forceIndex of recordings for contact center {CC}, window 2/3 [2026-11-18T01:00Z, ...)"
    with pytest.raises(RwsError) as caught:
        force_index(client, what=what)
    assert str(caught.value).startswith(f"RWS DC2 rejected {what}: HTTP 404, statusCode 6 = ")
    assert "the resource was not found" in str(caught.value)


# --- retry classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_status", "status_code", "expected"),
    [
        (401, 20, f"RWS DC2 refused the credentials of connection '{CONN_ID}'"),
        (401, None, "check the connection's login and password"),
        (403, 5, f"RWS DC2 accepted the login of connection '{CONN_ID}' but refused forceIndex"),
        (403, 3, "statusCode 3: the operation is forbidden); check that this ops user has the permission"),
    ],
)
def test_refused_credentials_or_permission_fail_at_once(
    client: RwsClient,
    requests_mock: requests_mock_module.Mocker,
    sleeps: list[float],
    *,
    http_status: int,
    status_code: int | None,
    expected: str,
) -> None:
    if status_code is None:
        requests_mock.post(FORCE_INDEX_URL, status_code=http_status, text="Unauthorized")
    else:
        requests_mock.post(FORCE_INDEX_URL, **gws(status_code, http_status))
    with pytest.raises(RwsAuthError) as caught:
        force_index(client)
    message = str(caught.value)
    assert expected in message
    assert caught.value.retryable is False
    assert requests_mock.call_count == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("status_code", "http_status", "meaning"),
    [
        (1, 400, "a required parameter is missing"),
        (2, 400, "a parameter is not valid for the current state"),
        (3, 400, "the operation is forbidden"),
        (5, 400, "the user has no permission for this operation"),
        (6, 404, "the resource was not found"),
        (10, 400, "input validation failed"),
        (2, 500, "a parameter is not valid for the current state"),  # the body's code beats the 5xx
        (6, 503, "the resource was not found"),
    ],
)
def test_status_codes_that_cannot_heal_are_not_retried(
    client: RwsClient,
    requests_mock: requests_mock_module.Mocker,
    *,
    sleeps: list[float],
    status_code: int,
    http_status: int,
    meaning: str,
) -> None:
    requests_mock.post(FORCE_INDEX_URL, **gws(status_code, http_status))
    with pytest.raises(RwsError) as caught:
        force_index(client)
    assert f"statusCode {status_code} = {meaning}" in str(caught.value)
    assert caught.value.retryable is False
    assert requests_mock.call_count == 1
    assert sleeps == []


def test_partial_success_fails_the_window_without_retry(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, **gws(7, 200, "3 recordings not indexed"))
    with pytest.raises(
        RwsPartialSuccess, match=r"statusCode 7 = partial success \(3 recordings not indexed\)"
    ):
        force_index(client)
    assert requests_mock.call_count == 1
    assert sleeps == []


def test_503_twice_then_success_is_retried_with_backoff(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, [gws(4, 503), gws(4, 503), gws(0)])
    answer = force_index(client)
    assert answer.attempts == 3
    assert [entry["http_status"] for entry in answer.history] == [503, 503, 200]
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize(("status_code", "http_status"), [(4, 500), (4, 200), (None, 502)])
def test_internal_errors_and_5xx_are_retried_then_fail_clearly(
    client: RwsClient,
    requests_mock: requests_mock_module.Mocker,
    *,
    sleeps: list[float],
    status_code: int | None,
    http_status: int,
) -> None:
    if status_code is None:
        requests_mock.post(FORCE_INDEX_URL, text="Bad Gateway", status_code=http_status)
    else:
        requests_mock.post(FORCE_INDEX_URL, **gws(status_code, http_status))
    with pytest.raises(RwsError) as caught:
        force_index(client)
    assert caught.value.retryable is True
    assert "(gave up after 4 attempts)" in str(caught.value)
    assert requests_mock.call_count == 4
    assert sleeps == [1.0, 2.0, 4.0]
    assert len(caught.value.history) == 4


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(attempts=10, initial_backoff_seconds=1, max_backoff_seconds=5)
    assert [policy.backoff(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


# --- HTTP 429: throttled, not processed, so resent; Retry-After honoured (capped) ---------------------


def throttled(retry_after: str | None = None, *, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"status_code": 429}
    if retry_after is not None:
        answer["headers"] = {"Retry-After": retry_after}
    if body is not None:
        answer["json"] = body
    else:
        answer["text"] = "Too Many Requests"
    return answer


def test_429_without_retry_after_is_resent_with_the_policys_backoff(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    """A 429 used to fail the window at once ("no statusCode in the body")."""
    requests_mock.post(FORCE_INDEX_URL, [throttled(), throttled(), throttled(), gws(0)])
    answer = force_index(client)
    assert requests_mock.call_count == 4
    assert answer.attempts == 4
    assert [entry["http_status"] for entry in answer.history] == [429, 429, 429, 200]
    assert sleeps == [1.0, 2.0, 4.0]
    assert all(r.json()["operationName"] == "forceIndex" for r in requests_mock.request_history)


def test_429_waits_what_retry_after_asks_in_seconds(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, [throttled("7"), throttled(" 0 "), gws(0)])
    assert force_index(client).attempts == 3
    assert requests_mock.call_count == 3
    assert sleeps == [7.0, 0.0]


def test_429_with_a_gws_body_is_resent_too(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, [throttled("2", body={"statusCode": 4}), gws(0)])
    assert force_index(client).attempts == 2
    assert sleeps == [2.0]


def test_a_long_retry_after_is_capped(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, [throttled("3600"), throttled("99999999999999999999"), gws(0)])
    force_index(client)
    assert sleeps == [MAX_RETRY_AFTER_SECONDS, MAX_RETRY_AFTER_SECONDS] == [60.0, 60.0]


def test_retry_after_as_an_http_date(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(
        FORCE_INDEX_URL,
        [
            throttled("Wed, 21 Oct 2015 07:28:00 GMT"),  # in the past: no wait
            throttled(format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)),  # capped
            gws(0),
        ],
    )
    force_index(client)
    assert sleeps == [0.0, 60.0]


def test_a_429_that_persists_fails_clearly_and_is_left_to_airflows_retries(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, **throttled("5"))
    with pytest.raises(RwsThrottled) as caught:
        force_index(client)
    assert requests_mock.call_count == 4
    assert sleeps == [5.0, 5.0, 5.0]
    assert caught.value.retryable is True
    assert caught.value.http_status == 429
    assert str(caught.value) == (
        f"RWS DC2 is throttling requests and did not process forceIndex of recordings for contact center "
        f"{CC} [{FROM_MS}, {TO_MS}) (HTTP 429 Too Many Requests; Retry-After '5', waiting 5 s, at most "
        "60 s); "
        "if it persists, lower the pool's slots for this RWS or ask who else is calling it "
        "(gave up after 4 attempts)"
    )


def test_429_on_a_get_is_retried(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.get(
        f"{BASE}/api/v2/ops/contact-centers",
        [throttled("1"), {"json": {"statusCode": 0, "uris": [f"{BASE}/api/v2/ops/contact-centers/ab12"]}}],
    )
    assert client.contact_center_ids() == ["ab12"]
    assert requests_mock.call_count == 2
    assert sleeps == [1.0]


def test_429_is_retried_even_when_the_connection_asks_httphook_to_check_responses(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    """HttpHook raises AirflowException on non-2xx when it checks the response; the client never lets it."""
    _set_connection(monkeypatch, host="rws-dc2.example", port=8090, check_response=True)
    sleeps: list[float] = []
    requests_mock.post(FORCE_INDEX_URL, [throttled(), gws(0)])
    assert force_index(RwsClient("DC2", CONN_ID, sleep=sleeps.append)).attempts == 2
    assert sleeps == [1.0]


def test_a_503_retry_after_is_honoured_as_well(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, [{**gws(4, 503), "headers": {"Retry-After": "3"}}, gws(0)])
    force_index(client)
    assert sleeps == [3.0]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("12", 12.0),
        ("60", 60.0),
        ("61", 60.0),
        ("Fri, 20 Nov 2026 12:00:30 GMT", 30.0),
        ("Fri, 20 Nov 2026 11:00:00 GMT", 0.0),
        ("Fri, 20 Nov 2026 14:00:00 GMT", 60.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == expected


# --- IDs from RWS never reach a URL path unchecked ------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "problem"),
    [
        ("..", "it contains '..'"),
        ("ab%2Fcd", "it contains a percent-encoded character (such as %2F)"),
        ("ab cd", "it contains whitespace"),
        ("ab\ncd", "it contains a control character"),
        ("ab\x00", "it contains a control character"),
        ("abc?x=1", f"it is not {CONTACT_CENTER_ID_FORMS}"),
        ("zz", f"it is not {CONTACT_CENTER_ID_FORMS}"),
        ("625a5cf1-dea8-4e46-b18b-831d4b25448", f"it is not {CONTACT_CENTER_ID_FORMS}"),
        ("{625a5cf1-dea8-4e46-b18b-831d4b254488}", f"it is not {CONTACT_CENTER_ID_FORMS}"),
    ],
)
def test_discovered_contact_center_ids_are_validated_before_use(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, segment: str, problem: str
) -> None:
    """Whatever RWS listed used to go straight into .../contact-centers/<id>/recordings."""
    requests_mock.get(
        f"{BASE}/api/v2/ops/contact-centers",
        json={
            "statusCode": 0,
            "uris": [f"{BASE}/api/v2/ops/contact-centers/ab12", f"/contact-centers/{segment}"],
        },
    )
    with pytest.raises(RwsInvalidId) as caught:
        client.contact_center_ids()
    message = str(caught.value)
    assert message.startswith(
        f"contact center ID {segment!r} from RWS DC2 (GET /api/v2/ops/contact-centers) is refused: "
        f"{problem}; a contact center ID is {CONTACT_CENTER_ID_FORMS}, and it goes into a URL path"
    )
    assert "\n" not in message and "\x00" not in message  # shown escaped: no log-line injection
    assert caught.value.retryable is False
    assert isinstance(caught.value, ValueError)


def test_a_listing_without_a_list_of_uris_is_an_error(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.get(f"{BASE}/api/v2/ops/contact-centers", json={"statusCode": 0, "uris": "ab12"})
    with pytest.raises(RwsError, match="without a list of URIs in 'uris' or 'paths'"):
        client.contact_center_ids()


def test_force_index_refuses_an_unsafe_contact_center_id_before_sending(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    with pytest.raises(RwsInvalidId, match=r"contact center ID '\.\./x' from the forceIndex request"):
        client.force_index("../x", "recordings", FROM_MS, TO_MS)
    assert requests_mock.call_count == 0


ENVIRONMENT_ID = "0e4a7a3e-5b8f-5e0a-9c1d-2b3f4a5c6d7e"


@pytest.mark.parametrize("value", [ENVIRONMENT_ID, "env_1", "A"])
def test_plain_environment_ids_are_accepted_unchanged(value: str) -> None:
    assert validate_environment_id(value, site="DC1") == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("..", "it contains '..'"),
        ("a/../b", "it contains a path separator ('/' or '\\')"),
        ("a%2Fb", "it contains a percent-encoded character (such as %2F)"),
        ("a b", "it contains whitespace"),
        ("a\r\nX-Injected: 1", "it contains a control character"),
        ("", "it is empty"),
        ("-a", "it is not 1-128 letters, digits, '-' or '_' starting with a letter or digit"),
        ("a.b", "it is not 1-128 letters, digits"),
        ("a" * 129, "it is not 1-128 letters, digits"),
        (None, "it is a NoneType, not text"),
    ],
)
def test_unsafe_environment_ids_are_refused_with_a_clear_error(value: object, problem: str) -> None:
    with pytest.raises(RwsInvalidId) as caught:
        validate_environment_id(value, site="DC1")
    message = str(caught.value)
    assert message.startswith("genesys-environment ID ")
    assert f"from RWS DC1 is refused: {problem}" in message
    assert "Check what GET /api/v2/ops/genesys-environments returns on RWS DC1" in message
    assert len(message) < 500  # a huge ID is cut short in the message
    assert (caught.value.retryable, caught.value.request_sent) == (False, False)


def test_environment_ids_from_rws_are_validated(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    listing = f"{BASE}/api/v2/ops/genesys-environments"
    requests_mock.get(listing, json={"statusCode": 0, "paths": [f"/genesys-environments/{ENVIRONMENT_ID}"]})
    answer, listed = client.genesys_environments()
    assert listed == [ENVIRONMENT_ID] and answer.http_status == 200
    requests_mock.get(listing, json={"statusCode": 0, "paths": ["/genesys-environments/x%2F..%2Fops"]})
    with pytest.raises(
        RwsInvalidId, match=r"from RWS DC2 \(GET /api/v2/ops/genesys-environments\) is refused"
    ):
        client.genesys_environments()
    calls = requests_mock.call_count
    with pytest.raises(RwsInvalidId, match="it contains a path separator"):
        client.genesys_environment("../contact-centers")
    assert requests_mock.call_count == calls  # nothing sent with it


# --- no answer at all --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_retried_then_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()  # nothing listens there: a real "connection refused"
    _set_connection(monkeypatch, host="127.0.0.1", port=port)
    sleeps: list[float] = []
    with pytest.raises(RwsUnreachable) as caught:
        force_index(RwsClient("DC2", CONN_ID, sleep=sleeps.append))
    message = str(caught.value)
    assert f"RWS DC2 could not be reached for forceIndex of recordings for contact center {CC}" in message
    assert "connection refused or host unknown" in message
    assert f"check that http://127.0.0.1:{port}/api/v2/ops/contact-centers/{CC}/recordings is up" in message
    assert "(gave up after 4 attempts)" in message
    assert caught.value.request_sent is False
    assert sleeps == [1.0, 2.0, 4.0]


def test_connection_refused_is_retried_even_for_send_at_most_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection provably never delivered the request, so resending it is safe."""
    _set_connection(monkeypatch, host="127.0.0.1", port=_free_port())
    sleeps: list[float] = []
    with pytest.raises(RwsUnreachable):
        force_index(RwsClient("DC2", CONN_ID, sleep=sleeps.append), policy=SEND_AT_MOST_ONCE)
    assert len(sleeps) == 3


def test_a_read_timeout_is_retried_for_idempotent_calls_and_names_the_call(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, [{"exc": requests.exceptions.ReadTimeout}, gws(0)])
    answer = force_index(client, policy=IDEMPOTENT)
    assert answer.attempts == 2
    assert requests_mock.call_count == 2
    assert sleeps == [1.0]


def test_a_timeout_that_persists_fails_clearly(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(FORCE_INDEX_URL, exc=requests.exceptions.ReadTimeout)
    with pytest.raises(RwsUnreachable) as caught:
        force_index(client)
    assert f"RWS DC2 did not answer forceIndex of recordings for contact center {CC}" in str(caught.value)
    assert "in time (ReadTimeout)" in str(caught.value)
    assert requests_mock.call_count == 4


def test_send_at_most_once_does_not_resend_after_a_read_timeout(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    """The request left this machine: RWS may have acted on it, so it is not sent a second time."""
    requests_mock.post(FORCE_INDEX_URL, [{"exc": requests.exceptions.ReadTimeout}, gws(0)])
    with pytest.raises(RwsUnreachable) as caught:
        force_index(client, policy=SEND_AT_MOST_ONCE)
    assert caught.value.request_sent is True
    assert requests_mock.call_count == 1
    assert sleeps == []


def test_send_at_most_once_resends_after_a_connect_timeout(
    client: RwsClient, requests_mock: requests_mock_module.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(FORCE_INDEX_URL, [{"exc": requests.exceptions.ConnectTimeout}, gws(0)])
    assert force_index(client, policy=SEND_AT_MOST_ONCE).attempts == 2
    assert sleeps == [1.0]


def test_the_timeout_comes_from_the_connection_extra(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    _set_connection(monkeypatch, host="rws-dc2.example", port=8090, timeout=1)
    requests_mock.post(FORCE_INDEX_URL, **gws(0))
    force_index(RwsClient("DC2", CONN_ID))
    assert requests_mock.last_request.timeout == 1
    assert "timeout" not in {name.lower() for name in requests_mock.last_request.headers}


def test_the_default_timeout_applies_without_an_extra(
    client: RwsClient, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(FORCE_INDEX_URL, **gws(0))
    force_index(client)
    assert requests_mock.last_request.timeout == (5.0, 60.0)


# --- credentials ---------------------------------------------------------------------------------------


def test_credentials_never_reach_logs_errors_or_history(
    client: RwsClient,
    requests_mock: requests_mock_module.Mocker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    requests_mock.post(FORCE_INDEX_URL, [gws(4, 503), gws(0), gws(20, 401), gws(4, 500)])
    texts: list[str] = []
    answer = force_index(client)
    texts.append(json.dumps(answer.history) + json.dumps(answer.summary()) + repr(answer))
    for _ in range(2):
        with pytest.raises(RwsError) as caught:
            force_index(client)
        texts.append(str(caught.value) + json.dumps(caught.value.history))
    assert requests_mock.request_history[0].headers["Authorization"] == AUTH_HEADER  # it was sent ...
    assert caplog.records, "the client logs what it does"
    everything = caplog.text + "\n".join(texts)
    assert PASSWORD not in everything  # ... but never written anywhere
    assert AUTH_HEADER.split()[1] not in everything
    assert "Authorization" not in everything


# --- Content-Type on every POST, and reading the eServices site back ------------------------------------


def test_every_post_says_content_type_json_even_when_the_connection_sets_another(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    """RWS answers a POST without ``Content-Type: application/json`` with HTTP 415; an extra header in
    the connection (HttpHook turns unknown extras into headers) must not replace it."""
    _set_connection(monkeypatch, host="rws-dc2.example", port=8090, **{"Content-Type": "text/plain"})
    env = "5f0c2d6e-1b7a-4c1e-9d3f-2a8b7c6d5e4f"
    switch_url = f"{BASE}/api/v2/ops/genesys-environments/{env}/multimedia-switch"
    requests_mock.post(switch_url, **gws(0))
    requests_mock.post(FORCE_INDEX_URL, **gws(0))
    with RwsClient("DC2", CONN_ID) as client:
        client.multimedia_switch(env, "DC2")
        force_index(client)
    sent = requests_mock.request_history
    assert [r.headers["Content-Type"] for r in sent] == ["application/json", "application/json"]
    assert sent[0].json() == {"eServicesSite": "DC2"}


@pytest.mark.parametrize(
    ("body", "site_field", "expected"),
    [
        ({"statusCode": 0, "genesysEnvironment": {"id": "e", "eServicesSite": "DC2"}}, None, "DC2"),
        ({"statusCode": 0, "id": "e", "eServicesSite": "DC2"}, None, "DC2"),
        ({"statusCode": 0, "genesysEnvironment": {"id": "e"}}, None, None),
        ({"statusCode": 0, "id": "e"}, None, None),
        ({"statusCode": 0, "a": {"eServicesSite": "DC1"}, "b": {"eServicesSite": "DC2"}}, None, None),
        ({"statusCode": 0, "genesysEnvironment": {"eServicesSite": ""}}, None, None),
        ({"statusCode": 0, "genesysEnvironment": {"eServicesSite": 3}}, None, None),
        ({"statusCode": 0, "env": {"settings": {"site": "DC3"}}}, "env.settings.site", "DC3"),
        ({"statusCode": 0, "eServicesSite": "DC1", "env": {}}, "env.settings.site", None),
        ({"statusCode": 0, "env": "flat"}, "env.site", None),
        ("not json", None, None),
    ],
    ids=[
        "nested",
        "top-level",
        "nested-absent",
        "top-level-absent",
        "two-nested-objects-ambiguous",
        "empty",
        "not-text",
        "site-field",
        "site-field-only-that-path",
        "site-field-through-text",
        "no-object",
    ],
)
def test_eservices_site_is_read_top_level_or_nested_or_at_the_configured_path(
    body: Any, site_field: str | None, expected: str | None
) -> None:
    from include.gir_ops.rws import eservices_site_of

    assert eservices_site_of(body, site_field) == expected
