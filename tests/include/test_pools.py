"""check_pools: which pools it checks, what it tells the operator, which failures Airflow retries."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import requests_mock as requests_mock_module

from include.gir_ops import pools
from include.gir_ops.airflow_api import AirflowApiUnreachable
from include.gir_ops.bootstrap import pool_specs
from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH, load_topology

BASE = "http://127.0.0.1:18080"
PASSWORD = "api-Pa55-never-shown-Km3"


def _task(task_id: str, pool: str) -> Any:
    return SimpleNamespace(task_id=task_id, pool=pool)


def _context(*tasks: Any, dag_id: str = "gir_es_reindex_dc2") -> dict[str, Any]:
    return {"dag": SimpleNamespace(dag_id=dag_id, tasks=list(tasks))}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker) -> Any:
    monkeypatch.setenv("GIR_TOPOLOGY", str(DEFAULT_TOPOLOGY_PATH))
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIR_AIRFLOW_API",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": 18080,
                "login": "gir_pools_reader",
                "password": PASSWORD,
            }
        ),
    )
    requests_mock.post(f"{BASE}/auth/token", status_code=201, json={"access_token": "t0ken"})
    return requests_mock


def test_the_pools_of_the_dags_tasks_without_default_pool() -> None:
    tasks = [
        _task("check_pools", "default_pool"),
        _task("plan", "gir_rws_dc2"),
        _task("send", "gir_rws_dc2"),
        _task("switch", "gir_rws_switch"),
    ]
    assert pools.pools_used(tasks) == ["gir_rws_dc2", "gir_rws_switch"]
    assert pools.pools_used([_task("check_pools", "default_pool")]) == []


def test_the_message_names_each_missing_pool_and_both_ways_to_create_it() -> None:
    specs = {spec.name: (spec.slots, spec.description) for spec in pool_specs(load_topology())}
    message = pools.missing_pools_message("gir_eservices_failover", ["gir_rws_switch", "custom_pool"], specs)
    assert message.splitlines() == [
        "Airflow pool(s) missing: gir_rws_switch, custom_pool. The tasks of gir_eservices_failover in them "
        "would never be scheduled (the run would stay running with no error), so this run stops here, "
        "before anything is sent.",
        "Create every pool of the topology (safe to re-run; an existing pool keeps its size):",
        "  python -m include.gir_ops.bootstrap pools",
        "or by hand:",
        '  airflow pools set gir_rws_switch 1 "One eServices multimedia switch POST at a time across all '
        'failover runs (managed by include.gir_ops.bootstrap)"',
        '  airflow pools set custom_pool 1 "used by gir_eservices_failover"',
        "then clear this task or trigger the DAG again.",
    ]


def test_a_missing_pool_fails_without_retry(api: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    api.get(f"{BASE}/api/v2/pools/gir_rws_dc2", status_code=404, json={"detail": "not found"})
    with pytest.raises(AirflowFailException) as caught:
        pools.check_pools.function(**_context(_task("plan", "gir_rws_dc2"), _task("send", "gir_rws_dc2")))
    message = str(caught.value)
    assert message.startswith("Airflow pool(s) missing: gir_rws_dc2. The tasks of gir_es_reindex_dc2")
    assert "  python -m include.gir_ops.bootstrap pools" in message
    assert '  airflow pools set gir_rws_dc2 1 "Concurrent forceIndex POSTs to the RWS of DC2' in message
    assert [r.url for r in api.request_history].count(f"{BASE}/api/v2/pools/gir_rws_dc2") == 1


def test_existing_pools_pass_and_are_returned(api: Any) -> None:
    for name in ("gir_rws_dc2", "gir_rws_switch"):
        api.get(f"{BASE}/api/v2/pools/{name}", json={"name": name, "slots": 1})
    checked = pools.check_pools.function(
        **_context(
            _task("send", "gir_rws_dc2"), _task("switch", "gir_rws_switch"), _task("c", "default_pool")
        )
    )
    assert checked == ["gir_rws_dc2", "gir_rws_switch"]


def test_a_dag_without_project_pools_asks_nothing(api: Any) -> None:
    assert pools.check_pools.function(**_context(_task("check_pools", "default_pool"))) == []
    assert api.call_count == 0


def test_a_refused_login_fails_without_retry_and_hides_the_password(api: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    api.post(f"{BASE}/auth/token", status_code=401, json={"detail": "Invalid credentials"})
    with pytest.raises(AirflowFailException) as caught:
        pools.check_pools.function(**_context(_task("plan", "gir_rws_dc2")))
    assert str(caught.value).startswith("cannot check the pools gir_rws_dc2: the Airflow API at")
    assert "refused the login 'gir_pools_reader'" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_an_unreachable_api_server_is_left_to_airflows_retries(api: Any) -> None:
    import requests

    api.post(f"{BASE}/auth/token", exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(AirflowApiUnreachable):  # not AirflowFailException: the task's retries apply
        pools.check_pools.function(**_context(_task("plan", "gir_rws_dc2")))


def test_the_task_runs_in_default_pool_and_is_retried() -> None:
    """In the DC's pool it would never run when that pool is missing, which is what it checks."""
    from airflow.sdk import DAG

    with DAG("probe", schedule=None, default_args={"pool": "gir_rws_dc2"}) as dag:
        pools.check_pools()
    task = dag.get_task(pools.CHECK_POOLS_TASK_ID)
    assert task.pool == "default_pool"
    assert task.retries >= 2
