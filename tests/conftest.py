"""Test harness: an isolated Airflow home with a migrated SQLite DB, and the GIR simulator on loopback.

Airflow reads its configuration when first imported, so the environment is set at the top of this
module, before anything imports Airflow. Every pytest process gets its own AIRFLOW_HOME in a temp dir;
never ``~/airflow``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = REPO_ROOT / "include" / "config" / "topology.yaml"

# Idempotent: a second import of this module (e.g. as ``tests.conftest``) must not move AIRFLOW_HOME
# away from the database the first import migrated.
_AIRFLOW_HOME = Path(
    os.environ.get("GIR_OPS_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="gir-ops-airflow-home-")
)
os.environ["GIR_OPS_TEST_AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
# One Fernet key for this process and every Airflow subprocess a test starts, so connections one of them
# stores (encrypted) the other can read.
if not os.environ.get("AIRFLOW__CORE__FERNET_KEY"):
    import base64

    os.environ["AIRFLOW__CORE__FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
# The in-process API server (failover approvals) signs its tokens with this; PyJWT wants 64+ bytes.
if not os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET"):
    os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = os.urandom(48).hex()
os.environ.setdefault("GIR_DATA_DIR", str(_AIRFLOW_HOME / "gir-data"))
# The tests are the demo: the bundled topology may be loaded without GIR_TOPOLOGY (and every Airflow
# subprocess a test starts inherits this).
os.environ["GIR_DEMO"] = "1"
for _name in list(os.environ):
    if _name.startswith("AIRFLOW_CONN_GIR_"):
        del os.environ[_name]

import pytest  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from tests.airflow_api_server import AirflowApiServer, serve_airflow_api  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated metadata DB (SQLite), created once per test process."""
    from airflow.utils import db

    db.resetdb(skip_init=False)
    return _AIRFLOW_HOME


# --- topology ----------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_topology_dict() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))


# --- the simulated GIR deployment -------------------------------------------------------------------


@dataclass
class SimulatedGir:
    """A running simulator plus the topology file and connections that point the DAGs at it."""

    topology_path: Path
    data_dir: Path
    simulator: Any
    ops_password: str
    keystore_password: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def topology(self) -> Any:
        from include.gir_ops.topology import load_topology

        return load_topology(self.topology_path)

    def url(self, site: str) -> str:
        return self.simulator.url(site)

    def requests(self, site: str, *, api_only: bool = True) -> list[dict[str, Any]]:
        """What the DC's RWS received, in order (read through the simulator's own HTTP endpoint)."""
        received = requests.get(f"{self.url(site)}/_sim/requests", timeout=10).json()
        return [r for r in received if not api_only or r["path"].startswith("/api/")]

    def posts(self, site: str, path_contains: str = "") -> list[dict[str, Any]]:
        return [r for r in self.requests(site) if r["method"] == "POST" and path_contains in r["path"]]

    def indexed(self, site: str) -> dict[str, dict[str, dict[int, int]]]:
        """contact center -> kind -> hour start in ms -> how many times it was re-indexed."""
        raw = requests.get(f"{self.url(site)}/_sim/indexed", timeout=10).json()
        return {
            cc: {kind: {int(h): n for h, n in hours.items()} for kind, hours in kinds.items()}
            for cc, kinds in raw.items()
        }

    def fault(self, site: str, **fault: Any) -> None:
        """Arm a fault: count, mode (status|drop|delay), http_status, status_code, delay_ms, path_contains."""
        requests.post(f"{self.url(site)}/_sim/faults", json=fault, timeout=10).raise_for_status()

    def configure_environment(self, **settings: Any) -> dict[str, Any]:
        site = self.topology.primary_site
        response = requests.post(f"{self.url(site)}/_sim/environment", json=settings, timeout=10)
        response.raise_for_status()
        return response.json()

    def environment(self) -> dict[str, Any]:
        site = self.topology.primary_site
        return requests.get(f"{self.url(site)}/_sim/environment", timeout=10).json()


def connection_env(
    topology: Any, urls: dict[str, str], ops_password: str, keystore_password: str
) -> dict[str, str]:
    """AIRFLOW_CONN_* variables (JSON form) for every DC's RWS and the keystore password connections."""
    env: dict[str, str] = {}
    for dc in topology.data_centers:
        host, port = urls[dc.site].removeprefix("http://").split(":")
        env[f"AIRFLOW_CONN_{dc.rws_conn_id.upper()}"] = json.dumps(
            {"conn_type": "http", "host": host, "port": int(port), "login": "ops", "password": ops_password}
        )
    for _, rcs in topology.rcs_instances:
        if rcs.password_conn_id:
            env[f"AIRFLOW_CONN_{rcs.password_conn_id.upper()}"] = json.dumps(
                {"conn_type": "generic", "password": keystore_password}
            )
    return env


