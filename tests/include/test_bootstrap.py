"""Pools and connections bootstrap (against the harness's metadata DB) and `make run`'s pure helpers.

The bootstrap must be safe to re-run against a live deployment: it creates what is missing, never shrinks
or grows a pool an operator resized, updates connections in place, and never shows a password.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from include.gir_ops import bootstrap, shared
from include.gir_ops.topology import Topology, load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY_FILE = REPO_ROOT / "include" / "config" / "topology.yaml"
OPS_PASSWORD = "ops-Pa55-never-shown"
KEYSTORE_PASSWORD = "ks-Pa55-never-shown"
URLS = {
    "DC1": "http://127.0.0.1:18801",
    "DC2": "http://127.0.0.1:18802",
    "DC3": "https://rws-dc3.example:8443",
}


@pytest.fixture
def topology() -> Topology:
    return load_topology(TOPOLOGY_FILE)


def _managed_names(topology: Topology) -> tuple[list[str], list[str]]:
    pools = [spec.name for spec in bootstrap.pool_specs(topology)]
    conns = [dc.rws_conn_id for dc in topology.data_centers] + ["gir_rcs_keystore"]
    return pools, conns


def _delete(pools: list[str], conns: list[str]) -> None:
    from airflow.models import Pool
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(Pool).where(Pool.pool.in_(pools)))
        session.execute(delete(Connection).where(Connection.conn_id.in_(conns)))


@pytest.fixture
def clean_db(airflow_db: Path, topology: Topology, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No bootstrap-managed pool or connection before or after the test; no env var shadows the DB."""
    pools, conns = _managed_names(topology)
    for conn_id in conns:
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)
    _delete(pools, conns)
    yield
    _delete(pools, conns)


def _slots(name: str) -> int | None:
    from airflow.models import Pool

    pool = Pool.get_pool(name)
    return None if pool is None else pool.slots


def _conn(conn_id: str) -> Any:
    from airflow.models.connection import Connection

    return Connection.get_connection_from_secrets(conn_id)


def _ensure_demo_connections(topology: Topology, urls: dict[str, str] = URLS) -> list[bootstrap.Change]:
    return bootstrap.ensure_connections(
        topology,
        rws_urls=urls,
        ops_login="ops",
        ops_password=OPS_PASSWORD,
        keystore_password=KEYSTORE_PASSWORD,
    )


# --- pools -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_db")
def test_pools_are_created_for_every_dcs_reindex_dag_and_the_switch(topology: Topology) -> None:
    changes = bootstrap.ensure_pools(topology)

    assert [(c.name, c.action) for c in changes] == [
        ("gir_rws_dc1", "created"),  # DC1 re-indexes only on demand (manual runs), in its own pool too
        ("gir_rws_dc2", "created"),
        ("gir_rws_dc3", "created"),
        ("gir_rws_switch", "created"),
    ]
    assert _slots("gir_rws_dc2") == 1
    assert _slots("gir_rws_dc3") == 1
    assert _slots("gir_rws_switch") == 1
    assert _slots("gir_rws_dc1") == 1


@pytest.mark.usefixtures("clean_db")
def test_a_second_run_keeps_a_resized_pool(topology: Topology, caplog: pytest.LogCaptureFixture) -> None:
    from airflow.models import Pool

    bootstrap.ensure_pools(topology)
    Pool.create_or_update_pool("gir_rws_dc2", slots=4, description="resized by ops", include_deferred=False)

    with caplog.at_level(logging.WARNING, logger=bootstrap.__name__):
        changes = {c.name: c for c in bootstrap.ensure_pools(topology)}

    assert _slots("gir_rws_dc2") == 4
    assert changes["gir_rws_dc2"].action == "kept"
    assert "has 4 slot(s)" in str(changes["gir_rws_dc2"])
    assert changes["gir_rws_dc3"].action == "unchanged"
    assert "gir_rws_dc2: kept" in caplog.text


@pytest.mark.usefixtures("clean_db")
def test_pools_use_the_caller_session_without_committing(topology: Topology) -> None:
    from airflow.models import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        bootstrap.ensure_pools(topology, session=session)
        assert Pool.get_pool("gir_rws_dc3", session=session) is not None
        session.rollback()
    assert _slots("gir_rws_dc3") is None


