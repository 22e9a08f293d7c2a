"""The compose deployment, checked without Docker: schema, services, secrets, mounts and entry commands.

No Docker engine runs here, so these tests read docker-compose.yaml, the Dockerfile and .env.example,
validate the compose file against the Compose Specification JSON schema, interpolate it the way
Compose does and resolve it for every combination of profiles, check every file it references and every
AIRFLOW__* name against Airflow 3.3's config reference, and run the project commands the containers run
(simulator, demo data, pools and demo connections) as subprocesses against the test Airflow DB. The
image's install step is dry-run in test_image.py.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import requests
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema
from deploy_facts import connection_variable, needed_connection_ids, unknown_config_variable

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"
# The Compose Specification schema as check-jsonschema ships it (pinned in requirements-dev.txt), so a
# clean clone validates with nothing beside it.
COMPOSE_SCHEMA = "vendor.compose-spec"

CONTAINER_ROOT = "/opt/airflow"  # where the image keeps dags/, plugins/, include/ (the Astro layout)
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
)
LONG_RUNNING = (*AIRFLOW_SERVICES, "postgres", "redis")
DEMO_SERVICES = ("gir-simulator", "gir-demo-data", "gir-demo-init")
# Every secret the stack cannot start without; none may have a default anywhere.
REQUIRED_SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "_AIRFLOW_WWW_USER_PASSWORD",
}
# Required settings that are not secrets: no default either (the demo's topology is one value to set).
REQUIRED_SETTINGS = {"GIR_TOPOLOGY"}
REQUIRED_VARIABLES = REQUIRED_SECRETS | REQUIRED_SETTINGS
# The value .env.example gives for the demo (a container path: ./include is mounted at /opt/airflow/include).
DEMO_TOPOLOGY = "/opt/airflow/include/config/topology.yaml"
# Demo-only secrets: `${VAR:-}` because Compose interpolates inactive profiles too; the programs refuse
# to start without them.
DEMO_SECRETS = {"GIR_SIM_OPS_PASSWORD", "GIR_RCS_KEYSTORE_PASSWORD"}
SECRET_KEY_PATTERN = re.compile(r"PASSWORD|FERNET|SECRET|AUTH$|^AIRFLOW_CONN_", re.IGNORECASE)
# URL-valued settings with a password, and the .env variable that password must come from.
URL_KEYS_WITH_CREDENTIALS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "POSTGRES_PASSWORD",
    "AIRFLOW__CELERY__RESULT_BACKEND": "POSTGRES_PASSWORD",
    "AIRFLOW__CELERY__BROKER_URL": "REDIS_PASSWORD",
}
PROFILES = ("demo", "flower", "debug")
# Created at first start (docs/deployment.md: `mkdir -p logs`), git-ignored: not in a clone.
RUNTIME_FOLDERS = {"./logs"}


# --- loading -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Compose sees it before interpolation (anchors and `<<` merges resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    return get_builtin_schema(COMPOSE_SCHEMA)


def _schema_errors(document: Any, schema: dict[str, Any]) -> list[str]:
    """Every violation, validated with the draft the schema declares (its ``$schema``)."""
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    )


def _service(compose: Mapping[str, Any], name: str) -> dict[str, Any]:
    assert name in compose["services"], f"service {name} is missing from {COMPOSE_FILE.name}"
    return compose["services"][name]


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "write environment as a mapping, so anchors can merge it"
    return {str(key): "" if value is None else str(value) for key, value in environment.items()}


def _argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _healthcheck_text(service: Mapping[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


# --- Compose interpolation (the subset of the spec this file may use) --------------------------------

_VAR_REF = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$")


@dataclass(frozen=True)
class VarRef:
    name: str
    op: str | None  # None, ":-", "-", ":?", "?", ":+", "+"
    arg: str
    where: str

    @property
    def required(self) -> bool:
        return self.op in (None, ":?", "?")


class InterpolationError(ValueError):
    def __init__(self, missing: list[VarRef]) -> None:
        self.missing = missing
        super().__init__("; ".join(f"{ref.where}: {ref.name} ({ref.arg})" for ref in missing))


def _walk_strings(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _walk_strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk_strings(value, f"{where}[{index}]")


def variable_references(document: Any) -> list[VarRef]:
    refs: list[VarRef] = []
    for where, text in _walk_strings(document):
        for match in _VAR_REF.finditer(text):
            if match["escaped"]:
                continue
            if match["named"]:
                refs.append(VarRef(match["named"], None, "", where))
                continue
            braced = _BRACED.match(match["braced"])
            assert braced, f"{where}: cannot read ${{{match['braced']}}} as a Compose variable"
            refs.append(VarRef(braced["name"], braced["op"], braced["arg"] or "", where))
    return refs


def _resolve(ref: VarRef, env: Mapping[str, str], missing: list[VarRef]) -> str:
    """One ``${NAME<op>arg}`` as the Compose Specification defines it."""
    value = env.get(ref.name)
    is_set, non_empty = value is not None, bool(value)
    if ref.op in (":?", "?") and not (non_empty if ref.op == ":?" else is_set):
        missing.append(ref)
    results = {
        None: value or "",
        ":-": value if non_empty else ref.arg,
        "-": value if is_set else ref.arg,
        ":?": value or "",
        "?": value or "",
        ":+": ref.arg if non_empty else "",
        "+": ref.arg if is_set else "",
    }
    return results[ref.op] or ""


def interpolate(document: Any, env: Mapping[str, str]) -> Any:
    """What Compose does to every string value: ``$$`` -> ``$``, ``${VAR...}`` from ``env``."""
    missing: list[VarRef] = []

    def substitute(text: str, where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match["escaped"]:
                return "$"
            if match["named"]:
                return _resolve(VarRef(match["named"], None, "", where), env, missing)
            braced = _BRACED.match(match["braced"])
            assert braced, f"{where}: cannot read ${{{match['braced']}}}"
            return _resolve(VarRef(braced["name"], braced["op"], braced["arg"] or "", where), env, missing)

        return _VAR_REF.sub(replace, text)

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str):
            return substitute(node, where)
        if isinstance(node, dict):
            return {key: walk(value, f"{where}.{key}" if where else str(key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, f"{where}[{index}]") for index, value in enumerate(node)]
        return node

    result = walk(document, "")
    if missing:
        raise InterpolationError(missing)
    return result


def parse_env_file(text: str) -> tuple[dict[str, str], set[str]]:
    """A .env file as Compose reads it: ``KEY=VALUE`` (quotes stripped); also names in ``# KEY=`` lines."""
    assigned: dict[str, str] = {}
    commented: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            documented = re.match(r"^#\s*([A-Za-z_][A-Za-z0-9_]*)=", line)
            if documented:
                commented.add(documented[1])
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example line {raw!r} is not KEY=VALUE"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        assigned[key.strip()] = value
    return assigned, commented


