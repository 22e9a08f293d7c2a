"""Links into the Airflow UI: the base URL is Airflow's own ``[api] base_url`` (what HITL links use too)."""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_BASE_URL = "http://localhost:8080"


def base_url() -> str:
    try:
        from airflow.configuration import conf

        value = conf.get("api", "base_url", fallback=None)
    except Exception:  # the UI link is a convenience; a message without Airflow config still goes out
        value = None
    return (value or DEFAULT_BASE_URL).rstrip("/")


def run_link(dag_id: str, run_id: str) -> str:
    return f"{base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def required_action_link(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The task's Required Action page, as ``HITLOperator.generate_link_to_ui`` builds it."""
    return (
        f"{run_link(dag_id, run_id)}/tasks/{quote(task_id, safe='')}/required_actions?map_index={map_index}"
    )
