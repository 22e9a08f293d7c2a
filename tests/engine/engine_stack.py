"""The real Airflow engine for the engine tests: Celery executor on PostgreSQL and Redis, plus the simulator.

``EngineStack.start()`` creates a throw-away PostgreSQL database and uses one Redis db index as the Celery
broker, writes a fast test topology and demo data, migrates the database, creates the pools with
``include.gir_ops.bootstrap``, and starts the GIR simulator, ``airflow api-server``, ``scheduler``,
``dag-processor``, ``triggerer`` and ``celery worker`` as subprocesses, each in its own process group with
its log in a file. ``stop()`` always leaves nothing behind: every process group is terminated then killed,
any process that still carries this session's marker in its environment is killed, the database is
dropped and the Redis db index flushed. ``AirflowApi`` is the small REST client the tests use.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from include.gir_ops.airflow_api import AIRFLOW_API_CONN_ID, SERVICE_USER, SIMPLE_AUTH_MANAGER_ROLE
from include.gir_sim.notify_receiver import NotificationReceiver
from include.gir_sim.processes import Child, StopStep, start_child, tail
from tests.conftest import deep_merge, default_topology_dict

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = int(os.environ.get("GIR_ENGINE_REDIS_DB", "7"))
# How the machine's own services are (re)started (see the machine notes): "the same command starts one
# that has stopped".
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
SESSION_MARKER_ENV = "GIR_ENGINE_SESSION"
# name:role for SimpleAuthManager. admin triggers, approver approves; oncall (role user) may trigger and
# answer HITL in general but is not an assigned approver of the failover.
UI_USERS = {"admin": "admin", "approver": "admin", "oncall": "user"}
# The DAGs' check_pools reads pools through the REST API as this read-only user (connection
# gir_airflow_api); `bootstrap airflow-api-user` gives it its password before the API server starts.
API_USERS = {**UI_USERS, SERVICE_USER: SIMPLE_AUTH_MANAGER_ROLE}
SIMPLE_AUTH_MANAGER_USERS = ",".join(f"{user}:{role}" for user, role in API_USERS.items())
EXPECTED_DAG_IDS = (
    "gir_doctor",
    "gir_es_reindex_dc1",  # the primary: never scheduled, backfill and manual runs (reindex.enabled false)
    "gir_es_reindex_dc2",
    "gir_es_reindex_dc3",
    "gir_eservices_failover",
    "gir_rcs_keystore_check",
    "gir_rcs_keystore_replicate",
    "gir_speechminer_backup_ship",
)
TERMINAL_RUN_STATES = ("success", "failed")
# The retry_delay cap applied to every task by the test's cluster policy (see _write_local_settings).
RETRY_DELAY_CAP_SECONDS = 3


class EngineError(RuntimeError):
    """The engine could not be started or stopped cleanly; the message says why and where to look."""


# --- small helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def wait_for(
    description: str,
    check: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 1.0,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError naming what never happened."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
            last_error = None
        except (requests.RequestException, OSError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"{description}: not reached within {timeout:.0f}s{detail}{extra}")
        time.sleep(interval)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the test topology ---------------------------------------------------------------------------------

# Fast settings on top of the default topology. Everything else (sites, contact centers, time zones,
# re-index schedules, pools) is the shipped default, so the engine runs the DAGs as they are deployed.
TOPOLOGY_OVERRIDES: dict[str, Any] = {
    "shipping": {
        # No scheduled shipping run can fall inside a test run: the next tick after the DAG's start_date is
        # 2028-02-29 and its interval only ends in 2032. Shipping runs are triggered by the tests.
        "schedule": "0 0 29 2 *",
        "poll_seconds": 2,
        # The engine's shipping tests write and wait for this marker (the topology's default is none).
        "ready_marker": "_BACKUP_COMPLETE",
        "quiet_minutes": 0.05,
        "wait_timeout_minutes": 10,
    },
    "failover": {
        # admin is an approver too, so the HITL API accepts admin's answer on admin's own run and the
        # DAG's two-person rule is what must refuse it.
        "approvers": [
            {"id": "approver", "name": "On-call approver"},
            {"id": "admin", "name": "Admin"},
        ],
        "response_timeout_minutes": 10,
        "confirm_timeout_minutes": 10,
        "dr_monitoring_delay_seconds": 2,
        "verify_margin_seconds": 20,
    },
    "keystore_replication": {
        # As for the failover: admin may answer, so the DAG's two-person rule is what refuses a self-approval.
        "approvers": [
            {"id": "approver", "name": "On-call approver"},
            {"id": "admin", "name": "Admin"},
        ],
        "response_timeout_minutes": 10,
    },
}


# --- child processes ---------------------------------------------------------------------------------


@dataclass
class EngineStack:
    """One engine session: its own database, Redis db index, AIRFLOW_HOME, ports and processes."""

    base: Path
    session_id: str = field(default_factory=lambda: secrets.token_hex(4))
    children: dict[str, Child] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    stopped: bool = False
    database_created: bool = False

    def __post_init__(self) -> None:
        self.database = f"gir_ops_engine_{self.session_id}"
        self.airflow_home = self.base / "airflow"
        self.logs = self.base / "logs"
        self.data_dir = self.base / "gir-data"
        self.topology_path = self.base / "topology.yaml"
        self.policy_dir = self.base / "policy"
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.ops_password = secrets.token_urlsafe(16)
        self.keystore_password = secrets.token_urlsafe(16)
        self.airflow_api_password = secrets.token_urlsafe(16)
        self.worker_name = f"gir-engine-{self.session_id}@{socket.gethostname()}"
        self.broker_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
        self.db_url = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}"
        self.topology_document: dict[str, Any] = {}
        self.sim_ports: dict[str, int] = {}
        self._celery: Any = None
        # The on-call's channel: connection gir_apprise (json://127.0.0.1:<port>) posts here.
        self.notifications = NotificationReceiver(out=self.base / "notifications.jsonl")

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        for path in (self.airflow_home, self.logs, self.data_dir, self.policy_dir):
            path.mkdir(parents=True, exist_ok=True)
        ensure_services()
        self._create_database()
        self._flush_redis()
        self._write_topology()
        self._write_local_settings()
        self._generate_demo_data()
        self.notifications.start()
        self.env = self._build_env()
        airflow = str(VENV_BIN / "airflow")
        self.run_step("db-migrate", [airflow, "db", "migrate"], timeout=300)
        self.run_step(
            "bootstrap-pools",
            [
                sys.executable,
                "-m",
                "include.gir_ops.bootstrap",
                "--topology",
                str(self.topology_path),
                "pools",
            ],
            timeout=120,
        )
        self.run_step(
            "bootstrap-airflow-api-user",
            [sys.executable, "-m", "include.gir_ops.bootstrap", "airflow-api-user"],
            timeout=120,
        )
        self._start_simulator()
        self.spawn("api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)])
        self.spawn("scheduler", [airflow, "scheduler", "--skip-serve-logs"])
        self.spawn("dag-processor", [airflow, "dag-processor"])
        self.spawn("triggerer", [airflow, "triggerer", "--skip-serve-logs"])
        self.start_worker()
        self.wait_healthy(timeout=240)
        self.wait_worker_ready(timeout=120)
        self.wait_dags_parsed(timeout=180)

    def stop(self) -> list[str]:
        """Stop everything this session started; returns what went wrong on the way (empty when clean).

        Every step runs even when an earlier one fails, and a second call (the atexit safety net after an
        interrupted teardown) repeats whatever is still needed.
        """
        if self.stopped:
            return []
        problems: list[str] = []
        for step in (self._stop_children, self._kill_marked_processes):
            try:
                problems += step()
            except Exception as exc:
                problems.append(f"{step.__name__} failed: {exc!r}")
        for cleanup in (self._save_logs, self._drop_database, self._flush_redis, self.notifications.stop):
            try:
                cleanup()
            except Exception as exc:
                problems.append(f"{cleanup.__name__} failed: {exc!r}")
        self.stopped = True
        return problems

    def _stop_children(self) -> list[str]:
        """SIGTERM every process group at once, give them 20 s together, then SIGKILL what is left."""
        problems = []
        for child in self.children.values():
            child.signal_group(signal.SIGTERM)
        for child in list(self.children.values()):
            child.stop_plan = (StopStep(signal.SIGTERM, 20.0),)
            if not child.stop():
                problems.append(f"{child.name}: process group still alive 20 s after SIGTERM; SIGKILLed")
            del self.children[child.name]
        return problems

    # --- processes ------------------------------------------------------------------------------------

    def spawn(self, name: str, command: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        child = start_child(
            name, command, env=env or self.env, cwd=REPO_ROOT, log_path=self.logs / f"{name}.log"
        )
        self.children[name] = child
        return child

    def run_step(self, name: str, command: Sequence[str], *, timeout: float) -> None:
        child = self.spawn(name, command)
        try:
            code = child.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EngineError(f"{name} did not finish in {timeout:.0f}s:\n{tail(child.log_path)}") from None
        finally:
            child.stop_plan = ()  # straight to SIGKILL: helpers it may have left in its group
            child.stop()
            del self.children[name]
        if code != 0:
            raise EngineError(f"{name} failed (exit {code}):\n{tail(child.log_path)}")

    def check_alive(self) -> None:
        dead = [c for c in self.children.values() if c.process.poll() is not None]
        if dead:
            raise EngineError(
                "\n".join(f"{c.name} exited (code {c.process.returncode}):\n{tail(c.log_path)}" for c in dead)
            )

    def start_worker(self) -> Child:
        return self.spawn(
            "celery-worker",
            [
                str(VENV_BIN / "airflow"),
                "celery",
                "worker",
                "--concurrency",
                "4",
                "--skip-serve-logs",
                "--celery-hostname",
                self.worker_name,
                "--pid",
                str(self.airflow_home / "airflow-worker.pid"),
            ],
        )

    def kill_worker(self) -> list[int]:
        """SIGKILL the Celery worker and every process under it, as when its machine dies.

        The task runner of a running task sits in a process group of its own (the task SDK's supervisor
        puts it there), so the worker's group alone would leave it copying on: kill the whole tree.
        """
        import psutil

        child = self.children.pop("celery-worker")
        try:
            tree = [psutil.Process(child.process.pid), *psutil.Process(child.process.pid).children(True)]
        except psutil.NoSuchProcess:
            tree = []
        child.signal_group(signal.SIGKILL)
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        _, alive = psutil.wait_procs(tree, timeout=10)
        child.process.wait(timeout=10)
        child.log_file.close()
        if alive:
            raise EngineError(f"worker processes survived SIGKILL: {[p.pid for p in alive]}")
        return [proc.pid for proc in tree]

    def _kill_marked_processes(self) -> list[str]:
        """Any process still carrying this session's marker (e.g. a task runner in its own group)."""
        import psutil

        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid", "name"]):
            if proc.pid == me:
                continue
            try:
                if proc.environ().get(SESSION_MARKER_ENV) == self.session_id:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        for proc in found:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        _, alive = psutil.wait_procs(found, timeout=10)
        problems = [f"leftover process {p.pid} ({p.info.get('name')}) killed" for p in found]
        if alive:
            problems.append(f"processes that survived SIGKILL: {[p.pid for p in alive]}")
        return problems

    def leftover_processes(self) -> list[str]:
        """Processes of this session still running (none after stop())."""
        import psutil

        left = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.pid != os.getpid() and proc.environ().get(SESSION_MARKER_ENV) == self.session_id:
                    left.append(f"{proc.pid} {' '.join(proc.info.get('cmdline') or [])[:120]}")
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return left

    def log_tails(self, lines: int = 40) -> str:
        names = sorted(p.stem for p in self.logs.glob("*.log"))
        return "\n".join(
            f"--- {name} (last {lines} lines)\n{tail(self.logs / f'{name}.log', lines)}" for name in names
        )

    def _save_logs(self) -> None:
        """Keep the component and task logs as test artifacts (git-ignored), whatever the outcome."""
        target = REPO_ROOT / "test-artifacts" / "engine-logs"
        with contextlib.suppress(OSError):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.logs, target / "components")
            task_logs = self.airflow_home / "logs"
            if task_logs.is_dir():
                shutil.copytree(task_logs, target / "tasks")

    # --- environment ----------------------------------------------------------------------------------

    def _build_env(self) -> dict[str, str]:
        dropped_prefixes = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "GIR_")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(dropped_prefixes)
            and k not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG", "PYTHONPATH")
        }
        fernet_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
        env.update(
            {
                SESSION_MARKER_ENV: self.session_id,
                "PATH": os.pathsep.join([str(VENV_BIN), env.get("PATH", os.defpath)]),
                # The policy dir holds airflow_local_settings.py (the test's retry_delay cap).
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(self.policy_dir)]),
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
                # As docker-compose.yaml and the Helm values: the workers preload the HTTP libraries.
                "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "include.gir_ops.celery_worker.CELERY_CONFIG",
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": fernet_key,
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,  # the links in notifications
                "AIRFLOW__API__WORKERS": "1",
                # Not on 8080: without this every task fails to reach the execution API before it starts.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": SIMPLE_AUTH_MANAGER_USERS,
                # Short loops: the suite waits on the scheduler, dag-processor and triggerer many times.
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "GIR_TOPOLOGY": str(self.topology_path),
                "GIR_DATA_DIR": str(self.data_dir),
                # The DAGs are created unpaused in a deployment; here scheduled runs would land in the
                # middle of the tests' exact request counts, so each test unpauses what it runs.
                "GIR_DAGS_PAUSED_AT_CREATION": "1",
            }
        )
        env.update(self.connection_env())
        return env

    def connection_env(self) -> dict[str, str]:
        """AIRFLOW_CONN_* (JSON form): each DC's RWS at the simulator, the keystore password, the REST API."""
        env: dict[str, str] = {
            f"AIRFLOW_CONN_{AIRFLOW_API_CONN_ID.upper()}": json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": self.api_port,
                    "schema": "http",
                    "login": SERVICE_USER,
                    "password": self.airflow_api_password,
                }
            ),
            "AIRFLOW_CONN_GIR_APPRISE": self.notifications.connection_json(),
        }
        keystore_conn_ids: set[str] = set()
        for dc in self.topology_document["data_centers"]:
            slug = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in dc["site"].lower())
            conn_id = (dc.get("rws") or {}).get("conn_id") or f"gir_rws_{slug}"
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": self.sim_ports[dc["site"]],
                    "login": "ops",
                    "password": self.ops_password,
                }
            )
            keystore_conn_ids |= {
                r["password_conn_id"] for r in dc.get("rcs") or [] if r.get("password_conn_id")
            }
        for conn_id in sorted(keystore_conn_ids):
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {"conn_type": "generic", "password": self.keystore_password}
            )
        return env

    def _write_topology(self) -> None:
        self.topology_document = deep_merge(default_topology_dict(), TOPOLOGY_OVERRIDES)
        self.topology_path.write_text(
            yaml.safe_dump(self.topology_document, sort_keys=False), encoding="utf-8"
        )
        self.sim_ports = {dc["site"]: free_port() for dc in self.topology_document["data_centers"]}

    def _write_local_settings(self) -> None:
        """A cluster policy that caps every task's retry_delay, so a retry happens within the test.

        The DAGs wait minutes between retries in production (e.g. 5 min for the shipping copy); the engine
        tests must see the retry itself without waiting that long. Nothing else is changed.
        """
        (self.policy_dir / "airflow_local_settings.py").write_text(
            "from __future__ import annotations\n\n"
            "from datetime import timedelta\n\n"
            f"CAP = timedelta(seconds={RETRY_DELAY_CAP_SECONDS})\n\n\n"
            "def task_policy(task):\n"
            "    if task.retry_delay is not None and task.retry_delay > CAP:\n"
            "        task.retry_delay = CAP\n",
            encoding="utf-8",
        )

    def topology(self) -> Any:
        from include.gir_ops.topology import load_topology

        return load_topology(self.topology_path)

    def _generate_demo_data(self) -> None:
        from include.gir_sim import demo_data

        previous = os.environ.get("GIR_DATA_DIR")
        os.environ["GIR_DATA_DIR"] = str(self.data_dir)  # the topology's URLs expand it when loaded
        try:
            topology = self.topology()
            demo_data.generate_index_backups(self.source_backup_root(), days=2)
            demo_data.generate_keystores(topology, self.keystore_password)
            # The backup DC's share, mounted and empty until the first shipping run (as the demo data CLI).
            self.replica_root().mkdir(parents=True, exist_ok=True)
        finally:
            if previous is None:
                os.environ.pop("GIR_DATA_DIR", None)
            else:
                os.environ["GIR_DATA_DIR"] = previous

    def source_backup_root(self) -> Path:
        return self.data_dir / "dc1" / "speechminer" / "index-backup"

    def replica_root(self) -> Path:
        return self.data_dir / "dc2" / "speechminer" / "index-backup-replica"

    def audit_dir(self) -> Path:
        return self.data_dir / "audit" / "failover"

    # --- services: PostgreSQL, Redis, simulator ----------------------------------------------------------

    def _create_database(self) -> None:
        with pg_admin() as cursor:
            cursor.execute(f'CREATE DATABASE "{self.database}"')
        self.database_created = True

    def _drop_database(self) -> None:
        if not self.database_created:
            return
        with pg_admin() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (self.database,),
            )
            cursor.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self.database_created = False

    def database_exists(self) -> bool:
        with pg_admin() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
            return cursor.fetchone() is not None

    def _flush_redis(self) -> None:
        import redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()

    def _start_simulator(self) -> None:
        ports = [arg for site, port in self.sim_ports.items() for arg in ("--port", f"{site}={port}")]
        self.spawn(
            "simulator",
            [
                sys.executable,
                "-m",
                "include.gir_sim",
                "serve",
                "--topology",
                str(self.topology_path),
                *ports,
            ],
            env={**self.env, "GIR_SIM_OPS_PASSWORD": self.ops_password},
        )
        for site in self.sim_ports:
            wait_for(
                f"simulator {site}",
                lambda site=site: (
                    self.check_alive() or requests.get(f"{self.sim_url(site)}/_sim/health", timeout=2).ok
                ),
                timeout=60,
                interval=0.3,
            )

    def sim_url(self, site: str) -> str:
        return f"http://127.0.0.1:{self.sim_ports[site]}"

    # --- readiness ------------------------------------------------------------------------------------

    def wait_healthy(self, *, timeout: float) -> None:
        def healthy() -> bool:
            self.check_alive()
            body = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            return all((body.get(part) or {}).get("status") == "healthy" for part in parts)

        wait_for(
            "Airflow health (metadatabase, scheduler, triggerer, dag_processor)", healthy, timeout=timeout
        )
        wait_for(
            "UI passwords file", lambda: set(UI_USERS) <= set(self.passwords()), timeout=60, interval=0.5
        )

    def wait_dags_parsed(self, *, timeout: float) -> None:
        admin = self.api("admin")

        def parsed() -> bool:
            self.check_alive()
            return set(EXPECTED_DAG_IDS) <= {dag["dag_id"] for dag in admin.dags()}

        wait_for(
            f"DAGs {EXPECTED_DAG_IDS} parsed by the dag-processor",
            parsed,
            timeout=timeout,
            on_timeout=lambda: f"import errors: {admin.import_errors()}",
        )

    def passwords(self) -> dict[str, str]:
        path = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def celery(self) -> Any:
        if self._celery is None:
            from celery import Celery

            self._celery = Celery("gir-engine-test", broker=self.broker_url)
        return self._celery

    def wait_worker_ready(self, *, timeout: float) -> None:
        def pong() -> bool:
            self.check_alive()
            replies = self.celery().control.ping(destination=[self.worker_name], timeout=1.0)
            return any(self.worker_name in reply for reply in replies)

        wait_for(f"Celery worker {self.worker_name}", pong, timeout=timeout)

    def active_worker_tasks(self) -> list[dict[str, Any]]:
        """What the Celery worker is executing right now (its occupied slots)."""
        answer = self.celery().control.inspect(destination=[self.worker_name], timeout=3.0).active()
        if not answer or self.worker_name not in answer:
            raise AssertionError(f"Celery worker {self.worker_name} did not answer `inspect active`")
        return list(answer[self.worker_name])

    def active_task_instances(self) -> list[dict[str, Any]]:
        """The task instances (dag_id, run_id, task_id, try_number) occupying the worker's slots now."""
        running = []
        for task in self.active_worker_tasks():
            try:
                workload = json.loads(task["args"][0])
                ti = workload["ti"]
                running.append({k: ti.get(k) for k in ("dag_id", "run_id", "task_id", "try_number")})
            except (LookupError, TypeError, ValueError):
                running.append({"unparsed": task})
        return running

    def api(self, user: str) -> AirflowApi:
        return AirflowApi(self.api_url, user, self.passwords()[user])