def filled_env() -> dict[str, str]:
    """.env.example with every required secret filled in, as an operator would."""
    assigned, _ = parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))
    fernet = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    values = {
        "AIRFLOW__CORE__FERNET_KEY": fernet,
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "REDIS_PASSWORD": secrets.token_hex(24),
        "_AIRFLOW_WWW_USER_PASSWORD": secrets.token_urlsafe(18),
        "GIR_TOPOLOGY": DEMO_TOPOLOGY,
        "GIR_SIM_OPS_PASSWORD": secrets.token_urlsafe(18),
        "GIR_RCS_KEYSTORE_PASSWORD": secrets.token_urlsafe(18),
    }
    return {**assigned, **values}


def test_interpolation_helper_follows_the_compose_specification():
    """The checks below rely on this helper; pin its semantics to the spec's examples."""
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "${SET}": "v",
        "$SET/x": "v/x",
        "${UNSET}": "",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "${UNSET-d}": "d",
        "${SET:-d}": "v",
        "${SET:+r}": "r",
        "${EMPTY:+r}": "",
        "${EMPTY+r}": "r",
        "$${HOSTNAME} $$(id -u)": "${HOSTNAME} $(id -u)",
        "a:${SET?m}@b": "a:v@b",
    }
    for text, expected in cases.items():
        assert interpolate(text, env) == expected, text
    for text in ("${UNSET:?m}", "${EMPTY:?m}", "${UNSET?m}"):
        with pytest.raises(InterpolationError):
            interpolate(text, env)
    assert interpolate("${EMPTY?m}", env) == ""


# --- schema ------------------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification(compose, compose_schema):
    assert _schema_errors(compose, compose_schema) == []


def test_interpolated_compose_file_still_validates(compose, compose_schema):
    """After Compose substitutes .env values (ports, users, URLs) the model must still be valid."""
    resolved = interpolate(compose, filled_env())
    assert _schema_errors(resolved, compose_schema) == []
    assert resolved["services"]["airflow-apiserver"]["ports"] == ["8080:8080"]


def test_schema_check_catches_a_broken_compose_file(compose, compose_schema):
    """The validation above is not vacuous: typos Compose would reject are reported."""
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["airflow-worker"]["depends_on"]["postgres"]["condition"] = "healthy"
    broken["services"]["airflow-scheduler"]["restart"] = ["always"]
    errors = _schema_errors(broken, compose_schema)
    assert any("services/redis/healthcheck" in e and "intervall" in e for e in errors), errors
    assert any("services/airflow-worker/depends_on" in e for e in errors), errors
    assert any("services/airflow-scheduler/restart" in e for e in errors), errors


# --- services, executor, healthchecks ----------------------------------------------------------------


def test_every_component_of_a_celery_deployment_is_a_service(compose):
    services = compose["services"]
    expected_commands = {
        "airflow-apiserver": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-worker": ["celery", "worker"],
        "airflow-triggerer": ["triggerer"],
    }
    for name, command in expected_commands.items():
        assert _argv(_service(compose, name)["command"]) == command, name
    for name in (*LONG_RUNNING, "airflow-init"):
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"
    assert _service(compose, "postgres")["image"].startswith("postgres:")
    assert _service(compose, "redis")["image"].startswith("redis:")
    assert _service(compose, "flower")["profiles"] == ["flower"]
    assert _argv(services["flower"]["command"]) == ["celery", "flower"]