def test_pool_specs_follow_topology_pool_settings() -> None:
    import yaml

    from include.gir_ops.topology import parse_topology

    document = yaml.safe_load(TOPOLOGY_FILE.read_text(encoding="utf-8"))
    document["data_centers"][1]["reindex"].update(pool="dc2_rws", pool_slots=3)
    specs = {spec.name: spec.slots for spec in bootstrap.pool_specs(parse_topology(yaml.safe_dump(document)))}
    assert specs == {"gir_rws_dc1": 1, "dc2_rws": 3, "gir_rws_dc3": 1, "gir_rws_switch": 1}


# --- connections -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_db")
def test_connections_are_created(topology: Topology) -> None:
    changes = _ensure_demo_connections(topology)

    assert {(c.name, c.action) for c in changes} == {
        ("gir_rws_dc1", "created"),
        ("gir_rws_dc2", "created"),
        ("gir_rws_dc3", "created"),
        ("gir_rcs_keystore", "created"),
    }
    dc1 = _conn("gir_rws_dc1")
    assert (dc1.conn_type, dc1.host, dc1.port, dc1.schema, dc1.login) == (
        "http",
        "127.0.0.1",
        18801,
        "http",
        "ops",
    )
    assert dc1.password == OPS_PASSWORD
    dc3 = _conn("gir_rws_dc3")
    assert (dc3.host, dc3.port, dc3.schema) == ("rws-dc3.example", 8443, "https")
    keystore = _conn("gir_rcs_keystore")
    assert keystore.conn_type == "generic"
    assert keystore.password == KEYSTORE_PASSWORD


@pytest.mark.usefixtures("clean_db")
def test_connections_are_updated_in_place(topology: Topology) -> None:
    _ensure_demo_connections(topology)
    id_before = _conn("gir_rws_dc1").id

    moved = {**URLS, "DC1": "http://10.1.2.3:9090"}
    changes = {c.name: c for c in _ensure_demo_connections(topology, moved)}

    assert changes["gir_rws_dc1"].action == "updated"
    assert "host" in changes["gir_rws_dc1"].detail and "port" in changes["gir_rws_dc1"].detail
    assert changes["gir_rws_dc2"].action == "unchanged"
    assert changes["gir_rcs_keystore"].action == "unchanged"
    dc1 = _conn("gir_rws_dc1")
    assert (dc1.host, dc1.port, dc1.id) == ("10.1.2.3", 9090, id_before)
    assert dc1.password == OPS_PASSWORD


@pytest.mark.usefixtures("clean_db")
def test_a_new_password_is_stored(topology: Topology) -> None:
    _ensure_demo_connections(topology)
    changes = bootstrap.ensure_connections(
        topology, rws_urls=URLS, ops_login="ops", ops_password="rotated", keystore_password=KEYSTORE_PASSWORD
    )
    assert {c.name: c.detail for c in changes}["gir_rws_dc2"] == "changed: password"
    assert _conn("gir_rws_dc2").password == "rotated"


@pytest.mark.usefixtures("clean_db")
def test_passwords_are_never_printed_or_logged(
    topology: Topology, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    monkeypatch.setenv(shared.OPS_PASSWORD_ENV, OPS_PASSWORD)
    monkeypatch.setenv(shared.KEYSTORE_PASSWORD_ENV, KEYSTORE_PASSWORD)
    argv = ["--topology", str(TOPOLOGY_FILE), "demo"]
    for site, url in URLS.items():
        argv += ["--rws", f"{site}={url}"]

    with caplog.at_level(logging.DEBUG):
        assert bootstrap.main(argv) == 0
        assert bootstrap.main([*argv[:-2], "--rws", "DC3=http://127.0.0.1:18803"]) == 0  # an update

    out, err = capsys.readouterr()
    assert "connection gir_rws_dc1: created" in out
    assert "connection gir_rws_dc3: updated" in out
    assert "pool gir_rws_switch: unchanged" in out
    for text in (out, err, caplog.text):
        assert OPS_PASSWORD not in text
        assert KEYSTORE_PASSWORD not in text
    assert _conn("gir_rws_dc3").password == OPS_PASSWORD


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ({"DC1": URLS["DC1"], "DC2": URLS["DC2"]}, "no URL for ['DC3']"),
        ({**URLS, "DC9": "http://x:1"}, "unknown site(s) ['DC9']"),
        ({**URLS, "DC2": "127.0.0.1:18802"}, "write it as http(s)://host[:port]"),
        ({**URLS, "DC2": "http://ops:pw@127.0.0.1:18802"}, "remove the credentials"),
        ({**URLS, "DC2": "http://127.0.0.1:18802/api/v2/ops"}, "give only scheme, host and port"),
    ],
)
def test_bad_urls_are_refused_before_touching_the_db(
    topology: Topology, urls: dict[str, str], message: str
) -> None:
    with pytest.raises(bootstrap.BootstrapError) as excinfo:
        bootstrap.ensure_connections(
            topology, rws_urls=urls, ops_login="ops", ops_password="x", keystore_password="y"
        )
    assert message in str(excinfo.value)
    assert "pw" not in str(excinfo.value)


