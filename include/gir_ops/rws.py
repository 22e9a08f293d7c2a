"""The one client every DAG uses to talk to a DC's Interaction Recording Web Services (RWS) ops API.

Built on the HTTP provider's ``HttpHook``, so the base URL and the ops user come from an Airflow
connection and never from code. Every answer is checked twice: the HTTP status and the body's
``statusCode`` (GWS return values; a non-zero code means the request changed nothing). Errors name the
code's meaning, the DC and what was being done, so an on-call engineer can act on the message alone.

Retries are decided here, per call, because only the caller knows whether a request is safe to send
again: a ``forceIndex`` can be repeated, a ``multimedia-switch`` only when it never left this machine.
HTTP 429 (throttled, not processed) is retried like a 5xx, waiting what ``Retry-After`` asks (seconds
or HTTP-date, at most ``MAX_RETRY_AFTER_SECONDS``). IDs that go into a URL path are validated first
(``validate_contact_center_id``, ``validate_environment_id``): an ID RWS returns is input like any other.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.gir_ops.params import is_contact_center_id
from include.gir_ops.shared import CONTACT_CENTER_ID_FORMS, ENVIRONMENT_ID_PATTERN, OPS_API
from include.gir_ops.topology import REINDEX_KINDS

if TYPE_CHECKING:
    import requests

# ``requests`` is imported where a call is made, not here: the failover DAG file imports this module
# (through ``failover``) while the dag-processor parses it, and that import alone would double its parse time.

log = logging.getLogger(__name__)


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
# The longest wait a ``Retry-After`` (on an HTTP 429 or 503) may impose between two attempts. RWS asking
# for longer is waited this long, then asked again; once the attempts are spent, Airflow's task retry
# (minutes later) takes over. Keeps one call from sleeping in a worker slot for an hour on a header.
MAX_RETRY_AFTER_SECONDS = 60.0
JSON_CONTENT_TYPE = "application/json"
# Where GET .../genesys-environments/{id} carries the site when the topology names no path
# (failover.site_field): the guide shows no body for it; GWS nests a single resource under its name.
ESERVICES_SITE_KEY = "eServicesSite"
# A genesys-environment ID as RWS lists it (a UUID in the deployments seen): one URL path segment of
# letters, digits, '-' and '_'. No '.', so neither '..' nor anything that is not a plain segment.
_ENVIRONMENT_ID = re.compile(ENVIRONMENT_ID_PATTERN)


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
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.site = site
        self.http_status = http_status
        self.status_code = status_code
        self.retryable = retryable
        self.request_sent = request_sent
        # Seconds RWS asked us to wait (Retry-After), already capped at MAX_RETRY_AFTER_SECONDS.
        self.retry_after = retry_after
        self.history: list[dict[str, Any]] = []


class RwsAuthError(RwsError):
    """The ops credentials in the Airflow connection were refused (HTTP 401/403, statusCode 20)."""


class RwsPartialSuccess(RwsError):
    """statusCode 7: part of the operation was applied. Never treated as success."""


class RwsUnreachable(RwsError):
    """No HTTP answer at all: connection refused, dropped, or timed out."""


class RwsThrottled(RwsError):
    """HTTP 429 Too Many Requests: RWS (or a proxy before it) did not process the request. Retryable."""


class RwsInvalidId(RwsError, ValueError):
    """An ID that would go into a URL path is not a plain ID ('..', '/', '%2F', whitespace, ...).

    Raised before anything is sent; never retryable. A ``ValueError`` too, for callers outside RWS code.
    """


def _show_id(value: object) -> str:
    """An ID for a message: repr (control characters escaped), cut short so a huge value cannot flood."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# What makes an ID unsafe in a URL path, checked in this order; the first match names the problem.
_ID_PROBLEMS: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda value: not value, "it is empty"),
    (
        lambda value: any(ord(char) < 32 or 127 <= ord(char) < 160 for char in value),
        "it contains a control character",
    ),
    (lambda value: any(char.isspace() for char in value), "it contains whitespace"),
    (lambda value: "/" in value or "\\" in value, "it contains a path separator ('/' or '\\')"),
    (lambda value: ".." in value, "it contains '..'"),
    (lambda value: "%" in value, "it contains a percent-encoded character (such as %2F)"),
)