def test_celery_executor_postgres_and_redis_in_every_airflow_service(compose):
    filled_env_values = filled_env()
    resolved = interpolate(compose, filled_env_values)
    api_port = _service(resolved, "airflow-apiserver")["ports"][0].rsplit(":", 1)[1]
    for name in (*AIRFLOW_SERVICES, "airflow-init", "flower", "gir-demo-init"):
        env = _env(_service(resolved, name))
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert (db.scheme, db.hostname) == ("postgresql+psycopg2", "postgres"), name
        result_backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
        assert (result_backend.scheme, result_backend.hostname) == ("db+postgresql", "postgres"), name
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379), name
        assert broker.password == filled_env_values["REDIS_PASSWORD"], name
        # Every component names the same JWT issuer (and checks it on the tokens it receives).
        assert env["AIRFLOW__API_AUTH__JWT_ISSUER"] == "gir-ops-airflow", name
        # Task runners call the execution API by the API server's service name and container port.
        execution_api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert execution_api.hostname == "airflow-apiserver", name
        assert str(execution_api.port) == api_port, name
        assert execution_api.path == "/execution/", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name
        assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true", name


def test_long_running_services_have_healthchecks_that_match_the_pinned_airflow(compose):
    for name in LONG_RUNNING:
        healthcheck = _service(compose, name).get("healthcheck")
        assert healthcheck and healthcheck.get("test"), f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), name
        test = healthcheck["test"]
        assert isinstance(test, str) or test[0] in ("CMD", "CMD-SHELL"), name
    checks = {name: _healthcheck_text(_service(compose, name)) for name in LONG_RUNNING}
    assert "pg_isready" in checks["postgres"]
    assert "redis-cli ping" in checks["redis"]
    # Airflow 3's health endpoint (metadata DB, scheduler, triggerer, DAG processor), not just "it answers".
    assert "http://localhost:8080/api/v2/monitor/health" in checks["airflow-apiserver"]
    from airflow.api_fastapi.core_api.routes.public.monitor import monitor_router

    assert "/monitor/health" in {route.path for route in monitor_router.routes}
    assert "http://localhost:8974/health" in checks["airflow-scheduler"]

    # The job types and the Celery app the checks name must exist in the Airflow this project pins.
    from airflow.jobs.dag_processor_job_runner import DagProcessorJobRunner
    from airflow.jobs.triggerer_job_runner import TriggererJobRunner

    assert f"--job-type {DagProcessorJobRunner.job_type} " in checks["airflow-dag-processor"]
    assert f"--job-type {TriggererJobRunner.job_type} " in checks["airflow-triggerer"]
    assert re.search(
        r"celery --app \S+ inspect ping -d \"celery@\$\$\{HOSTNAME\}\"", checks["airflow-worker"]
    )

    # `$${HOSTNAME}` reaches the container's shell as ${HOSTNAME}, not Compose's (empty) variable.
    resolved = interpolate(compose, filled_env())
    for name in ("airflow-dag-processor", "airflow-triggerer", "airflow-worker"):
        assert re.search(r'"(celery@)?\$\{HOSTNAME\}"', _healthcheck_text(resolved["services"][name])), name


def test_jwt_secret_and_issuer_are_what_airflow_signs_and_checks_task_tokens_with(compose, monkeypatch):
    """With the compose file's settings, a task token the scheduler's executor signs is accepted by the
    API server's execution API; one signed with another secret (a component not restarted after a change)
    or by another issuer is refused. Airflow's own generator and validator, configured from the env."""
    import jwt
    from airflow.api_fastapi.execution_api.app import _jwt_generator, _jwt_validator

    env = filled_env()
    common = interpolate(_env(_service(compose, "airflow-scheduler")), env)

    def token_with(secret: str, issuer: str) -> str:
        monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secret)
        monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_ISSUER", issuer)
        return _jwt_generator().generate({"sub": "task-instance-uuid"})

    def validate(token: str) -> dict[str, Any]:
        monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", common["AIRFLOW__API_AUTH__JWT_SECRET"])
        monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_ISSUER", common["AIRFLOW__API_AUTH__JWT_ISSUER"])
        return _jwt_validator().validated_claims(token)

    secret, issuer = common["AIRFLOW__API_AUTH__JWT_SECRET"], common["AIRFLOW__API_AUTH__JWT_ISSUER"]
    assert validate(token_with(secret, issuer))["iss"] == "gir-ops-airflow"
    with pytest.raises(jwt.InvalidSignatureError):
        validate(token_with(secrets.token_urlsafe(48), issuer))
    with pytest.raises(jwt.InvalidIssuerError):
        validate(token_with(secret, "another-airflow"))


def test_worker_healthcheck_celery_app_imports_in_the_pinned_environment(compose):
    """The module the worker's healthcheck names is the one `airflow celery worker` and the scheduler's
    CeleryExecutor import: if it does not import with the pinned packages, no Celery component starts."""
    import importlib

    from celery import Celery

    worker_check = _healthcheck_text(_service(compose, "airflow-worker"))
    app_path = re.search(r"celery --app (\S+) inspect ping", worker_check)
    assert app_path, worker_check
    module_name, _, attribute = app_path[1].rpartition(".")
    assert isinstance(getattr(importlib.import_module(module_name), attribute), Celery)