def test_demo_needs_the_passwords_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(shared.OPS_PASSWORD_ENV, raising=False)
    monkeypatch.setenv(shared.KEYSTORE_PASSWORD_ENV, KEYSTORE_PASSWORD)
    assert bootstrap.main(["demo", "--rws", "DC1=http://127.0.0.1:1"]) == 2
    assert "GIR_SIM_OPS_PASSWORD" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_db")
def test_pools_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert bootstrap.main(["--topology", str(TOPOLOGY_FILE), "pools"]) == 0
    assert "pool gir_rws_dc3: created (1 slot(s))" in capsys.readouterr().out
    assert _slots("gir_rws_switch") == 1


# --- the Airflow REST API connection and its service user (the DAGs' pool check) ---------------------

API_PASSWORD = "api-Pa55-never-shown"
API_CONN_ENV = "AIRFLOW_CONN_GIR_AIRFLOW_API"


@pytest.fixture
def no_api_connection(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No gir_airflow_api connection in the DB or the environment, before or after."""
    monkeypatch.delenv(API_CONN_ENV, raising=False)
    _delete([], ["gir_airflow_api"])
    yield
    _delete([], ["gir_airflow_api"])


@pytest.mark.usefixtures("no_api_connection")
def test_the_airflow_api_connection_is_created_then_updated_in_place() -> None:
    change = bootstrap.ensure_airflow_api_connection("http://127.0.0.1:18080", password=API_PASSWORD)
    assert (str(change), change.action) == (
        "connection gir_airflow_api: created (http, 127.0.0.1:18080, login gir_pools_reader)",
        "created",
    )
    conn = _conn("gir_airflow_api")
    assert (conn.conn_type, conn.schema, conn.host, conn.port, conn.login) == (
        "http",
        "http",
        "127.0.0.1",
        18080,
        "gir_pools_reader",
    )
    assert conn.password == API_PASSWORD

    again = bootstrap.ensure_airflow_api_connection("https://airflow.example.com/gir", password="rotated")
    assert again.action == "updated"
    conn = _conn("gir_airflow_api")
    # A path prefix (API server behind a proxy) stays in the host: HttpHook uses "scheme://..." as is.
    assert (conn.schema, conn.host, conn.port, conn.password) == (
        "https",
        "https://airflow.example.com/gir",
        None,
        "rotated",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("airflow:8080", "write it as http(s)://host[:port][/prefix]"),
        ("http://u:pw@airflow:8080", "remove the credentials from the URL"),
        ("http://airflow:8080/api/v2", "without /api/v2 or /auth/token"),
        ("http://airflow:99999", "the port is not a number"),
    ],
)
def test_a_bad_airflow_api_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(bootstrap.BootstrapError, match=re.escape(message)) as caught:
        bootstrap.ensure_airflow_api_connection(url, password=API_PASSWORD)
    assert "pw@" not in str(caught.value)


@pytest.mark.usefixtures("no_api_connection")
def test_airflow_api_command_takes_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(bootstrap.AIRFLOW_API_PASSWORD_ENV, raising=False)
    assert bootstrap.main(["airflow-api", "--url", "http://127.0.0.1:18080"]) == 2
    assert "set GIR_AIRFLOW_API_PASSWORD in the environment first" in capsys.readouterr().err

    monkeypatch.setenv(bootstrap.AIRFLOW_API_PASSWORD_ENV, API_PASSWORD)
    with caplog.at_level(logging.DEBUG):
        assert bootstrap.main(["airflow-api", "--url", "http://127.0.0.1:18080", "--login", "reader"]) == 0
    out, err = capsys.readouterr()
    assert "connection gir_airflow_api: created (http, 127.0.0.1:18080, login reader)" in out
    for text in (out, err, caplog.text):
        assert API_PASSWORD not in text
    assert _conn("gir_airflow_api").password == API_PASSWORD


@pytest.mark.usefixtures("clean_db", "no_api_connection")
def test_demo_also_stores_the_airflow_api_connection_on_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(shared.OPS_PASSWORD_ENV, OPS_PASSWORD)
    monkeypatch.setenv(shared.KEYSTORE_PASSWORD_ENV, KEYSTORE_PASSWORD)
    monkeypatch.setenv(bootstrap.AIRFLOW_API_PASSWORD_ENV, API_PASSWORD)
    argv = ["--topology", str(TOPOLOGY_FILE), "demo", "--airflow-api", "http://127.0.0.1:18080"]
    for site, url in URLS.items():
        argv += ["--rws", f"{site}={url}"]
    assert bootstrap.main(argv) == 0
    assert "connection gir_airflow_api: created" in capsys.readouterr().out
    assert _conn("gir_airflow_api").password == API_PASSWORD


def test_a_simple_auth_manager_password_is_written_next_to_the_others(tmp_path: Path) -> None:
    passwords = tmp_path / "simple_auth_manager_passwords.json.generated"
    passwords.write_text(json.dumps({"admin": "generated-by-airflow"}))
    passwords.chmod(0o644)

    change = bootstrap.ensure_simple_auth_password(passwords, "gir_pools_reader", API_PASSWORD)

    assert change.action == "created"
    assert json.loads(passwords.read_text()) == {
        "admin": "generated-by-airflow",
        "gir_pools_reader": API_PASSWORD,
    }
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    assert API_PASSWORD not in str(change)
    assert (
        bootstrap.ensure_simple_auth_password(passwords, "gir_pools_reader", API_PASSWORD).action
        == "unchanged"
    )
    assert bootstrap.ensure_simple_auth_password(passwords, "gir_pools_reader", "new").action == "updated"


@pytest.fixture
def api_user_env(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Connection gir_airflow_api from the environment; SimpleAuthManager with its own passwords file."""
    monkeypatch.setenv(
        API_CONN_ENV,
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": 18080,
                "login": "gir_pools_reader",
                "password": API_PASSWORD,
            }
        ),
    )
    passwords = tmp_path / "passwords.json"
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    return passwords


