"""Airflow's API app served in-process, for ``dag.test()`` runs whose ``check_pools`` asks the REST API.

``dag.test()`` runs tasks in the calling process, and a task's ``check_pools`` reads pools through the
public REST API (connection ``gir_airflow_api``). This serves ``create_app(apps="core")`` (core API and
SimpleAuthManager, on the process's metadata DB) with uvicorn on a free loopback port, in a daemon thread.
Used by ``tests/conftest.py`` (one server per test process) and ``benchmarks/reindex_overhead.py``.

Import it only after AIRFLOW_HOME and the DB URL are set: it imports Airflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AirflowApiServer:
    """The in-process API server and the service user ``check_pools`` reads pools as."""

    url: str
    port: int
    login: str
    password: str

    def connection_json(self) -> str:
        """AIRFLOW_CONN_GIR_AIRFLOW_API in JSON form, as an operator would write it."""
        return json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": self.port,
                "schema": "http",
                "login": self.login,
                "password": self.password,
            }
        )


@contextlib.contextmanager
def serve_airflow_api(startup_timeout: float = 60.0) -> Iterator[AirflowApiServer]:
    """Serve the API until the block ends; the service user (role user) added to SimpleAuthManager.

    Its password is the one already in SimpleAuthManager's passwords file (processes sharing one
    AIRFLOW_HOME, e.g. a benchmark child of a test session, then agree), or a new one written there
    before the app starts.
    """
    import uvicorn
    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.configuration import conf

    from include.gir_ops.airflow_api import SERVICE_USER, SIMPLE_AUTH_MANAGER_ROLE
    from include.gir_ops.bootstrap import ensure_simple_auth_password

    users_var = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"
    previous_users = os.environ.get(users_var)
    users = [u for u in conf.get("core", "simple_auth_manager_users").split(",") if u.strip()]
    if not any(u.split(":")[0] == SERVICE_USER for u in users):
        os.environ[users_var] = ",".join([*users, f"{SERVICE_USER}:{SIMPLE_AUTH_MANAGER_ROLE}"])
    passwords_file = Path(SimpleAuthManager.get_generated_password_file())
    try:
        known = json.loads(passwords_file.read_text(encoding="utf-8")).get(SERVICE_USER)
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        known = None
    password = known if isinstance(known, str) and known else secrets.token_urlsafe(16)
    ensure_simple_auth_password(passwords_file, SERVICE_USER, password)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(apps="core"), log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="airflow-api-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process Airflow API server did not start (see the log)")
            time.sleep(0.05)
        yield AirflowApiServer(f"http://127.0.0.1:{port}", port, SERVICE_USER, password)
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()
        if previous_users is None:
            os.environ.pop(users_var, None)
        else:
            os.environ[users_var] = previous_users