def test_start_order_follows_healthchecks_and_init(compose):
    for name in (*AIRFLOW_SERVICES, "flower", "gir-demo-init"):
        depends_on = _service(compose, name)["depends_on"]
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name
        assert depends_on["airflow-init"]["condition"] == "service_completed_successfully", name
    worker = _service(compose, "airflow-worker")["depends_on"]
    assert worker["airflow-apiserver"]["condition"] == "service_healthy"
    init = _service(compose, "airflow-init")["depends_on"]
    assert init["postgres"]["condition"] == "service_healthy"
    assert "airflow-init" not in init


def test_init_migrates_creates_the_admin_and_the_pools(compose):
    init = _service(compose, "airflow-init")
    script = "\n".join(_argv(init["command"]))
    assert init["user"] == "0:0"
    lines = [line.strip() for line in script.splitlines()]
    assert "set -euo pipefail" in lines, "a failed step must fail the init, and so the whole start"
    # The script runs as root: an `id -u` it runs would print 0. The hint names the host's command instead.
    hints = [line for line in lines if "AIRFLOW_UID" in line and line.startswith("echo")]
    assert hints and all("$(id -u)" not in line and "$$(id -u)" not in line for line in hints), hints
    assert any("'id -u' prints on the host" in line for line in hints), hints
    migrate = lines.index("/entrypoint airflow db migrate")
    user = lines.index("_AIRFLOW_WWW_USER_CREATE=true /entrypoint airflow version")
    pools = lines.index("/entrypoint python -m include.gir_ops.bootstrap pools")
    assert migrate < user < pools
    # The service user of AIRFLOW_CONN_GIR_AIRFLOW_API (the DAGs' check_pools), FAB only, after the admin
    # (which makes FAB create its roles, User among them).
    api_user = lines.index("/entrypoint python -m include.gir_ops.bootstrap airflow-api-user")
    assert user < api_user < pools
    assert lines[api_user - 2] == 'if [[ -n "$${AIRFLOW_CONN_GIR_AIRFLOW_API}" ]]; then'
    env = _env(init)
    assert env["_AIRFLOW_WWW_USER_PASSWORD"].startswith("${_AIRFLOW_WWW_USER_PASSWORD:?")


# --- code mounts and imports -------------------------------------------------------------------------


def _mounts(service: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of the short-syntax volumes."""
    mounts: dict[str, tuple[str, str]] = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), "use the short volume syntax (source:target[:mode])"
        source, target, *mode = volume.split(":")
        mounts[target] = (source, mode[0] if mode else "rw")
    return mounts


def test_dags_plugins_and_include_are_mounted_read_only_and_importable(compose):
    for name in (*AIRFLOW_SERVICES, "airflow-init", "gir-demo-init"):
        service = _service(compose, name)
        mounts = _mounts(service)
        for folder in ("dags", "plugins", "include", "config"):
            assert mounts.get(f"{CONTAINER_ROOT}/{folder}") == (f"./{folder}", "ro"), (name, folder)
        assert mounts.get(f"{CONTAINER_ROOT}/logs", ("", ""))[0] == "./logs", name
        env = _env(service)
        assert CONTAINER_ROOT in env["PYTHONPATH"].split(":"), f"{name}: include.gir_ops is not importable"
        data_source, _ = mounts[env["GIR_DATA_DIR"]]
        assert data_source == "gir-data", name
    for folder in ("dags", "plugins", "include", "config"):
        # A fresh clone has only tracked files: an empty folder would not exist for the mount or COPY.
        assert any((REPO / folder).iterdir()), f"{folder}/ is empty: add a file so a clone has it"
    assert "gir-data" in compose["volumes"]


def test_gir_topology_is_required_and_the_demo_value_is_the_bundled_topology(compose):
    """No service falls back to the demo's topology: a stack without GIR_TOPOLOGY does not start."""
    from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH

    for name in (*AIRFLOW_SERVICES, "airflow-init", *DEMO_SERVICES):
        assert _env(_service(compose, name))["GIR_TOPOLOGY"] == "${GIR_TOPOLOGY:?set GIR_TOPOLOGY in .env}", (
            name
        )
    env = filled_env()
    del env["GIR_TOPOLOGY"]
    with pytest.raises(InterpolationError) as excinfo:
        interpolate(compose, env)
    assert {ref.name for ref in excinfo.value.missing} == {"GIR_TOPOLOGY"}
    # The value .env.example gives for the demo is the bundled topology, seen through the ./include mount.
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    assert f"GIR_TOPOLOGY={DEMO_TOPOLOGY}" in text
    assert REPO / DEMO_TOPOLOGY.removeprefix(f"{CONTAINER_ROOT}/") == DEFAULT_TOPOLOGY_PATH
    # Nor does the image carry a default: no GIR_TOPOLOGY in the Dockerfile, no topology in the build.
    assert "GIR_TOPOLOGY=" not in DOCKERFILE.read_text(encoding="utf-8")
    assert "include/config" in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()


# --- secrets -----------------------------------------------------------------------------------------


_SINGLE_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::\?[^}]*|:-)?\}$")