@pytest.fixture
def gir_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SimulatedGir]]:
    """Start the simulator for the default topology, deep-merged with ``overrides``.

    Sets GIR_TOPOLOGY, GIR_DATA_DIR and the AIRFLOW_CONN_* variables for the test's duration, so DAGs
    parsed afterwards point at the simulator. ``dr_monitoring_delay_seconds`` defaults to the topology's.
    """
    from include.gir_ops.topology import load_topology
    from include.gir_sim.server import GirSimulator

    started: list[Any] = []

    def start(
        overrides: dict[str, Any] | None = None,
        *,
        topology: dict[str, Any] | None = None,
        dr_monitoring_delay_seconds: float | None = None,
    ) -> SimulatedGir:
        data_dir = tmp_path / "gir-data"
        data_dir.mkdir(exist_ok=True)
        monkeypatch.setenv("GIR_DATA_DIR", str(data_dir))
        document = deep_merge(topology or default_topology_dict(), overrides or {})
        topology_path = tmp_path / f"topology-{len(started)}.yaml"
        topology_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        monkeypatch.setenv("GIR_TOPOLOGY", str(topology_path))
        loaded = load_topology(topology_path)
        ops_password = secrets.token_urlsafe(16)
        keystore_password = secrets.token_urlsafe(16)
        simulator = GirSimulator(
            loaded, ops_password=ops_password, dr_monitoring_delay_seconds=dr_monitoring_delay_seconds
        )
        simulator.start()
        started.append(simulator)
        urls = {site: simulator.url(site) for site in loaded.sites}
        env = connection_env(loaded, urls, ops_password, keystore_password)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return SimulatedGir(topology_path, data_dir, simulator, ops_password, keystore_password, env)

    yield start
    for simulator in started:
        simulator.stop()


@pytest.fixture
def gir(gir_factory: Callable[..., SimulatedGir]) -> SimulatedGir:
    """The default topology's three DCs, simulated."""
    return gir_factory()


# --- Airflow's own REST API (the DAGs' pool check) ------------------------------------------------------


@pytest.fixture(scope="session")
def airflow_api_server(airflow_db: Path) -> Iterator[AirflowApiServer]:
    """Airflow's API app (core API + SimpleAuthManager) on a free loopback port, one per test process.

    dag.test() runs tasks in this process, and `airflow dags test` subprocesses reach it over loopback.
    """
    with serve_airflow_api() as server:
        yield server


@pytest.fixture
def airflow_api(airflow_api_server: AirflowApiServer, monkeypatch: pytest.MonkeyPatch) -> AirflowApiServer:
    """What ``check_pools`` needs: connection ``gir_airflow_api`` set and the default topology's pools.

    Use it in every test module that runs a DAG with ``check_pools`` (re-index, failover).
    """
    from airflow.api_fastapi.app import init_auth_manager

    from include.gir_ops.bootstrap import ensure_pools
    from include.gir_ops.topology import load_topology

    init_auth_manager()  # idempotent; another module's purge_cached_app() may have dropped it
    monkeypatch.setenv("AIRFLOW_CONN_GIR_AIRFLOW_API", airflow_api_server.connection_json())
    ensure_pools(load_topology(DEFAULT_TOPOLOGY))
    return airflow_api_server


# --- DAG loading -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _dag_test_without_deadline_alerts() -> Iterator[None]:
    """dag.test() of a DAG with Deadline Alerts crashes when the run succeeds on Airflow 3.3.2 (its
    in-memory serialized DAG holds the alerts encoded where the success path expects their ids:
    AttributeError 'dict' object has no attribute 'hex'). dag.test() never creates a deadline (its run is
    never queued), so the DAG runs without its alerts here; `airflow dags test` leaves them out the same
    way (include.gir_ops.notifications.under_dags_test). The alerts are tested through the scheduler's
    own code in tests/include/notifications/test_notification_deadlines.py."""
    from airflow.sdk.definitions.dag import DAG

    original = DAG.test

    def test_without_deadline(self: Any, *args: Any, **kwargs: Any) -> Any:
        kept, self.deadline = self.deadline, None
        try:
            return original(self, *args, **kwargs)
        finally:
            self.deadline = kept

    DAG.test = test_without_deadline  # type: ignore[method-assign]
    yield
    DAG.test = original  # type: ignore[method-assign]


def parse_dags(dag_file: Path | None = None) -> Any:
    """Parse DAG files as the dag-processor does, with the current GIR_TOPOLOGY."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(dag_file or REPO_ROOT / "dags"))


@pytest.fixture
def load_dag(airflow_db: Path) -> Callable[[str], Any]:
    """Parse the DAG files afresh (the topology may differ per test) and return one DAG by id."""

    def load(dag_id: str) -> Any:
        bag = parse_dags()
        assert not bag.import_errors, bag.import_errors
        assert dag_id in bag.dags, f"{dag_id} not among {sorted(bag.dags)}"
        return bag.dags[dag_id]

    return load
