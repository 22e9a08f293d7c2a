"""The one client every DAG uses to talk to a DC's Interaction Recording Web Services (RWS) ops API.

Built on the HTTP provider's ``HttpHook``, so the base URL and the ops user come from an Airflow
connection and never from code. Every answer is checked twice: the HTTP status and the body's
``statusCode`` (GWS return values; a non-zero code means the request changed nothing). Errors name the
code's meaning, the DC and what was being done, so an on-call engineer can act on the message alone.

Retries are decided here, per call, because only the caller knows whether a request is safe to send
again: a ``forceIndex`` can be repeated, a ``multimedia-switch`` only when it never left this machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.gir_ops.topology import REINDEX_KINDS

if TYPE_CHECKING:
    import requests

# ``requests`` is imported where a call is made, not here: the failover DAG file imports this module
# (through ``failover``) while the dag-processor parses it, and that import alone would double its parse time.

log = logging.getLogger(__name__)

OPS_API = "/api/v2/ops"

# GWS API return values (statusCode in every response body).
STATUS_CODE_MEANINGS: dict[int, str] = {
    0: "OK",
    1: "a required parameter is missing",
    2: "a parameter is not valid for the current state",
    3: "the operation is forbidden",
    4: "internal error in RWS",
    5: "the user has no permission for this operation",
    6: "the resource was not found",
    7: "partial success",
    8: "a password change is demanded",
    9: "processing is incomplete",
    10: "input validation failed",
    11: "the property is read-only",
    12: "unable to retrieve the resource",
    13: "unable to create the resource",
    14: "unable to delete the resource",
    15: "unable to update the resource",
    16: "unable to assign",
    17: "unable to unassign",
    18: "the resource already exists",
    19: "the resource is in use",
    20: "the user is not authenticated",
}
# statusCode 4 is a server-side fault that can heal; every other non-zero code will not by itself.
RETRYABLE_STATUS_CODES = frozenset({4})
# Codes that say the request itself is wrong or not allowed: sending it again cannot help, even when RWS
# wraps them in an HTTP 5xx (the body's code is the more specific of the two). 7 = partial success.
NON_RETRYABLE_STATUS_CODES = frozenset({1, 2, 3, 5, 6, 7, 10})


class RwsError(Exception):
    """RWS refused or failed a request. ``retryable`` says whether sending it again can help."""

    def __init__(
        self,
        message: str,
        *,
        site: str,
        http_status: int | None = None,
        status_code: int | None = None,
        retryable: bool = False,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.site = site
        self.http_status = http_status
        self.status_code = status_code
        self.retryable = retryable
        self.request_sent = request_sent
        self.history: list[dict[str, Any]] = []


class RwsAuthError(RwsError):
    """The ops credentials in the Airflow connection were refused (HTTP 401/403, statusCode 20)."""


class RwsPartialSuccess(RwsError):
    """statusCode 7: part of the operation was applied. Never treated as success."""


class RwsUnreachable(RwsError):
    """No HTTP answer at all: connection refused, dropped, or timed out."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is repeated when the failure is transient.

    ``resend_after_unknown_outcome`` is False for non-idempotent calls: a timeout or dropped connection
    after the request left this machine may mean RWS acted on it, so it is not sent again.
    """

    attempts: int = 4
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    resend_after_unknown_outcome: bool = True

    def backoff(self, attempt: int) -> float:
        return min(self.initial_backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)


IDEMPOTENT = RetryPolicy()
SEND_AT_MOST_ONCE = RetryPolicy(resend_after_unknown_outcome=False)


@dataclass(frozen=True)
class RwsAnswer:
    """What RWS said, without credentials: kept for audit records and task logs."""

    method: str
    path: str
    http_status: int
    status_code: int | None
    body: dict[str, Any]
    attempts: int
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "http_status": self.http_status,
            "statusCode": self.status_code,
            "attempts": self.attempts,
        }


def _request_never_sent(exc: BaseException) -> bool:
    """True when requests failed before any byte of the request reached RWS."""
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import ConnectTimeout
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    if isinstance(exc, ConnectTimeout):
        return True
    if isinstance(exc, RequestsConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, NewConnectionError | NameResolutionError)
    return False


class RwsClient:
    """Talks to one DC's RWS through the Airflow HTTP connection ``conn_id``."""

    def __init__(
        self,
        site: str,
        conn_id: str,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.site = site
        self.conn_id = conn_id
        self._timeout = timeout
        self._sleep = sleep
        self._hook: Any = None
        self._session: requests.Session | None = None

    # --- plumbing ------------------------------------------------------------------------------------

    def _connect(self) -> tuple[Any, requests.Session]:
        """One hook and one keep-alive session per client, so a 400-day range reuses its connection."""
        if self._session is None:
            from airflow.providers.http.hooks.http import HttpHook

            hook = HttpHook(method="POST", http_conn_id=self.conn_id)
            session = hook.get_conn(headers={"Accept": "application/json"})
            self._hook, self._session = hook, session
        return self._hook, self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> RwsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        what: str,
        policy: RetryPolicy = IDEMPOTENT,
    ) -> RwsAnswer:
        """Send one ops API call, retrying only what ``policy`` and the failure allow.

        ``what`` describes the call in GIR words ("forceIndex of recordings for contact center 9a4c…
        window …") and goes into every log line and error.
        """
        history: list[dict[str, Any]] = []
        for attempt in range(1, policy.attempts + 1):
            try:
                answer = self._send_once(method, path, json_body, what=what, attempt=attempt, history=history)
            except RwsError as exc:
                history.append(
                    {
                        "attempt": attempt,
                        "http_status": exc.http_status,
                        "statusCode": exc.status_code,
                        "error": str(exc),
                    }
                )
                # The outcome is known when the request never left, or when RWS itself answered with a
                # non-zero statusCode (which means it changed nothing); only then may a send-at-most-once
                # call go out again. A timeout, a dropped connection or a 5xx without a GWS body is not.
                outcome_known = exc.request_sent is False or exc.status_code not in (None, 0)
                may_resend = exc.retryable and (outcome_known or policy.resend_after_unknown_outcome)
                if not may_resend or attempt == policy.attempts:
                    if exc.retryable and attempt > 1:
                        exc.args = (f"{exc.args[0]} (gave up after {attempt} attempts)",)
                    exc.history = history
                    raise
                delay = policy.backoff(attempt)
                log.warning(
                    "RWS %s: %s failed (attempt %d/%d): %s; retrying in %.1fs",
                    self.site,
                    what,
                    attempt,
                    policy.attempts,
                    exc,
                    delay,
                )
                self._sleep(delay)
            else:
                return answer
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _send_once(
        self,
        method: str,
        path: str,
        json_body: dict[str, Any] | None,
        *,
        what: str,
        attempt: int,
        history: list[dict[str, Any]],
    ) -> RwsAnswer:
        import requests
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import Timeout

        hook, session = self._connect()
        url = hook.url_from_endpoint(path)
        prepared = session.prepare_request(requests.Request(method, url, json=json_body))
        timeout = hook.merged_extra.get("timeout", self._timeout)
        try:
            response = hook.run_and_check(session, prepared, {"check_response": False, "timeout": timeout})
        except Timeout as exc:
            never_sent = _request_never_sent(exc)
            raise RwsUnreachable(
                f"RWS {self.site} did not answer {what} in time ({type(exc).__name__}); "
                f"check that {url} is reachable",
                site=self.site,
                retryable=True,
                request_sent=not never_sent,
            ) from None
        except RequestsConnectionError as exc:
            never_sent = _request_never_sent(exc)
            detail = "connection refused or host unknown" if never_sent else "connection dropped"
            raise RwsUnreachable(
                f"RWS {self.site} could not be reached for {what} ({detail}); check that {url} is up",
                site=self.site,
                retryable=True,
                request_sent=not never_sent,
            ) from None
        answer = self._check(method, path, response, what, attempt)
        history.append({"attempt": attempt, "http_status": answer.http_status, "statusCode": 0})
        return RwsAnswer(
            method=answer.method,
            path=answer.path,
            http_status=answer.http_status,
            status_code=answer.status_code,
            body=answer.body,
            attempts=attempt,
            history=history,
        )

    def _check(
        self, method: str, path: str, response: requests.Response, what: str, attempt: int
    ) -> RwsAnswer:
        http_status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        status_code = body.get("statusCode") if isinstance(body, dict) else None
        message = body.get("statusMessage") if isinstance(body, dict) else None
        log.info("RWS %s %s %s -> HTTP %s statusCode %s", self.site, method, path, http_status, status_code)
        if http_status == 401 or status_code == 20:
            raise RwsAuthError(
                f"RWS {self.site} refused the credentials of connection {self.conn_id!r} for {what} "
                f"(HTTP {http_status}, statusCode {status_code}: "
                f"{STATUS_CODE_MEANINGS.get(status_code or 20, 'not authenticated')}); "
                "check the connection's login and password (the RWS ops user)",
                site=self.site,
                http_status=http_status,
                status_code=status_code,
            )
        if http_status == 403:
            raise RwsAuthError(
                f"RWS {self.site} accepted the login of connection {self.conn_id!r} but refused {what} "
                f"(HTTP 403, statusCode {status_code}: "
                f"{STATUS_CODE_MEANINGS.get(status_code or 3, 'forbidden')}); "
                "check that this ops user has the permission for this operation",
                site=self.site,
                http_status=http_status,
                status_code=status_code,
            )
        if not isinstance(body, dict) or not isinstance(status_code, int):
            raise RwsError(
                f"RWS {self.site} answered {what} with HTTP {http_status} and no statusCode in the body; "
                "is the connection pointing at RWS?",
                site=self.site,
                http_status=http_status,
                retryable=http_status >= 500,
            )
        if status_code == 0 and 200 <= http_status < 300:
            return RwsAnswer(method, path, http_status, status_code, body, attempt)
        meaning = STATUS_CODE_MEANINGS.get(status_code, "unknown statusCode")
        detail = f" ({message})" if message else ""
        error_class = RwsPartialSuccess if status_code == 7 else RwsError
        raise error_class(
            f"RWS {self.site} rejected {what}: HTTP {http_status}, statusCode {status_code} "
            f"= {meaning}{detail}",
            site=self.site,
            http_status=http_status,
            status_code=status_code,
            retryable=status_code in RETRYABLE_STATUS_CODES
            or (http_status >= 500 and status_code not in NON_RETRYABLE_STATUS_CODES),
        )

    # --- the ops API calls the guide describes -------------------------------------------------------

    def contact_center_ids(self) -> list[str]:
        """GET /contact-centers: the hex IDs are the last segment of each returned URI."""
        answer = self.request("GET", f"{OPS_API}/contact-centers", what="listing contact centers")
        uris = answer.body.get("uris") or answer.body.get("paths") or []
        return [str(uri).rstrip("/").rsplit("/", 1)[-1].lower() for uri in uris]

    def force_index(
        self,
        contact_center_id: str,
        kind: str,
        from_ms: int,
        to_ms: int,
        *,
        purge_old: bool = False,
        what: str | None = None,
        policy: RetryPolicy = IDEMPOTENT,
    ) -> RwsAnswer:
        """POST forceIndex for one contact center, one index kind and one window [from_ms, to_ms)."""
        if kind not in REINDEX_KINDS:
            raise ValueError(f"unknown re-index kind {kind!r}; use one of {REINDEX_KINDS}")
        body = {"operationName": "forceIndex", "from": from_ms, "to": to_ms, "purgeOld": purge_old}
        return self.request(
            "POST",
            f"{OPS_API}/contact-centers/{contact_center_id}/{kind}",
            json_body=body,
            what=what or f"forceIndex of {kind} for contact center {contact_center_id} [{from_ms}, {to_ms})",
            policy=policy,
        )

    def genesys_environment_ids(self) -> list[str]:
        answer = self.request("GET", f"{OPS_API}/genesys-environments", what="listing genesys environments")
        paths = answer.body.get("paths") or answer.body.get("uris") or []
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in paths]

    def genesys_environment(self, environment_id: str, *, policy: RetryPolicy = IDEMPOTENT) -> RwsAnswer:
        return self.request(
            "GET",
            f"{OPS_API}/genesys-environments/{environment_id}",
            what=f"reading genesys environment {environment_id}",
            policy=policy,
        )

    def multimedia_switch(self, environment_id: str, eservices_site: str) -> RwsAnswer:
        """POST multimedia-switch: sent at most once unless it provably never reached RWS."""
        return self.request(
            "POST",
            f"{OPS_API}/genesys-environments/{environment_id}/multimedia-switch",
            json_body={"eServicesSite": eservices_site},
            what=f"multimedia-switch of environment {environment_id} to eServices site {eservices_site}",
            policy=SEND_AT_MOST_ONCE,
        )