def test_no_secret_has_a_literal_value_or_a_default(compose):
    env = filled_env()
    for service_name, service in compose["services"].items():
        for key, value in _env(service).items():
            if key in URL_KEYS_WITH_CREDENTIALS:
                # Whatever the URL's shape, its password must be exactly the one .env gives.
                password = urlsplit(interpolate(value, env)).password
                expected = env[URL_KEYS_WITH_CREDENTIALS[key]]
                assert password == expected, f"{service_name}.{key}: password not from .env"
            elif SECRET_KEY_PATTERN.search(key):
                # Either required (`${VAR:?msg}`) or optional and empty (`${VAR:-}`): never a value.
                assert _SINGLE_REF.match(value), f"{service_name}.{key}={value!r} is not a bare ${{...}}"
    refs = variable_references(compose)
    for ref in refs:
        if ref.name in REQUIRED_VARIABLES:
            assert ref.op == ":?", f"{ref.where}: {ref.name} must be ${{{ref.name}:?...}}"
        if ref.name in DEMO_SECRETS or ref.name.startswith("AIRFLOW_CONN_"):
            assert (ref.op, ref.arg) == (":-", ""), f"{ref.where}: {ref.name} must be ${{{ref.name}:-}}"
    # Redis demands the password the broker URL sends.
    redis = _service(compose, "redis")
    assert "--requirepass" in " ".join(_argv(redis["command"]))
    assert _env(redis)["REDIS_PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"
    assert _env(redis)["REDISCLI_AUTH"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"


def test_secret_scan_flags_a_literal_secret(compose):
    """The scan above fails on the mistakes it is meant to catch."""
    leaked = copy.deepcopy(compose)
    leaked["services"]["airflow-worker"]["environment"]["AIRFLOW__CORE__FERNET_KEY"] = "x" * 43 + "="
    with pytest.raises(AssertionError, match="FERNET_KEY"):
        test_no_secret_has_a_literal_value_or_a_default(leaked)
    defaulted = copy.deepcopy(compose)
    defaulted["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "${POSTGRES_PASSWORD:-airflow}"
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        test_no_secret_has_a_literal_value_or_a_default(defaulted)
    in_url = copy.deepcopy(compose)
    in_url["services"]["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
        "postgresql+psycopg2://airflow:airflow@postgres/airflow"
    )
    with pytest.raises(AssertionError, match="SQL_ALCHEMY_CONN"):
        test_no_secret_has_a_literal_value_or_a_default(in_url)


def test_airflow_components_never_receive_the_gir_passwords(compose):
    """Credentials reach tasks through Airflow connections only; the demo passwords stay with the demo."""
    for name in (*AIRFLOW_SERVICES, "airflow-init", "flower"):
        assert not DEMO_SECRETS & set(_env(_service(compose, name))), name


def test_env_example_documents_every_variable_and_commits_no_secret(compose):
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    assigned, commented = parse_env_file(text)
    refs = variable_references(compose)
    referenced = {ref.name for ref in refs}
    required = {ref.name for ref in refs if ref.required}
    undocumented = referenced - set(assigned) - commented
    assert not undocumented, f"variables of docker-compose.yaml missing from .env.example: {undocumented}"
    assert required == REQUIRED_VARIABLES, (
        "update REQUIRED_SECRETS/REQUIRED_SETTINGS and .env.example together"
    )
    # A required variable is an assignment to fill in, and ships empty: a missing value stops Compose.
    for name in required:
        assert name in assigned, f".env.example must have a {name}= line"
        assert assigned[name] == "", f".env.example commits a value for {name}"
    for name in DEMO_SECRETS:
        assert assigned.get(name) == "", f".env.example must have an empty {name}= line"
    stale = set(assigned) - referenced
    assert not stale, f".env.example sets variables docker-compose.yaml never reads: {stale}"
    assert "Fernet.generate_key()" in text
    # Connection examples use the JSON form with schema https (the URI form loses https).
    for name in ("AIRFLOW_CONN_GIR_RWS_DC1", "AIRFLOW_CONN_GIR_RCS_KEYSTORE"):
        line = next(line for line in text.splitlines() if line.startswith(f"# {name}="))
        example = json.loads(line.partition("=")[2].strip().strip("'"))
        assert example["conn_type"] in ("http", "generic")
        if example["conn_type"] == "http":
            assert example["schema"] == "https"


def test_missing_secrets_stop_compose_and_name_each_variable(compose):
    """`cp .env.example .env` without filling it in must not start anything."""
    assigned, _ = parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))
    with pytest.raises(InterpolationError) as excinfo:
        interpolate(compose, assigned)
    assert {ref.name for ref in excinfo.value.missing} == REQUIRED_VARIABLES
    for ref in excinfo.value.missing:
        assert ref.name in ref.arg, f"{ref.where}: the error message should name {ref.name}"

    env = filled_env()
    resolved = interpolate(compose, env)
    worker_env = resolved["services"]["airflow-worker"]["environment"]
    assert worker_env["AIRFLOW__CORE__FERNET_KEY"] == env["AIRFLOW__CORE__FERNET_KEY"]
    db = urlsplit(worker_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (db.username, db.password, db.path) == ("airflow", env["POSTGRES_PASSWORD"], "/airflow")
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    # Optional connections stay empty, so Airflow falls through to the metadata DB.
    assert worker_env["AIRFLOW_CONN_GIR_RWS_DC1"] == ""


def test_each_variable_is_interpolated_the_same_way_everywhere(compose):
    """One variable, one meaning: a `:?` here and a default there would silently run without it."""
    by_name: dict[str, set[tuple[str | None, str]]] = {}
    for ref in variable_references(compose):
        by_name.setdefault(ref.name, set()).add((ref.op, ref.arg))
        if ref.op in (":?", "?"):
            assert ref.arg == f"set {ref.name} in .env", f"{ref.where}: message {ref.arg!r}"
    inconsistent = {name: forms for name, forms in by_name.items() if len(forms) > 1}
    assert not inconsistent, inconsistent


def test_empty_connection_variables_fall_through_to_the_metadata_db(monkeypatch):
    """Compose sets AIRFLOW_CONN_GIR_* to "" when .env leaves them out: Airflow must ignore them."""
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    monkeypatch.setenv("AIRFLOW_CONN_GIR_RWS_DC1", "")
    assert EnvironmentVariablesBackend().get_connection("gir_rws_dc1") is None
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIR_RWS_DC1",
        json.dumps({"conn_type": "http", "host": "rws-dc1.example.com", "schema": "https", "login": "ops"}),
    )
    conn = EnvironmentVariablesBackend().get_connection("gir_rws_dc1")
    assert (conn.host, conn.schema, conn.login) == ("rws-dc1.example.com", "https", "ops")


# --- demo profile ------------------------------------------------------------------------------------


def _simulator_ports(compose: Mapping[str, Any]) -> dict[str, int]:
    argv = _argv(_service(compose, "gir-simulator")["command"])
    ports = {}
    for index, arg in enumerate(argv):
        if arg == "--port":
            site, _, port = argv[index + 1].partition("=")
            ports[site] = int(port)
    return ports


def test_demo_profile_runs_the_simulator_for_every_site_of_the_topology(compose):
    from include.gir_ops.topology import load_topology

    topology = load_topology()
    for name in DEMO_SERVICES:
        assert _service(compose, name)["profiles"] == ["demo"], name
    simulator = _service(compose, "gir-simulator")
    argv = _argv(simulator["command"])
    assert argv[:4] == ["python", "-m", "include.gir_sim", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # reachable from the workers' containers
    ports = _simulator_ports(compose)
    assert sorted(ports) == sorted(topology.sites)
    health = _healthcheck_text(simulator)
    for port in ports.values():
        assert f"http://localhost:{port}/_sim/health" in health
        assert f"127.0.0.1:{port}:{port}" in simulator["ports"], "publish on loopback only"
    assert _env(simulator)["GIR_SIM_OPS_PASSWORD"] == "${GIR_SIM_OPS_PASSWORD:-}"

    demo_init = _argv(_service(compose, "gir-demo-init")["command"])
    assert demo_init[:4] == ["python", "-m", "include.gir_ops.bootstrap", "demo"]
    rws = dict(demo_init[i + 1].split("=", 1) for i, arg in enumerate(demo_init) if arg == "--rws")
    assert rws == {site: f"http://gir-simulator:{port}" for site, port in ports.items()}

    demo_data = _service(compose, "gir-demo-data")
    assert _argv(demo_data["command"]) == ["python", "-m", "include.gir_sim.demo_data"]
    worker_mounts = _mounts(_service(compose, "airflow-worker"))
    data_dir = _env(demo_data)["GIR_DATA_DIR"]
    assert _mounts(demo_data)[data_dir] == worker_mounts[data_dir], "demo data must land where tasks read"
    for name in ("gir-simulator", "gir-demo-data"):
        # The simulator never talks to Airflow: the image's entrypoint must not wait for the DB.
        assert _env(_service(compose, name))["CONNECTION_CHECK_MAX_COUNT"] == "0", name


def test_connection_variables_match_the_topology_conn_ids(compose):
    from include.gir_ops.topology import load_topology

    needed = {connection_variable(c) for c in needed_connection_ids(load_topology())}
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        env = _env(_service(compose, name))
        assert {key for key in env if key.startswith("AIRFLOW_CONN_")} == needed, name


# --- every profile, every referenced file, every Airflow setting -----------------------------------


def _profile_sets() -> list[tuple[str, ...]]:
    return [combo for size in range(len(PROFILES) + 1) for combo in itertools.combinations(PROFILES, size)]


def _active(resolved: Mapping[str, Any], profiles: tuple[str, ...]) -> dict[str, Any]:
    """The services `docker compose --profile ...` starts: those without profiles or with an active one."""
    return {
        name: service
        for name, service in resolved["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def test_compose_file_resolves_with_every_combination_of_profiles(compose, compose_schema):
    """What `docker compose [--profile X ...] config` would refuse: a dependency on a service the chosen
    profiles leave out, a volume no service declares, a model invalid after interpolation."""
    declared = set(compose.get("volumes") or {})
    resolved = interpolate(compose, filled_env())
    assert {p for s in compose["services"].values() for p in s.get("profiles", [])} == set(PROFILES)
    for profiles in _profile_sets():
        services = _active(resolved, profiles)
        for name, service in services.items():
            for dependency in service.get("depends_on") or {}:
                assert dependency in services, (
                    f"--profile {profiles}: {name} depends on inactive {dependency}"
                )
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if not source.startswith((".", "/")):
                    assert source in declared, f"{name}: named volume {source} is not declared"
        model = {**resolved, "services": services}
        assert _schema_errors(model, compose_schema) == [], profiles
    # The demo needs its three services and the whole Airflow stack.
    assert set(DEMO_SERVICES) | set(AIRFLOW_SERVICES) <= set(_active(resolved, ("demo",)))


def test_every_file_the_stack_references_exists_in_a_clone():
    """Bind-mount sources, build contexts and their Dockerfile, the Dockerfile's COPY sources."""
    compose_data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    tracked_ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    missing = []
    for name, service in compose_data["services"].items():
        build = service.get("build")
        if build:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (context / dockerfile).is_file():
                missing.append(f"{name}: build {context / dockerfile}")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                continue
            if source in RUNTIME_FOLDERS:
                assert f"{source.removeprefix('./')}/" in tracked_ignored, (
                    f"{source} is created at start, git-ignored"
                )
                continue
            if not (REPO / source).exists():
                missing.append(f"{name}: mount source {source}")
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            missing += [f"Dockerfile: COPY {s}" for s in sources if not (REPO / s).exists()]
    assert missing == []


def _airflow_config_variables(compose_data: Mapping[str, Any]) -> dict[str, str]:
    found = {}
    for name, service in compose_data["services"].items():
        for key in _env(service):
            if key.startswith("AIRFLOW__"):
                found.setdefault(key, f"docker-compose.yaml: {name}")
    assigned, commented = parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))
    for key in (*assigned, *commented):
        if key.startswith("AIRFLOW__"):
            found.setdefault(key, ".env.example")
    return found


def test_every_airflow_setting_exists_in_airflow_3_3(compose):
    """Each AIRFLOW__SECTION__OPTION names a setting of the installed Airflow 3.3.2 (core's config.yml and
    the installed providers' config): a misspelled one would be silently ignored at run time."""
    found = _airflow_config_variables(compose)
    assert "AIRFLOW__API_AUTH__JWT_ISSUER" in found and "AIRFLOW__CELERY__BROKER_URL" in found
    problems = [
        f"{where}: {reason}" for key, where in found.items() if (reason := unknown_config_variable(key))
    ]
    assert problems == []
    # The check is not vacuous: a typo is reported.
    assert unknown_config_variable("AIRFLOW__API_AUTH__JWT_ISSUERS")
    assert unknown_config_variable("AIRFLOW__CELERY__WORKER_CONCURENCY")


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    ignored = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines() if line.strip()}
    for entry in (".env", ".venv", ".local", ".git", "logs", "test-artifacts", "config"):
        assert entry in ignored, entry
    for needed in ("requirements.txt", "include", "dags", "plugins"):
        assert needed not in ignored, needed


def test_compose_builds_the_image_every_service_runs(compose):
    images = set()
    for name, service in compose["services"].items():
        if name in ("postgres", "redis"):
            continue
        assert service.get("build") == ".", f"{name}: the project image is built, never pulled"
        images.add(service["image"])
    assert len(images) == 1, images


# --- the commands the containers run -----------------------------------------------------------------


def _repo_path(container_path: str) -> str:
    return str(REPO / container_path.removeprefix(f"{CONTAINER_ROOT}/"))


def _command_env(compose: Mapping[str, Any], service_name: str, **extra: str) -> dict[str, str]:
    """The service's GIR environment, with container paths mapped to this checkout."""
    service_env = interpolate(_env(_service(compose, service_name)), filled_env())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "GIR_"))}
    env["PYTHONPATH"] = str(REPO)
    env["GIR_TOPOLOGY"] = _repo_path(service_env["GIR_TOPOLOGY"])
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _python(argv: list[str]) -> list[str]:
    assert argv[0] == "python", argv
    return [sys.executable, *argv[1:]]


