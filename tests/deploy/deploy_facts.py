"""What a deployment must provide, derived from the code, the topology and the installed Airflow.

Shared by the compose, image and Helm tests, so each checks its deployment against the same facts instead
of a hand-kept list: the connections and GIR_* variables the DAGs read, the paths the topology names, and
the configuration names Airflow 3.3 (core and the installed providers) knows.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TOPOLOGY = REPO / "include" / "config" / "topology.yaml"

_CONFIG_VARIABLE = re.compile(r"^AIRFLOW__(?P<section>[A-Z0-9_]+?)__(?P<option>[A-Z0-9_]+)$")


def needed_connection_ids(topology: Any) -> set[str]:
    """Every Airflow connection a DAG of this topology reads: one RWS per DC, the keystore passwords,
    and Airflow's own REST API (check_pools, the failover's approval read-back)."""
    from include.gir_ops.airflow_api import AIRFLOW_API_CONN_ID

    conn_ids = {dc.rws_conn_id for dc in topology.data_centers}
    conn_ids |= {rcs.password_conn_id for _, rcs in topology.rcs_instances if rcs.password_conn_id}
    conn_ids.add(AIRFLOW_API_CONN_ID)
    return conn_ids


def connection_variable(conn_id: str) -> str:
    """The environment variable Airflow reads a connection from."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def needed_gir_variables(topology_path: Path = EXAMPLE_TOPOLOGY) -> set[str]:
    """GIR_TOPOLOGY (how the DAGs find the topology) and every ${GIR_*} the topology file reads, as the
    project's own topology parser reports them (comments and defaults handled as the DAGs see them)."""
    from include.gir_ops.topology import TOPOLOGY_ENV_VAR, _parse

    _, read = _parse(topology_path.read_text(encoding="utf-8"), str(topology_path))
    return {TOPOLOGY_ENV_VAR, *read}


def topology_file_paths(topology: Any) -> dict[str, str]:
    """Every local path the topology names (file:// URLs), by where it appears (e.g. shipping.destination)."""
    found: dict[str, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")
        elif isinstance(node, str) and node.startswith("file://"):
            found[where] = urlsplit(node).path

    walk(topology.model_dump(mode="json"), "")
    return found


def is_under(path: str, folder: str) -> bool:
    return Path(path) == Path(folder) or Path(folder) in Path(path).parents


@cache
def airflow_config_reference() -> dict[str, frozenset[str]]:
    """Section -> options of Airflow's config reference as the installed packages ship it: core's
    airflow/config_templates/config.yml plus the `config` of every installed provider (celery, ...)."""
    import airflow

    core = yaml.safe_load(
        (Path(airflow.__file__).parent / "config_templates" / "config.yml").read_text(encoding="utf-8")
    )
    sections: dict[str, set[str]] = {name: set(body.get("options") or {}) for name, body in core.items()}
    for entry_point in entry_points(group="apache_airflow_provider"):
        for name, body in (entry_point.load()().get("config") or {}).items():
            sections.setdefault(name, set()).update(body.get("options") or {})
    return {name: frozenset(options) for name, options in sections.items()}


def unknown_config_option(section: str, option: str) -> str | None:
    """Why ``[section] option`` is not an Airflow 3.3 setting, or None when it is."""
    reference = airflow_config_reference()
    if section not in reference:
        return f"no section [{section}] in Airflow's config reference"
    if option not in reference[section]:
        return f"no option {option!r} in [{section}]"
    return None


def unknown_config_variable(name: str) -> str | None:
    """Why the AIRFLOW__SECTION__OPTION[_CMD|_SECRET] variable is not an Airflow setting, or None."""
    match = _CONFIG_VARIABLE.match(name)
    if not match:
        return f"{name} is not of the form AIRFLOW__<SECTION>__<OPTION>"
    section, option = match["section"].lower(), match["option"].lower()
    reasons = []
    for candidate in (option, option.removesuffix("_cmd"), option.removesuffix("_secret")):
        reason = unknown_config_option(section, candidate)
        if reason is None:
            return None
        reasons.append(reason)
    return f"{name}: {reasons[0]}"
