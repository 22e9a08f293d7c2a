"""deploy/helm/values.yaml, checked without a cluster: the chart's own schema, and what the DAGs need.

The schema is the official chart's values.schema.json for the chart version the values file names
(tests/deploy/data/airflow-helm-chart-<version>/, Apache-2.0, see its README). What the DAGs need is
derived from the code and the example topology (tests/deploy/deploy_facts.py), not listed by hand.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_facts import (
    EXAMPLE_TOPOLOGY,
    connection_variable,
    is_under,
    needed_connection_ids,
    needed_gir_variables,
    topology_file_paths,
    unknown_config_option,
    unknown_config_variable,
)

REPO = Path(__file__).resolve().parents[2]
VALUES_FILE = REPO / "deploy" / "helm" / "values.yaml"
HELM_README = REPO / "deploy" / "helm" / "README.md"
DATA = Path(__file__).resolve().parent / "data"
CHART_LINE = re.compile(r"^#\s+Chart:\s+apache-airflow/airflow (?P<version>\d+\.\d+\.\d+)\b", re.MULTILINE)
VARIANT = re.compile(
    r"^# >>> KubernetesExecutor variant\n(?P<body>.*?)^# <<< KubernetesExecutor variant$", re.S | re.M
)


def _chart_version() -> str:
    match = CHART_LINE.search(VALUES_FILE.read_text(encoding="utf-8"))
    assert match, f"{VALUES_FILE.name} names no chart version ('#   Chart:   apache-airflow/airflow X.Y.Z')"
    return match["version"]


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chart_schema() -> dict[str, Any]:
    folder = DATA / f"airflow-helm-chart-{_chart_version()}"
    assert folder.is_dir(), f"no schema for chart {_chart_version()} in {DATA} (see its README to add one)"
    return json.loads((folder / "values.schema.json").read_text(encoding="utf-8"))


def _schema_errors(document: Any, schema: dict[str, Any]) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator_class(schema).iter_errors(document)
    )


def _variant(values_text: str) -> dict[str, Any]:
    """The KubernetesExecutor variant as the comment tells the operator to apply it: its top-level keys
    replace those of the file; its anchors refer to the lists defined above it."""
    match = VARIANT.search(values_text)
    assert match, "the commented KubernetesExecutor variant (between its >>> and <<< markers) is missing"
    block = "\n".join(line.removeprefix("# ").removeprefix("#") for line in match["body"].splitlines())
    return yaml.safe_load(values_text + "\n" + block)


# --- the chart's schema -----------------------------------------------------------------------------


def test_the_schema_is_the_official_chart_s_with_its_license():
    folder = DATA / f"airflow-helm-chart-{_chart_version()}"
    chart = yaml.safe_load((folder / "Chart.yaml").read_text(encoding="utf-8"))
    assert (chart["name"], chart["version"]) == ("airflow", _chart_version())
    assert "Apache License" in (folder / "LICENSE").read_text(encoding="utf-8")
    assert "The Apache Software Foundation" in (folder / "NOTICE").read_text(encoding="utf-8")
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert _chart_version() in readme and "Apache License 2.0" in readme
    # The install commands pin the same chart version.
    for text in (VALUES_FILE.read_text(encoding="utf-8"), HELM_README.read_text(encoding="utf-8")):
        assert f"--version {_chart_version()}" in text


def test_values_validate_against_the_chart_schema(values, chart_schema):
    assert _schema_errors(values, chart_schema) == []


def test_kubernetes_executor_variant_validates_against_the_chart_schema(values, chart_schema):
    variant = _variant(VALUES_FILE.read_text(encoding="utf-8"))
    assert variant["executor"] == "KubernetesExecutor"
    assert _schema_errors(variant, chart_schema) == []
    kubernetes = variant["workers"]["kubernetes"]
    celery = values["workers"]["celery"]
    assert kubernetes["extraVolumes"] == celery["extraVolumes"]
    assert kubernetes["extraVolumeMounts"] == celery["extraVolumeMounts"]
    assert variant["redis"]["enabled"] is False and "brokerUrlSecretName" not in variant["data"]
    assert variant["cleanup"]["enabled"] is True


def test_schema_check_catches_mistakes_the_chart_would_reject(values, chart_schema):
    broken = copy.deepcopy(values)
    broken["triggerer"]["replicaz"] = 3
    broken["pgbouncer"]["enabled"] = "yes"
    broken["data"]["metadataSecret"] = "gir-ops-metadata-db"
    errors = _schema_errors(broken, chart_schema)
    assert any(e.startswith("triggerer") and "replicaz" in e for e in errors), errors
    assert any(e.startswith("pgbouncer/enabled") for e in errors), errors
    assert any(e.startswith("data") and "metadataSecret" in e for e in errors), errors


# --- what the DAGs need -----------------------------------------------------------------------------


def _env_names(values: dict[str, Any]) -> set[str]:
    return {item["name"] for item in values.get("env", [])} | {
        item["envName"] for item in values.get("secret", [])
    }


def test_every_gir_variable_and_connection_the_dags_need_is_provided(values):
    from include.gir_ops.topology import load_topology

    topology = load_topology(EXAMPLE_TOPOLOGY)
    needed = needed_gir_variables() | {connection_variable(c) for c in needed_connection_ids(topology)}
    assert "GIR_TOPOLOGY" in needed and "GIR_DATA_DIR" in needed  # the derivation found what it must
    assert not needed - _env_names(values), (
        f"not provided by {VALUES_FILE.name}: {needed - _env_names(values)}"
    )
    # Connections come from a Secret, by key, never as a value.
    plain = {item["name"] for item in values.get("env", [])}
    for item in values["secret"]:
        if item["envName"].startswith("AIRFLOW_CONN_"):
            assert item["envName"] not in plain
            assert item["secretName"] and item["secretKey"], item


def test_topology_comes_from_a_config_map_mounted_where_gir_topology_points(values):
    env = {item["name"]: item["value"] for item in values["env"]}
    topology_file = Path(env["GIR_TOPOLOGY"])
    config_maps = {v["name"]: v["configMap"]["name"] for v in values["volumes"] if "configMap" in v}
    mounts = [m for m in values["volumeMounts"] if m["name"] in config_maps]
    assert any(Path(m["mountPath"]) == topology_file.parent and m.get("readOnly") for m in mounts), mounts
    # The ConfigMap's key is the file name; the README creates it with that key.
    readme = HELM_README.read_text(encoding="utf-8")
    (config_map,) = config_maps.values()
    assert re.search(
        rf"kubectl (-n \S+ )?create configmap {config_map} --from-file={topology_file.name}=", readme
    )


def test_workers_and_triggerer_mount_every_path_the_topology_names(values, monkeypatch):
    from include.gir_ops.topology import load_topology

    env = {item["name"]: item["value"] for item in values["env"]}
    for name, value in env.items():
        if name.startswith("GIR_") and name != "GIR_TOPOLOGY":
            monkeypatch.setenv(name, value)  # the topology as the pods resolve it
    topology = load_topology(EXAMPLE_TOPOLOGY)
    paths = topology_file_paths(topology)
    assert paths, "the example topology names no file:// path"
    # The example's paths start with ${GIR_DATA_DIR}; the values give it the same value the URLs resolved to.
    assert all(is_under(path, env["GIR_DATA_DIR"]) for path in paths.values()), paths

    def mounts(component: dict[str, Any]) -> list[dict[str, Any]]:
        volumes = {v["name"] for v in component["extraVolumes"]}
        for mount in component["extraVolumeMounts"]:
            assert mount["name"] in volumes, f"mount of an undefined volume {mount['name']}"
        return component["extraVolumeMounts"]

    def covering(path: str, component_mounts: list[dict[str, Any]]) -> dict[str, Any] | None:
        candidates = [m for m in component_mounts if is_under(path, m["mountPath"])]
        return max(candidates, key=lambda m: len(m["mountPath"]), default=None)

    worker_mounts = mounts(values["workers"]["celery"])
    for where, path in paths.items():
        mount = covering(path, worker_mounts)
        assert mount, f"workers: no volume mounted at {path} ({where})"
    # What the DAGs write must be writable: the shipped replica, the failover audit log.
    written = {w: p for w, p in paths.items() if w in ("shipping.destination", "failover.audit_log")}
    assert set(written) == {"shipping.destination", "failover.audit_log"}
    for where, path in written.items():
        assert not covering(path, worker_mounts).get("readOnly"), f"workers: {path} ({where}) is read-only"
    # The backup sensor defers: the triggerer reads the SpeechMiner trees.
    triggerer_mounts = mounts(values["triggerer"])
    for where, path in paths.items():
        if where.endswith("speechminer.index_backup") or where == "shipping.destination":
            assert covering(path, triggerer_mounts), f"triggerer: no volume mounted at {path} ({where})"


# --- secrets, database, broker ------------------------------------------------------------------------


def test_secrets_by_name_and_no_secret_in_the_values(values):
    for key in ("fernetKeySecretName", "jwtSecretName", "apiSecretKeySecretName"):
        assert values[key], key
    for key in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"):
        assert values.get(key) is None, f"{key}: a secret value in the values file"
    assert values["redis"]["passwordSecretName"] and values["redis"].get("password") is None
    data = values["data"]
    assert data["metadataSecretName"] and data["brokerUrlSecretName"]
    assert "metadataConnection" not in data and data.get("brokerUrl") is None
    assert values["postgresql"]["enabled"] is False  # external PostgreSQL
    assert values["createUserJob"].get("defaultUser") is None, "the admin password comes from a Secret"


def test_pgbouncer_in_front_of_the_external_database(values):
    pgbouncer = values["pgbouncer"]
    assert pgbouncer["enabled"] is True
    # With the connection in a Secret, the chart cannot write PgBouncer's config: it must be named too.
    assert pgbouncer["configSecretName"] and pgbouncer["metricsExporterSidecar"]["statsSecretName"]


def test_every_deployed_component_has_requests_and_limits(values, chart_schema):
    """Components: every top-level section of the chart's schema with `resources`, where deployed."""
    not_deployed_on_airflow_3 = {"webserver"}  # Airflow 2's UI; 3.x runs apiServer
    missing = []
    for name, spec in chart_schema["properties"].items():
        properties = spec.get("properties", {})
        if "resources" not in properties or name in not_deployed_on_airflow_3:
            continue
        section = values.get(name, {})
        if name == "workers":
            section = section.get("celery", {})
        elif name == "otelCollector":
            if not (section.get("metricsEnabled") or section.get("tracesEnabled")):
                continue
        elif not section.get("enabled", properties.get("enabled", {}).get("default", True)):
            continue
        resources = section.get("resources") or {}
        if not (resources.get("requests") and resources.get("limits")):
            missing.append(name)
        groomer = section.get("logGroomerSidecar")
        if groomer and groomer.get("enabled") and not (groomer.get("resources") or {}).get("limits"):
            missing.append(f"{name}.logGroomerSidecar")
    sidecar = values["pgbouncer"]["metricsExporterSidecar"].get("resources") or {}
    if not (sidecar.get("requests") and sidecar.get("limits")):
        missing.append("pgbouncer.metricsExporterSidecar")
    assert missing == []
    # The check covers the components that run here.
    assert {"apiServer", "scheduler", "dagProcessor", "triggerer", "workers", "pgbouncer", "redis"} <= {
        n for n, s in chart_schema["properties"].items() if "resources" in s.get("properties", {})
    }