def test_simulator_command_serves_every_dc_behind_the_ops_password(compose):
    argv = _argv(_service(compose, "gir-simulator")["command"])
    ports = {site: _free_port() for site in _simulator_ports(compose)}
    # Same command, but loopback and free ports: this machine is shared.
    argv[argv.index("--host") + 1] = "127.0.0.1"
    for index, arg in enumerate(argv):
        if arg == "--port":
            site = argv[index + 1].partition("=")[0]
            argv[index + 1] = f"{site}={ports[site]}"
    password = secrets.token_urlsafe(12)
    process = subprocess.Popen(
        _python(argv),
        env=_command_env(compose, "gir-simulator", GIR_SIM_OPS_PASSWORD=password),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        announced = []
        deadline = time.monotonic() + 60
        while len(announced) < len(ports) and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            if "RWS at" in line:
                announced.append(line.strip())
        assert len(announced) == len(ports), f"simulator did not start: {announced}"
        for site, port in ports.items():
            base = f"http://127.0.0.1:{port}"
            assert requests.get(f"{base}/_sim/health", timeout=10).json() == {"site": site, "ok": True}
            ops = f"{base}/api/v2/ops/contact-centers"
            assert requests.get(ops, timeout=10).status_code == 401
            assert requests.get(ops, auth=("ops", password), timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            process.stdout.close()
    assert returncode == 0


def test_demo_commands_refuse_to_start_without_their_password(compose):
    """Why `${GIR_*_PASSWORD:-}` is safe in the compose file: the programs name what is missing."""
    cases = {
        "gir-simulator": "GIR_SIM_OPS_PASSWORD",
        "gir-demo-data": "GIR_RCS_KEYSTORE_PASSWORD",
    }
    for service_name, variable in cases.items():
        argv = _argv(_service(compose, service_name)["command"])
        result = subprocess.run(
            _python(argv),
            env=_command_env(compose, service_name, **{variable: ""}),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2, (service_name, result.stdout, result.stderr)
        assert variable in result.stderr, service_name


def test_demo_data_command_writes_backups_and_keystores(compose, tmp_path):
    from include.gir_ops.topology import load_topology

    argv = _argv(_service(compose, "gir-demo-data")["command"])
    env = _command_env(
        compose,
        "gir-demo-data",
        GIR_DATA_DIR=str(tmp_path),
        GIR_RCS_KEYSTORE_PASSWORD=secrets.token_urlsafe(12),
    )
    result = subprocess.run(
        _python(argv), env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert env["GIR_RCS_KEYSTORE_PASSWORD"] not in result.stdout + result.stderr
    keystores = sorted(tmp_path.glob("*/rcs-*/keystore.p12"))
    topology_rcs = [name for name, _ in load_topology(env["GIR_TOPOLOGY"]).rcs_instances]
    assert len(keystores) == len(topology_rcs) > 0
    backups = [p for p in (tmp_path / "dc1" / "speechminer" / "index-backup").iterdir() if p.is_dir()]
    # Complete backups as SpeechMiner leaves them: files, and no completion marker (it writes none; the
    # topology's shipping.ready_marker is off).
    assert backups and all(any(folder.iterdir()) for folder in backups)
    assert not any((folder / "_BACKUP_COMPLETE").exists() for folder in backups)


@pytest.fixture
def no_gir_pools_or_connections(airflow_db: Path) -> Iterator[None]:
    """The topology's pools and connections absent before and after (the session DB is shared)."""
    from airflow.models import Pool
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from include.gir_ops.bootstrap import pool_specs
    from include.gir_ops.topology import load_topology

    topology = load_topology(REPO / "include" / "config" / "topology.yaml")
    pools = [spec.name for spec in pool_specs(topology)]
    conns = [dc.rws_conn_id for dc in topology.data_centers]
    conns += [rcs.password_conn_id for _, rcs in topology.rcs_instances if rcs.password_conn_id]

    def purge() -> None:
        with create_session() as session:
            session.execute(delete(Pool).where(Pool.pool.in_(pools)))
            session.execute(delete(Connection).where(Connection.conn_id.in_(conns)))

    purge()
    yield
    purge()


@pytest.mark.usefixtures("no_gir_pools_or_connections")
def test_init_and_demo_init_commands_create_pools_and_connections(compose):
    from airflow.models import Pool
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from include.gir_ops.topology import load_topology

    script = "\n".join(_argv(_service(compose, "airflow-init")["command"]))
    init_commands = [
        shlex.split(line.strip())[1:]  # drop /entrypoint
        for line in script.splitlines()
        if "python -m include." in line
    ]
    assert init_commands == [
        # With FAB and AIRFLOW_CONN_GIR_AIRFLOW_API set: the read-only user of the DAGs' check_pools.
        ["python", "-m", "include.gir_ops.bootstrap", "airflow-api-user"],
        ["python", "-m", "include.gir_ops.bootstrap", "pools"],
    ]
    demo_init = _argv(_service(compose, "gir-demo-init")["command"])
    ops_password = secrets.token_urlsafe(12)
    keystore_password = secrets.token_urlsafe(12)

    env = _command_env(compose, "airflow-init")
    result = subprocess.run(
        _python(init_commands[1]), env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    topology = load_topology(env["GIR_TOPOLOGY"])
    expected_pools = {dc.rws_pool: dc.reindex.pool_slots for dc in topology.reindex_data_centers}
    expected_pools["gir_rws_switch"] = 1
    with create_session() as session:
        pools = {p.pool: p.slots for p in session.scalars(select(Pool).where(Pool.pool.in_(expected_pools)))}
    assert pools == expected_pools

    # Without the demo passwords `bootstrap demo` refuses (exit 2) and names them.
    refused = subprocess.run(
        _python(demo_init),
        env=_command_env(compose, "gir-demo-init"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 2
    assert "GIR_SIM_OPS_PASSWORD" in refused.stderr and "GIR_RCS_KEYSTORE_PASSWORD" in refused.stderr

    env = _command_env(
        compose,
        "gir-demo-init",
        GIR_SIM_OPS_PASSWORD=ops_password,
        GIR_RCS_KEYSTORE_PASSWORD=keystore_password,
    )
    result = subprocess.run(
        _python(demo_init), env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert ops_password not in result.stdout + result.stderr
    ports = _simulator_ports(compose)
    with create_session() as session:
        for dc in topology.data_centers:
            conn = session.scalar(select(Connection).where(Connection.conn_id == dc.rws_conn_id))
            assert conn is not None, dc.rws_conn_id
            assert (conn.conn_type, conn.schema, conn.host, conn.port) == (
                "http",
                "http",
                "gir-simulator",
                ports[dc.site],
            )
            assert (conn.login, conn.password) == ("ops", ops_password)
        keystore = session.scalar(select(Connection).where(Connection.conn_id == "gir_rcs_keystore"))
        assert keystore is not None and keystore.password == keystore_password
