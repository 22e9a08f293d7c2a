"""A small client of Airflow's own public REST API, for what a task cannot ask any other way.

Task code in Airflow 3 may not use the ORM, and the Execution API a task talks to has no pool lookup (nor
a lookup of another task's Human-in-the-loop answer), so a task that needs those asks the public REST API
like any other client, with a JWT from ``POST /auth/token`` (SimpleAuthManager and FAB both serve it):
``check_pools`` (``GET /api/v2/pools/{name}``) and the failover's steps (a DAG run, a HITL detail, and
one write: the catch-up re-index run after a switch-back, with a run id of its own choosing).

Built on the HTTP provider's ``HttpHook``, as the RWS client is: the API server's base URL and a service
user come from the Airflow connection ``gir_airflow_api``, never from code. The user reads pools, DAG runs
and HITL details, and triggers that one run (SimpleAuthManager role ``user``, FAB role ``User``: the least
that may create a DAG run; nothing that authorizes a switch rests on what such a user can write). The password
goes out once, in the token request body; neither it nor the token is ever logged, returned or put in an
error message.

Every error says whether a retry can help (``retryable``): an API server that is down or answers 5xx may
come back; a missing connection, refused credentials or a wrong URL will not.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from include.gir_ops.shared import AIRFLOW_API_PASSWORD_ENV

if TYPE_CHECKING:
    import requests

# ``requests`` and the hook are imported when a call is made: ``include.gir_ops.pools`` (parsed with every
# DAG file) names this module only inside its task.

log = logging.getLogger(__name__)

AIRFLOW_API_CONN_ID = "gir_airflow_api"
# The service user the project's stacks create for the pool check and the failover's reads, and the least
# privileged role in each auth manager that may read pools, runs and HITL answers AND trigger a DAG run
# (the failover's one catch-up re-index run after a switch-back). It is never an approver: an answer to
# a HITL request needs a user the request names (failover.approvers).
SERVICE_USER = "gir_pools_reader"
SIMPLE_AUTH_MANAGER_ROLE = "user"
FAB_ROLE = "User"
TOKEN_PATH = "/auth/token"  # noqa: S105 - a URL path, not a token
POOLS_PATH = "/api/v2/pools"


def connection_help(conn_id: str = AIRFLOW_API_CONN_ID) -> str:
    """How to create the connection, for every error that means it is missing or wrong."""
    example = (
        '{"conn_type": "http", "host": "<API server host>", "port": 8080, "schema": "http", '
        f'"login": "{SERVICE_USER}", "password": "<password>"}}'
    )
    return (
        f"create the HTTP connection {conn_id!r} to the Airflow API server (the base URL the UI is served "
        "from) with a user that may read pools, DAG runs and their approvals (SimpleAuthManager role "
        f"{SIMPLE_AUTH_MANAGER_ROLE}, FAB role {FAB_ROLE}): "
        f"`{AIRFLOW_API_PASSWORD_ENV}=<password> python -m include.gir_ops.bootstrap "
        f"airflow-api --url http://<API server host>:8080 --login {SERVICE_USER}`, or `airflow connections "
        f"add {conn_id} --conn-json '{example}'`, or AIRFLOW_CONN_{conn_id.upper()} in the environment "
        "(docs/deployment.md, section Connections)"
    )


class AirflowApiError(Exception):
    """The Airflow REST API could not answer the question. ``retryable``: can asking again help?"""

    def __init__(self, message: str, *, retryable: bool = False, http_status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.http_status = http_status


class AirflowApiConnectionError(AirflowApiError):
    """The connection ``gir_airflow_api`` is missing or unusable: fixed by an operator, never by a retry."""


class AirflowApiAuthError(AirflowApiError):
    """The API server refused the service user (HTTP 401/403)."""


class AirflowApiUnreachable(AirflowApiError):
    """No HTTP answer at all (connection refused, DNS, timeout): the API server may come back."""


class AirflowApiClient:
    """Reads from Airflow's public REST API as the user of the HTTP connection ``conn_id``."""

    def __init__(
        self, conn_id: str = AIRFLOW_API_CONN_ID, *, timeout: tuple[float, float] = (5.0, 30.0)
    ) -> None:
        self.conn_id = conn_id
        self._timeout = timeout
        self._hook: Any = None
        self._session: requests.Session | None = None
        self._login = ""
        self._base_url = ""

    # --- plumbing ------------------------------------------------------------------------------------

    def _connect(self) -> tuple[Any, requests.Session]:
        """One hook, one session and one token per client; the password is read here and not kept."""
        if self._session is not None:
            return self._hook, self._session
        from airflow.providers.http.hooks.http import HttpHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        hook = HttpHook(method="GET", http_conn_id=self.conn_id)
        try:
            connection = hook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            raise AirflowApiConnectionError(
                f"the Airflow connection {self.conn_id!r} does not exist; {connection_help(self.conn_id)}"
            ) from None
        empty = [name for name in ("host", "login", "password") if not getattr(connection, name, None)]
        if empty:
            raise AirflowApiConnectionError(
                f"the Airflow connection {self.conn_id!r} has no {', '.join(empty)}; "
                f"{connection_help(self.conn_id)}"
            )
        try:
            session = hook.get_conn(headers={"Accept": "application/json"})
        except ValueError as exc:  # e.g. "Invalid base URL: Missing scheme"
            raise AirflowApiConnectionError(
                f"the Airflow connection {self.conn_id!r} does not make a URL ({exc}); "
                f"{connection_help(self.conn_id)}"
            ) from None
        # HttpHook would send the login and password as basic auth with every request; the REST API wants
        # a bearer token, and the password should travel once, in the token request.
        session.auth = None
        self._hook, self._login, self._base_url = hook, str(connection.login), hook.base_url
        token = self._fetch_token(hook, session, str(connection.password))
        session.headers["Authorization"] = f"Bearer {token}"
        self._session = session
        return hook, session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> AirflowApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(
        self,
        hook: Any,
        session: requests.Session,
        method: str,
        path: str,
        *,
        what: str,
        json_body: dict[str, Any] | None = None,
    ) -> requests.Response:
        import requests as requests_module
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import Timeout

        url = hook.url_from_endpoint(path)
        prepared = session.prepare_request(requests_module.Request(method, url, json=json_body))
        timeout = hook.merged_extra.get("timeout", self._timeout)
        try:
            response = hook.run_and_check(session, prepared, {"check_response": False, "timeout": timeout})
        except Timeout as exc:
            raise AirflowApiUnreachable(
                f"the Airflow API at {self._base_url} did not answer {what} in time ({type(exc).__name__}); "
                f"check that the API server of connection {self.conn_id!r} is up",
                retryable=True,
            ) from None
        except RequestsConnectionError:
            raise AirflowApiUnreachable(
                f"the Airflow API at {self._base_url} could not be reached for {what} (connection refused, "
                f"dropped or host unknown); check the host and port of connection {self.conn_id!r} and that "
                "the API server is up",
                retryable=True,
            ) from None
        log.info("Airflow API %s %s -> HTTP %s", method, path, response.status_code)
        return response

    def _fetch_token(self, hook: Any, session: requests.Session, password: str) -> str:
        """POST /auth/token; the body carries the password, so nothing of it is logged or quoted."""
        response = self._send(
            hook,
            session,
            "POST",
            TOKEN_PATH,
            what=f"a token for user {self._login!r}",
            json_body={"username": self._login, "password": password},
        )
        status = response.status_code
        if status in (400, 401, 403):
            raise AirflowApiAuthError(
                f"the Airflow API at {self._base_url} refused the login {self._login!r} of connection "
                f"{self.conn_id!r} (HTTP {status} on POST {TOKEN_PATH}); check the connection's login and "
                "password: a user of the Airflow auth manager that may read pools, DAG runs and approvals "
                f"(SimpleAuthManager role {SIMPLE_AUTH_MANAGER_ROLE}, FAB role {FAB_ROLE})",
                http_status=status,
            )
        if status in (404, 405):
            raise AirflowApiConnectionError(
                f"{self._base_url} has no POST {TOKEN_PATH} (HTTP {status}): connection {self.conn_id!r} "
                "must point at the Airflow API server's base URL (where the UI is served, without /api/v2), "
                "and the auth manager must issue tokens there (SimpleAuthManager and FAB do)",
                http_status=status,
            )
        if status >= 500:
            raise AirflowApiError(
                f"the Airflow API at {self._base_url} failed to issue a token (HTTP {status})",
                retryable=True,
                http_status=status,
            )
        token = _json(response).get("access_token") if 200 <= status < 300 else None
        if not isinstance(token, str) or not token:
            raise AirflowApiConnectionError(
                f"{self._base_url} answered POST {TOKEN_PATH} with HTTP {status} and no access_token; is "
                f"connection {self.conn_id!r} pointing at the Airflow API server?",
                http_status=status,
            )
        _mask(token)
        return token

    # --- questions -----------------------------------------------------------------------------------

    def get(self, path: str, *, what: str, reads: str) -> dict[str, Any] | None:
        """GET a public API path: its JSON body, or None on Airflow's own 404 (the object does not exist).

        ``what`` names the object in errors; ``reads`` names the permission a 403 lacks ("pools", "DAG
        runs"). Path segments must be URL-quoted by the caller (run ids may contain "+" or ":").
        """
        hook, session = self._connect()
        response = self._send(hook, session, "GET", path, what=what)
        status = response.status_code
        if status == 200:
            body = _json(response)
            if not body:
                raise AirflowApiConnectionError(
                    f"{self._base_url}{path} answered HTTP 200 without a JSON object: is connection "
                    f"{self.conn_id!r} pointing at the Airflow API server?",
                    http_status=status,
                )
            return body
        if status == 404:
            # Airflow's 404 is JSON with a "detail"; any other 404 means the URL does not reach Airflow.
            if "detail" in _json(response):
                return None
            raise AirflowApiConnectionError(
                f"{self._base_url}{path} answered HTTP 404 without Airflow's error body: connection "
                f"{self.conn_id!r} does not point at the Airflow API server's base URL",
                http_status=status,
            )
        if status == 401:
            raise AirflowApiAuthError(
                f"the Airflow API at {self._base_url} refused the token it just issued to {self._login!r} "
                f"(HTTP 401 on GET {what}); do all API server instances share one [api_auth] jwt_secret?",
                http_status=status,
            )
        if status == 403:
            raise AirflowApiAuthError(
                f"user {self._login!r} of connection {self.conn_id!r} may not read {reads} (HTTP 403); give "
                f"it read access (SimpleAuthManager role {SIMPLE_AUTH_MANAGER_ROLE}, FAB role {FAB_ROLE})",
                http_status=status,
            )
        raise AirflowApiError(
            f"the Airflow API at {self._base_url} answered HTTP {status} to GET {what}",
            retryable=status >= 500,
            http_status=status,
        )

    def pool_exists(self, name: str) -> bool:
        """GET /api/v2/pools/{name}: True on 200, False on Airflow's own 404 for that pool."""
        path = f"{POOLS_PATH}/{quote(name, safe='')}"
        return self.get(path, what=f"pool {name!r}", reads="pools") is not None

    def missing_pools(self, names: list[str]) -> list[str]:
        """The names (in the given order) of the pools that do not exist."""
        return [name for name in names if not self.pool_exists(name)]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """GET /api/v2/dags/{dag_id}/dagRuns/{run_id} (a run that does not exist is an error)."""
        body = self.get(_run_path(dag_id, run_id), what=f"DAG run {dag_id} {run_id}", reads="DAG runs")
        if body is None:
            raise AirflowApiError(f"the Airflow API has no DAG run {run_id!r} of {dag_id!r}", http_status=404)
        return body

    def hitl_detail(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, Any] | None:
        """GET .../taskInstances/{task_id}/{map_index}/hitlDetails: the Human-in-the-loop request and its
        answer as Airflow recorded them, or None when that task instance has none."""
        path = f"{_run_path(dag_id, run_id)}/taskInstances/{quote(task_id, safe='')}/{map_index}/hitlDetails"
        return self.get(path, what=f"the approval of {task_id} in {dag_id} {run_id}", reads="DAG runs")

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """GET /api/v2/dags/{dag_id} (``is_paused`` and the rest), or None when there is no such DAG."""
        return self.get(f"/api/v2/dags/{quote(dag_id, safe='')}", what=f"DAG {dag_id}", reads="DAGs")

    def trigger_dag_run(
        self, dag_id: str, run_id: str, conf: dict[str, Any], *, note: str | None = None
    ) -> tuple[bool, dict[str, Any]]:
        """POST /api/v2/dags/{dag_id}/dagRuns with a run_id chosen by the caller: exactly one run per id.

        Returns (True, the new run) when it was created, (False, the existing run) when Airflow answers 409
        because a run with this id exists already (a retry, or a cleared task that runs again). The one
        call of this client that writes: its user needs permission to trigger DAG runs (SimpleAuthManager
        role user, FAB role User).
        """
        hook, session = self._connect()
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns"
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        if note:
            body["note"] = note
        what = f"a run {run_id!r} of {dag_id}"
        response = self._send(hook, session, "POST", path, what=what, json_body=body)
        status = response.status_code
        if status in (200, 201):
            return True, _json(response)
        if status == 409:
            return False, self.dag_run(dag_id, run_id)
        if status == 404:
            raise AirflowApiError(
                f"the Airflow API has no DAG {dag_id!r} to trigger (HTTP 404): is its DAG file deployed and "
                "parsed, and its topology section enabled?",
                http_status=status,
            )
        if status in (401, 403):
            raise AirflowApiAuthError(
                f"user {self._login!r} of connection {self.conn_id!r} may not trigger {dag_id} "
                f"(HTTP {status}); give it SimpleAuthManager role {SIMPLE_AUTH_MANAGER_ROLE} or FAB role "
                f"{FAB_ROLE}",
                http_status=status,
            )
        detail = _json(response).get("detail")
        raise AirflowApiError(
            f"the Airflow API answered HTTP {status} to triggering {what}"
            + (f": {str(detail)[:500]}" if detail else ""),
            retryable=status >= 500,
            http_status=status,
        )


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _mask(secret: str) -> None:
    """Have Airflow's secrets masker redact the token from task logs, should anything ever print it."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - the Task SDK is part of every supported Airflow
        return
    mask_secret(secret)