# --- logs, cleanup, pools -----------------------------------------------------------------------------


def test_logs_persist_and_are_groomed_and_the_database_is_cleaned(values):
    remote = str(values["config"].get("logging", {}).get("remote_logging", "False")).lower() == "true"
    assert values["logs"]["persistence"]["enabled"] or remote
    for name in ("scheduler", "dagProcessor", "triggerer"):
        assert values[name]["logGroomerSidecar"]["enabled"] is True, name
    worker_groomer = values["workers"]["celery"]["logGroomerSidecar"]
    assert worker_groomer["enabled"] is True
    # Without worker persistence the groomer only runs when it does not require it.
    assert (
        values["workers"]["celery"]["persistence"]["enabled"] or worker_groomer["requirePersistence"] is False
    )
    cleanup = values["databaseCleanup"]
    assert cleanup["enabled"] is True and cleanup["retentionDays"] >= 30 and cleanup["schedule"]


def test_a_post_install_hook_creates_the_pools_after_the_migration(values):
    from include.gir_ops.pools import BOOTSTRAP_POOLS_COMMAND

    job = values["migrateDatabaseJob"]
    assert job["enabled"] is True and job["useHelmHooks"] is True  # post-install,post-upgrade hook
    assert values["images"]["useDefaultImageForMigration"] is False, "the pools need the project image"
    shell, flag, script = job["args"]
    assert (shell, flag) == ("bash", "-c")
    lines = [line.strip() for line in script.splitlines()]
    assert lines[0] == "set -e"
    assert lines.index("airflow db migrate") < lines.index(f"exec {BOOTSTRAP_POOLS_COMMAND}")
    bash = shutil.which("bash")
    assert bash
    syntax = subprocess.run([bash, "-n", "-c", script], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    # The job reads the topology like every component: global env and volumes apply to it.
    assert job.get("applyCustomEnv", True) is True


def test_create_user_job_takes_the_admin_from_a_secret_and_creates_the_api_user(values):
    job = values["createUserJob"]
    from_secret = {e["name"] for e in job["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"GIR_ADMIN_USERNAME", "GIR_ADMIN_PASSWORD"} <= from_secret
    script = job["args"][2]
    assert '--password "${GIR_ADMIN_PASSWORD}"' in script
    assert script.strip().endswith("exec python -m include.gir_ops.bootstrap airflow-api-user")
    syntax = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr


# --- Airflow settings ---------------------------------------------------------------------------------


def test_every_airflow_setting_in_the_values_exists_in_airflow_3_3(values):
    problems = [
        f"config.{section}.{option}: {reason}"
        for section, options in values["config"].items()
        for option in options
        if (reason := unknown_config_option(section, option))
    ]
    for name in _env_names(values):
        if name.startswith("AIRFLOW__") and (reason := unknown_config_variable(name)):
            problems.append(reason)
    assert problems == []
    assert values["config"]["api_auth"]["jwt_issuer"]
    assert values["executor"] == "CeleryExecutor"
    assert values["airflowVersion"] == "3.3.2"


def test_config_check_catches_a_misspelled_setting():
    assert unknown_config_option("api_auth", "jwt_issuer") is None
    assert unknown_config_option("celery", "worker_concurrency") is None  # from the celery provider
    assert unknown_config_option("api_auth", "jwt_isuer")
    assert unknown_config_option("apiauth", "jwt_issuer")
    assert unknown_config_variable("AIRFLOW__CORE__FERNET_KEY_CMD") is None
    assert unknown_config_variable("AIRFLOW__CORE__FERNETKEY")