def _id_problem(value: object, *, allowed: str) -> str:
    """Why ``value`` is not a safe ID, in words an operator can act on."""
    if not isinstance(value, str):
        return f"it is a {type(value).__name__}, not text"
    return next((problem for check, problem in _ID_PROBLEMS if check(value)), f"it is not {allowed}")


def validate_contact_center_id(value: object, *, site: str, source: str) -> str:
    """A contact center ID from ``source`` (e.g. RWS's listing), lower-cased, or ``RwsInvalidId``.

    The same pattern as the topology and the trigger form (``shared.CONTACT_CENTER_ID_PATTERN``): a dashed
    UUID, as real RWS answers, or plain hex, as the guide writes it.
    """
    if is_contact_center_id(value):
        return str(value).lower()
    problem = _id_problem(value, allowed=CONTACT_CENTER_ID_FORMS)
    raise RwsInvalidId(
        f"contact center ID {_show_id(value)} from {source} is refused: {problem}; a contact center ID "
        f"is {CONTACT_CENTER_ID_FORMS}, and it goes into a URL path, so nothing else is sent. Check what "
        f"GET /api/v2/ops/contact-centers returns on RWS {site} (is the connection pointing at RWS?), or "
        "list the IDs in the topology's rws.contact_centers",
        site=site,
        request_sent=False,
    )