@contextlib.contextmanager
def pg_admin() -> Iterator[Any]:
    import psycopg2

    connection = psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def ensure_services() -> None:
    """PostgreSQL and Redis on loopback; started with the machine's own commands when they are down."""
    for name, port, command in (("PostgreSQL", PG_PORT, PG_START), ("Redis", REDIS_PORT, REDIS_START)):
        if port_open("127.0.0.1", port):
            continue
        result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, check=False)
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not port_open("127.0.0.1", port):
            raise EngineError(
                f"{name} is not listening on 127.0.0.1:{port} and `{command}` did not start it "
                f"(exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}. The engine "
                f"tests need {name} there (PostgreSQL with trust auth for user postgres; Redis without a "
                "password)."
            )


# --- the REST client ---------------------------------------------------------------------------------


class ApiError(AssertionError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class AirflowApi:
    """Airflow's public REST API as one SimpleAuthManager user (JWT from POST /auth/token)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self.username = username
        self.session = requests.Session()
        response = self.session.post(
            f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        if response.status_code not in (200, 201):
            raise ApiError("POST", "/auth/token", response.status_code, response.text)
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, *, expect: Iterable[int] = (200,), **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=30, **kwargs)
        if response.status_code not in tuple(expect):
            raise ApiError(method, path, response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    # --- DAGs and runs --------------------------------------------------------------------------------

    def dags(self) -> list[dict[str, Any]]:
        return self.get("/dags", limit=100)["dags"]

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("/importErrors", limit=100)["import_errors"]

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> dict[str, Any]:
        return self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: datetime | None = None
    ) -> dict[str, Any]:
        body = {"logical_date": iso(logical_date) if logical_date else None, "conf": dict(conf or {})}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=100, order_by="id")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=200)["task_instances"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return self.get(path if map_index < 0 else f"{path}/{map_index}")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.get(path, deserialize=True)["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """Every string of the task's structured log (JSON: the API serves no text/plain), one per line."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        body = self.request(
            "GET",
            path,
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )

        def strings(node: Any) -> list[str]:
            if isinstance(node, str):
                return [node]
            if isinstance(node, dict):
                return [text for value in node.values() for text in strings(value)]
            if isinstance(node, list):
                return [text for value in node for text in strings(value)]
            return []

        return "\n".join(strings(body.get("content") if isinstance(body, dict) else body))

    def describe_run(self, dag_id: str, run_id: str, log_lines: int = 25) -> str:
        """Task states, and the log tail of every failed task: the diagnosis for a failed assertion."""
        try:
            tis = self.task_instances(dag_id, run_id)
        except (ApiError, requests.RequestException) as exc:
            return f"(task instances unavailable: {exc})"
        lines = [f"task instances of {dag_id} {run_id}:"]
        for ti in tis:
            label = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
            lines.append(f"  {label}: {ti['state']} (try {ti.get('try_number')})")
        for ti in tis:
            if ti["state"] in ("failed", "upstream_failed") and ti.get("try_number"):
                text = self.task_log(dag_id, run_id, ti["task_id"], ti["try_number"], ti.get("map_index", -1))
                lines.append(f"--- log of {ti['task_id']} try {ti['try_number']} (tail)")
                lines += ["    " + line for line in text.splitlines()[-log_lines:]]
        return "\n".join(lines)

    def wait_run_finished(self, dag_id: str, run_id: str, *, timeout: float = 180) -> dict[str, Any]:
        """Wait for the run to end (success or failed); AssertionError with the task states if it does not."""
        return wait_for(
            f"{dag_id} {run_id} to finish",
            lambda: (r := self.run(dag_id, run_id))["state"] in TERMINAL_RUN_STATES and r,
            timeout=timeout,
            interval=1.0,
            on_timeout=lambda: self.describe_run(dag_id, run_id),
        )

    def wait_run(
        self, dag_id: str, run_id: str, *, state: str = "success", timeout: float = 180
    ) -> dict[str, Any]:
        """Wait for the run to end; assert it ended in ``state``, with the task states if not."""
        run = self.wait_run_finished(dag_id, run_id, timeout=timeout)
        assert run["state"] == state, (
            f"{dag_id} {run_id} ended {run['state']}, expected {state}\n{self.describe_run(dag_id, run_id)}"
        )
        return run

    def wait_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Iterable[str],
        *,
        timeout: float = 120,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        wanted = set(states)

        def reached() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id)
            if ti["state"] in wanted:
                return ti
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                raise AssertionError(
                    f"{dag_id} {run_id} ended {run['state']} before {task_id} reached {sorted(wanted)}\n"
                    f"{self.describe_run(dag_id, run_id)}"
                )
            return None

        return wait_for(
            f"{dag_id} {run_id} task {task_id} in {sorted(wanted)}",
            reached,
            timeout=timeout,
            interval=interval,
            on_timeout=lambda: self.describe_run(dag_id, run_id),
        )

    # --- backfills and human-in-the-loop ------------------------------------------------------------

    def create_backfill(
        self,
        dag_id: str,
        from_date: datetime,
        to_date: datetime,
        *,
        reprocess_behavior: str = "none",
        max_active_runs: int = 2,
    ) -> dict[str, Any]:
        body = {
            "dag_id": dag_id,
            "from_date": iso(from_date),
            "to_date": iso(to_date),
            "reprocess_behavior": reprocess_behavior,
            "max_active_runs": max_active_runs,
        }
        return self.request("POST", "/backfills", json=body)

    def backfill(self, backfill_id: int) -> dict[str, Any]:
        return self.get(f"/backfills/{backfill_id}")

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails")

    def answer_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen_options: Sequence[str],
        *,
        map_index: int = -1,
        params_input: dict[str, Any] | None = None,
        expect: Iterable[int] = (200,),
    ) -> Any:
        return self.request(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json={"chosen_options": list(chosen_options), "params_input": params_input or {}},
            expect=expect,
        )


def hours(start: datetime, end: datetime) -> list[int]:
    """Hour starts (epoch ms) in [start, end)."""
    first = int(start.timestamp() * 1000)
    return list(range(first, int(end.timestamp() * 1000), 3_600_000))