def test_airflow_api_user_gives_the_simple_auth_manager_user_the_connections_password(
    api_user_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,gir_pools_reader:user")
    assert bootstrap.main(["airflow-api-user"]) == 0
    out = capsys.readouterr().out
    assert "user gir_pools_reader: created (SimpleAuthManager password in" in out
    assert API_PASSWORD not in out
    assert json.loads(api_user_env.read_text()) == {"gir_pools_reader": API_PASSWORD}


def test_airflow_api_user_refuses_a_user_simple_auth_manager_does_not_list(
    api_user_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    assert bootstrap.main(["airflow-api-user"]) == 2
    assert (
        "SimpleAuthManager has no user 'gir_pools_reader': add `gir_pools_reader:user` to [core] "
        "simple_auth_manager_users"
    ) in capsys.readouterr().err
    assert not api_user_env.exists()


def test_airflow_api_user_without_the_connection_says_to_create_it(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(API_CONN_ENV, raising=False)
    _delete([], ["gir_airflow_api"])
    assert bootstrap.main(["airflow-api-user"]) == 2
    assert "connection 'gir_airflow_api' does not exist: create it first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fab_output", "action"), [('User "x" created', "created"), ("x already exist", "kept")]
)
def test_airflow_api_user_with_fab_passes_the_password_on_stdin_only(
    api_user_env: Path, monkeypatch: pytest.MonkeyPatch, fab_output: str, action: str
) -> None:
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    )
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0, stdout=fab_output, stderr="")

    monkeypatch.setattr(bootstrap.subprocess, "run", fake_run)
    change = bootstrap.ensure_airflow_api_user()

    assert change.action == action
    ((command, kwargs),) = calls
    assert command[1:] == [
        "users",
        "create",
        "--role",
        "User",
        "--username",
        "gir_pools_reader",
        "--firstname",
        "gir-ops",
        "--lastname",
        "pool check",
        "--email",
        "gir_pools_reader@gir-ops.invalid",
    ]
    assert API_PASSWORD not in " ".join(command)  # never in a process list
    assert kwargs["input"] == f"{API_PASSWORD}\n{API_PASSWORD}\n"  # FAB's two getpass prompts
    assert kwargs["start_new_session"] is True  # no terminal: getpass reads stdin, never prompts a person