def validate_environment_id(value: object, *, site: str = "?", source: str | None = None) -> str:
    """A genesys-environment ID safe to put in a URL path, unchanged, or ``RwsInvalidId``.

    For every ID that comes from RWS (``GET /api/v2/ops/genesys-environments``) before it is used in
    ``.../genesys-environments/<id>`` or ``.../<id>/multimedia-switch``.
    """
    if isinstance(value, str) and _ENVIRONMENT_ID.fullmatch(value):
        return value
    problem = _id_problem(value, allowed="1-128 letters, digits, '-' or '_' starting with a letter or digit")
    origin = source or f"RWS {site}"
    raise RwsInvalidId(
        f"genesys-environment ID {_show_id(value)} from {origin} is refused: {problem}; an environment "
        "ID is 1-128 letters, digits, '-' or '_' and goes into a URL path, so nothing is sent with it. "
        f"Check what GET /api/v2/ops/genesys-environments returns on RWS {site} (is the connection "
        "pointing at RWS?)",
        site=site,
        request_sent=False,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date), capped.

    None when the header is absent or unreadable (the policy's backoff applies then). A date in the
    past means 0; anything longer than ``MAX_RETRY_AFTER_SECONDS`` is cut to it.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = float(int(text)) if len(text) <= 9 else MAX_RETRY_AFTER_SECONDS
    else:
        from email.utils import parsedate_to_datetime

        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # an HTTP-date is always GMT
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


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
# The reachability check before a run sends anything (``RwsClient.ensure_reachable``): about 15 s of
# patience for a blip, then one clear failure instead of every task's retries.
REACHABILITY_PROBE = RetryPolicy(attempts=3, initial_backoff_seconds=5.0)


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
                # A send-at-most-once call goes out again only when the failure proves it changed
                # nothing (see not_processed): never after a timeout, a dropped connection, a 5xx without
                # a GWS body, or statusCode 7 / 9 (partial success, processing incomplete).
                outcome_known = not_processed(exc)
                may_resend = exc.retryable and (outcome_known or policy.resend_after_unknown_outcome)
                if not may_resend or attempt == policy.attempts:
                    if exc.retryable and attempt > 1:
                        exc.args = (f"{exc.args[0]} (gave up after {attempt} attempts)",)
                    exc.history = history
                    raise
                # RWS's own Retry-After (capped) wins over the policy's backoff: it knows when it can cope.
                from_header = exc.retry_after is not None
                delay = exc.retry_after if exc.retry_after is not None else policy.backoff(attempt)
                log.warning(
                    "RWS %s: %s failed (attempt %d/%d): %s; retrying in %.1fs%s",
                    self.site,
                    what,
                    attempt,
                    policy.attempts,
                    exc,
                    delay,
                    " (as its Retry-After asked)" if from_header else "",
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
        # The guide's every POST sends this header, and RWS (a JSON web service) refuses a body without it
        # (HTTP 415): set it explicitly, whatever the session or the connection's extras say.
        headers = {"Content-Type": JSON_CONTENT_TYPE} if json_body is not None else None
        prepared = session.prepare_request(requests.Request(method, url, json=json_body, headers=headers))
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
        # Retry-After is honoured where HTTP defines it for a retry: 429 and 503.
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After")) if http_status in (429, 503) else None
        )
        if http_status == 429:
            # Too Many Requests: not processed (RFC 6585), whatever the body says, so it may be sent
            # again. Checked first: a throttling proxy in front of RWS answers without a GWS body.
            header = response.headers.get("Retry-After")
            waited = (
                f"Retry-After {header.strip()[:40]!r}, waiting {retry_after:g} s"
                if retry_after is not None
                else "no usable Retry-After, backing off"
            )
            raise RwsThrottled(
                f"RWS {self.site} is throttling requests and did not process {what} (HTTP 429 Too Many "
                f"Requests; {waited}, at most {MAX_RETRY_AFTER_SECONDS:g} s); if it persists, lower the "
                "pool's slots for this RWS or ask who else is calling it",
                site=self.site,
                http_status=http_status,
                status_code=status_code if isinstance(status_code, int) else None,
                retryable=True,
                retry_after=retry_after,
            )
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
                retry_after=retry_after,
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
            retry_after=retry_after,
        )

    # --- the ops API calls the guide describes -------------------------------------------------------

    def _listed_ids(self, answer: RwsAnswer, keys: tuple[str, str], what: str) -> list[str]:
        """The last path segment of each URI a listing returned (not yet validated)."""
        listed = answer.body.get(keys[0]) or answer.body.get(keys[1]) or []
        if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
            raise RwsError(
                f"RWS {self.site} answered {what} without a list of URIs in '{keys[0]}' or '{keys[1]}'; "
                "is the connection pointing at RWS?",
                site=self.site,
                http_status=answer.http_status,
            )
        return [item.rstrip("/").rsplit("/", 1)[-1] for item in listed]

    def ensure_reachable(self, *, role: str, policy: RetryPolicy | None = None) -> RwsAnswer:
        """GET /contact-centers before a run sends anything: is this DC's RWS there at all?

        A few patient attempts; when RWS never answers, ``RwsUnreachable`` that says "<role> unreachable",
        names the DC and what was tried, and is **not** retryable: a DC that is down (the primary during
        a failover) stays down for a while, and Airflow's retries of every task would only be a retry
        storm against it. The answer is returned, so a run that discovers its contact centers reuses it.
        """
        policy = policy or REACHABILITY_PROBE
        path = f"{OPS_API}/contact-centers"
        try:
            return self.request(
                "GET", path, what="the reachability check before sending anything", policy=policy
            )
        except RwsUnreachable as exc:
            raise RwsUnreachable(
                f"{role} unreachable: RWS {self.site} did not answer GET {path} through connection "
                f"{self.conn_id!r} ({policy.attempts} attempt(s)): {exc}. Nothing was sent. During a "
                f"failover away from {self.site} this is expected and not retried; once RWS {self.site} "
                "answers again, clear this task (or trigger the run again): it re-indexes the same windows",
                site=self.site,
                retryable=False,
                request_sent=False,
            ) from None

    def contact_center_ids(self, answer: RwsAnswer | None = None) -> list[str]:
        """GET /contact-centers (or ``answer``, an earlier one): the IDs (dashed UUID or hex) are the last
        segment of each returned URI.

        Each is validated before anyone puts it into a URL path (``RwsInvalidId`` otherwise).
        """
        answer = answer or self.request("GET", f"{OPS_API}/contact-centers", what="listing contact centers")
        source = f"RWS {self.site} (GET {OPS_API}/contact-centers)"
        return [
            validate_contact_center_id(segment, site=self.site, source=source)
            for segment in self._listed_ids(answer, ("uris", "paths"), "listing contact centers")
        ]

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
        contact_center_id = validate_contact_center_id(
            contact_center_id, site=self.site, source="the forceIndex request"
        )
        body = {"operationName": "forceIndex", "from": from_ms, "to": to_ms, "purgeOld": purge_old}
        return self.request(
            "POST",
            f"{OPS_API}/contact-centers/{contact_center_id}/{kind}",
            json_body=body,
            what=what or f"forceIndex of {kind} for contact center {contact_center_id} [{from_ms}, {to_ms})",
            policy=policy,
        )

    def genesys_environments(self, *, policy: RetryPolicy = IDEMPOTENT) -> tuple[RwsAnswer, list[str]]:
        """GET /genesys-environments: the answer, and each listed ID validated (``validate_environment_id``)
        before anything puts it into a URL path."""
        answer = self.request(
            "GET", f"{OPS_API}/genesys-environments", what="listing genesys environments", policy=policy
        )
        source = f"RWS {self.site} (GET {OPS_API}/genesys-environments)"
        ids = [
            validate_environment_id(segment, site=self.site, source=source)
            for segment in self._listed_ids(answer, ("paths", "uris"), "listing genesys environments")
        ]
        return answer, ids

    def genesys_environment(self, environment_id: str, *, policy: RetryPolicy = IDEMPOTENT) -> RwsAnswer:
        environment_id = validate_environment_id(environment_id, site=self.site)
        return self.request(
            "GET",
            f"{OPS_API}/genesys-environments/{environment_id}",
            what=f"reading genesys environment {environment_id}",
            policy=policy,
        )

    def multimedia_switch(self, environment_id: str, eservices_site: str) -> RwsAnswer:
        """POST multimedia-switch: sent at most once unless it provably changed nothing (not_processed)."""
        environment_id = validate_environment_id(environment_id, site=self.site)
        return self.request(
            "POST",
            f"{OPS_API}/genesys-environments/{environment_id}/multimedia-switch",
            json_body={"eServicesSite": eservices_site},
            what=f"multimedia-switch of environment {environment_id} to eServices site {eservices_site}",
            policy=SEND_AT_MOST_ONCE,
        )


def eservices_site_of(body: object, site_field: str | None = None) -> str | None:
    """The eServices site a ``GET .../genesys-environments/{id}`` answer reports, or None.

    The guide documents no read-back of ``eServicesSite``. With ``site_field`` (the topology's
    ``failover.site_field``, dotted, e.g. ``genesysEnvironment.eServicesSite``) only that path counts.
    Without it: ``eServicesSite`` at the top level, else inside the single nested resource object (GWS
    answers ``{"statusCode": 0, "genesysEnvironment": {...}}``). Anything that is not a non-empty string
    there is "not reported": never guessed.
    """
    if not isinstance(body, dict):
        return None
    if site_field:
        node: object = body
        for part in site_field.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node if isinstance(node, str) and node.strip() else None
    value = body.get(ESERVICES_SITE_KEY)
    if value is None:
        nested = [v for k, v in body.items() if isinstance(v, dict) and k not in ("statusCode",)]
        if len(nested) == 1:
            value = nested[0].get(ESERVICES_SITE_KEY)
    return value if isinstance(value, str) and value.strip() else None


# statusCodes that say RWS did part of the work, or had not finished it: whatever the HTTP status, a
# call that answered with one of them may have changed something.
MAY_HAVE_APPLIED_STATUS_CODES = frozenset({7, 9})
# HTTP statuses that by definition mean the server did not process the request (RFC 6585 §4, RFC 9110
# §15.6.4): a send-at-most-once call may go out again after them.
NOT_PROCESSED_HTTP_STATUSES = frozenset({429, 503})


def not_processed(exc: RwsError) -> bool:
    """True only when the failed call provably changed nothing, so sending it again cannot repeat it.

    That is: the request never left this machine; or the server said it did not process it (HTTP 429 or
    503); or RWS answered with a GWS error statusCode other than 7 (partial success) and 9 (processing
    incomplete). A timeout, a dropped connection, a 5xx without a GWS body, or statusCode 7/9 prove
    nothing: the call may have been applied.
    """
    if exc.request_sent is False or exc.http_status in NOT_PROCESSED_HTTP_STATUSES:
        return True
    return exc.status_code not in (None, 0) and exc.status_code not in MAY_HAVE_APPLIED_STATUS_CODES