# --- scripts/run_stack.py (no process of the stack is started here) ----------------------------------


@pytest.fixture(scope="module")
def run_stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_stack", REPO_ROOT / "scripts" / "run_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_secrets_are_generated_once_and_reused(run_stack: ModuleType, tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    path = tmp_path / ".local" / "secrets.json"
    first = run_stack.load_or_create_secrets(path)

    assert set(first) == set(run_stack.SECRET_KEYS)
    assert all(len(value) >= 20 for value in first.values())
    assert first["ops_password"] != first["keystore_password"]
    Fernet(first["fernet_key"].encode())  # a usable Fernet key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run_stack.load_or_create_secrets(path) == first
    assert json.loads(path.read_text()) == first


def test_secrets_file_keeps_values_adds_missing_ones_and_is_made_private(
    run_stack: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"ops_password": "kept", "fernet_key": run_stack.generate_fernet_key()}))
    path.chmod(0o644)

    loaded = run_stack.load_or_create_secrets(path)

    assert loaded["ops_password"] == "kept"
    assert loaded["keystore_password"] and loaded["jwt_secret"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run_stack.load_or_create_secrets(path) == loaded


def test_a_corrupt_secrets_file_is_an_error_not_a_silent_regeneration(
    run_stack: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "secrets.json"
    path.write_text("{not json")
    with pytest.raises(run_stack.StackError, match="not valid JSON"):
        run_stack.load_or_create_secrets(path)


def _env(run_stack: ModuleType, tmp_path: Path, port: int, base_env: dict[str, str] | None = None) -> Any:
    paths = run_stack.StackPaths.for_repo(tmp_path)
    stack_secrets = {
        "fernet_key": "fk",
        "jwt_secret": "jwt",
        "ops_password": "op",
        "keystore_password": "kp",
        "airflow_api_password": "ap",
    }
    env = run_stack.build_env(
        paths,
        base_env=base_env if base_env is not None else {"PATH": "/usr/bin", "HOME": "/root"},
        db_url="postgresql+psycopg2://postgres@/airflow?host=/s",
        port=port,
        stack_secrets=stack_secrets,
        topology=tmp_path / "topology.yaml",
        python=Path("/venv/bin/python"),
    )
    return paths, env, stack_secrets


def test_env_keeps_all_state_under_dot_local(run_stack: ModuleType, tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "AIRFLOW_HOME": str(Path("~/airflow").expanduser()),
        "AIRFLOW_CONFIG": str(Path("~/airflow/airflow.cfg").expanduser()),
        "PYTHONPATH": "/elsewhere",
        "GIR_SIM_OPS_PASSWORD": "leaked?",
        "GIR_AIRFLOW_API_PASSWORD": "leaked too?",
    }
    paths, env, _ = _env(run_stack, tmp_path, 8080, base)

    assert env["AIRFLOW_HOME"] == str(tmp_path / ".local" / "airflow")
    assert "~" not in env["AIRFLOW_HOME"] and env["AIRFLOW_HOME"] != str(Path("~/airflow").expanduser())
    assert "AIRFLOW_CONFIG" not in env
    assert env["GIR_DATA_DIR"] == str(tmp_path / ".local" / "data")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(tmp_path / "plugins")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__FERNET_KEY"] == "fk"
    # gir_pools_reader: the read-only user of the DAGs' pool check (connection gir_airflow_api).
    assert (
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,approver:admin,gir_pools_reader:user"
    )
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/elsewhere"]
    assert env["PATH"].split(os.pathsep)[0] == "/venv/bin", "standalone runs `airflow` from PATH"
    assert env["GIR_TOPOLOGY"] == str(tmp_path / "topology.yaml")
    # The simulator's passwords reach only the children that need them, never Airflow.
    assert "GIR_SIM_OPS_PASSWORD" not in env and "GIR_RCS_KEYSTORE_PASSWORD" not in env
    assert "GIR_AIRFLOW_API_PASSWORD" not in env
    assert paths.secrets == tmp_path / ".local" / "secrets.json"
    assert paths.pgdata == tmp_path / ".local" / "pgdata"


def test_execution_api_url_follows_a_non_default_port(run_stack: ModuleType, tmp_path: Path) -> None:
    _, env, _ = _env(run_stack, tmp_path, 18080)
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"

    _, env, _ = _env(run_stack, tmp_path, 8080, {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://old:1/"})
    assert env["AIRFLOW__API__PORT"] == "8080"
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" not in env


def test_gir_secrets_are_added_only_on_request(run_stack: ModuleType, tmp_path: Path) -> None:
    _, env, stack_secrets = _env(run_stack, tmp_path, 8080)
    gir_env = run_stack.with_gir_secrets(env, stack_secrets)
    assert gir_env["GIR_SIM_OPS_PASSWORD"] == "op"
    assert gir_env["GIR_RCS_KEYSTORE_PASSWORD"] == "kp"
    assert gir_env["GIR_AIRFLOW_API_PASSWORD"] == "ap"
    assert "GIR_SIM_OPS_PASSWORD" not in env


def test_ports(run_stack: ModuleType) -> None:
    assert run_stack.ui_port({}) == 8080
    assert run_stack.ui_port({"GIR_UI_PORT": "18080"}) == 18080
    assert run_stack.sim_ports(["DC1", "DC2", "DC3"], {}) == {"DC1": 18801, "DC2": 18802, "DC3": 18803}
    assert run_stack.sim_ports(["DC1", "DC2"], {"GIR_SIM_BASE_PORT": "18901"}) == {"DC1": 18901, "DC2": 18902}
    assert run_stack.rws_urls({"DC1": 18901}) == {"DC1": "http://127.0.0.1:18901"}
    with pytest.raises(run_stack.StackError, match="GIR_UI_PORT"):
        run_stack.ui_port({"GIR_UI_PORT": "http"})
    with pytest.raises(run_stack.StackError, match="no room"):
        run_stack.sim_ports(["DC1", "DC2"], {"GIR_SIM_BASE_PORT": "65535"})


def test_topology_file(run_stack: ModuleType, tmp_path: Path) -> None:
    assert run_stack.topology_file({}, tmp_path) == tmp_path / "include" / "config" / "topology.yaml"
    assert (
        run_stack.topology_file({"GIR_TOPOLOGY": str(tmp_path / "t.yaml")}, tmp_path) == tmp_path / "t.yaml"
    )


def test_embedded_postgres_uri_becomes_a_socket_sqlalchemy_url(run_stack: ModuleType) -> None:
    from sqlalchemy.engine import make_url

    url = run_stack.sqlalchemy_url_from_pg_uri(
        "postgresql://postgres:@/postgres?host=/w/my repo/pgdata", "airflow"
    )
    parsed = make_url(url)
    assert parsed.drivername == "postgresql+psycopg2"
    assert (parsed.username, parsed.password, parsed.host, parsed.database) == (
        "postgres",
        None,
        None,
        "airflow",
    )
    assert parsed.query["host"] == "/w/my repo/pgdata"
    assert (
        run_stack.sqlalchemy_url_from_pg_uri("postgresql://postgres:@127.0.0.1:5433/postgres", "airflow")
        == "postgresql+psycopg2://postgres@127.0.0.1:5433/airflow"
    )


def test_banner_shows_logins_urls_and_how_to_stop(run_stack: ModuleType, tmp_path: Path) -> None:
    paths = run_stack.StackPaths.for_repo(tmp_path)
    paths.airflow_home.mkdir(parents=True)
    assert run_stack.read_ui_passwords(paths.airflow_home) == {}
    (paths.airflow_home / "simple_auth_manager_passwords.json.generated").write_text(
        json.dumps({"admin": "A-pw", "approver": "B-pw"})
    )
    text = run_stack.banner(
        port=18080,
        passwords=run_stack.read_ui_passwords(paths.airflow_home),
        simulators={"DC1": "http://127.0.0.1:18901"},
        paths=paths,
        db_description="embedded PostgreSQL",
    )
    for expected in ("http://127.0.0.1:18080/", "A-pw", "B-pw", "approver", "http://127.0.0.1:18901"):
        assert expected in text
    assert str(paths.data) in text and str(paths.logs) in text
    assert "Ctrl-C stops everything" in text


def test_a_taken_port_fails_fast(run_stack: ModuleType) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert run_stack.port_in_use(port)
        with pytest.raises(run_stack.StackError, match=f"simulator DC1 port {port} already in use"):
            run_stack.check_ports_free({"simulator DC1": port})


def test_stopping_a_child_leaves_no_process_of_its_group(run_stack: ModuleType, tmp_path: Path) -> None:
    children = run_stack.Children(cwd=tmp_path, logs=tmp_path)
    # A parent that ignores SIGTERM, with a grandchild: only the process-group kill gets both.
    script = "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    script += "subprocess.Popen(['sleep', '300']); time.sleep(300)"
    child = children.start(
        "stubborn",
        [sys.executable, "-c", script],
        os.environ,
        stop_plan=(run_stack.StopStep(signal.SIGTERM, 0.5),),
    )
    time.sleep(0.5)
    pgid = child.process.pid
    members = subprocess.run(
        ["pgrep", "-g", str(pgid)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert len(members) >= 2

    children.stop_all()

    assert child.process.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert children.started == []


def test_demo_drift_switch_makes_one_keystore_differ_and_restore_undoes_it(
    run_stack: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH, load_topology
    from include.gir_sim import demo_data

    paths = run_stack.StackPaths.for_repo(tmp_path)
    monkeypatch.setattr(run_stack, "REPO", tmp_path)
    monkeypatch.setenv("GIR_DATA_DIR", str(paths.data))
    monkeypatch.delenv("GIR_TOPOLOGY", raising=False)
    (tmp_path / "include" / "config").mkdir(parents=True)
    (tmp_path / "include" / "config" / "topology.yaml").write_text(DEFAULT_TOPOLOGY_PATH.read_text())
    password = run_stack.load_or_create_secrets(paths.secrets)["keystore_password"]
    topology = load_topology(tmp_path / "include" / "config" / "topology.yaml")
    keystores = demo_data.generate_keystores(topology, password)

    assert run_stack.demo_keystores("drift", "rcs-dc2-a", paths) == 0
    digests = {name: path.read_bytes() for name, path in keystores.items()}
    assert digests["rcs-dc2-a"] != digests["rcs-dc1-a"] == digests["rcs-dc3-a"]
    assert run_stack.demo_keystores("drift", "rcs-nowhere", paths) == 2
    assert "RCS instances:" in capsys.readouterr().err

    assert run_stack.demo_keystores("restore-keystores", None, paths) == 0
    assert len({path.read_bytes() for path in keystores.values()}) == 1
    assert password not in capsys.readouterr().out


def test_the_banner_shows_the_failover_steps_and_where_rws_reports_the_site(
    run_stack: ModuleType, tmp_path: Path
) -> None:
    text = run_stack.banner(
        port=8080,
        passwords={"admin": "a", "approver": "b"},
        simulators={"DC1": "http://127.0.0.1:18801"},
        paths=run_stack.StackPaths.for_repo(tmp_path),
        db_description="embedded PostgreSQL",
        site_report="none",
    )
    assert "confirm_switch" in text and "data-center-lost" in text
    assert "catch-up run of gir_es_reindex_dc1" in text
    assert "reports eServicesSite: not at all" in text
    assert set(run_stack.SITE_REPORT_HELP) == {"nested", "top-level", "none"}
