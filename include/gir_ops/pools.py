"""``check_pools``: a run fails at once, with the fix, when a pool its tasks need does not exist.

A task in a pool that does not exist is never scheduled: the run stays ``running`` forever with no error
(for the failover, after the approval was given). That happens when the DAGs are copied into an Airflow
whose pools were never created. So each DAG that uses a project pool starts with this task, which runs in
``default_pool`` (always there), reads the pools of the running DAG's tasks and asks whether each exists.

Task code may not use the ORM (Airflow 3) and the Execution API has no pool lookup, so the question goes
to Airflow's public REST API through ``include.gir_ops.airflow_api`` (connection ``gir_airflow_api``).

Imported by DAG files while they are parsed: nothing but ``airflow.sdk`` here; the client, the topology
and the bootstrap's pool specs are imported when the task runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import task

CHECK_POOLS_TASK_ID = "check_pools"
DEFAULT_POOL = "default_pool"
BOOTSTRAP_POOLS_COMMAND = "python -m include.gir_ops.bootstrap pools"

CHECK_POOLS_DOC = """
Checks, before anything else runs, that every Airflow pool this DAG's tasks use exists (a task in a
missing pool is never scheduled: the run would stay `running` forever with no error). Runs in
`default_pool`; asks Airflow's REST API (`GET /api/v2/pools/{name}`) through the connection
`gir_airflow_api` (a user that may read pools). A missing pool, or a missing or refused connection, fails
it at once, without retry, naming what is missing and the command that creates it; an API server that is
down or answers 5xx is retried.
"""


def pools_used(tasks: Iterable[Any]) -> list[str]:
    """The pools the tasks run in, sorted, without ``default_pool`` (which always exists)."""
    return sorted({str(t.pool) for t in tasks if getattr(t, "pool", None) and t.pool != DEFAULT_POOL})


def missing_pools_message(dag_id: str, missing: list[str], specs: Mapping[str, tuple[int, str]]) -> str:
    """What the operator reads: which pools, why it matters, and the commands that create them.

    ``specs`` maps a pool name to (slots, description) as the topology intends (bootstrap.pool_specs).
    """
    by_hand = []
    for name in missing:
        slots, description = specs.get(name, (1, f"used by {dag_id}"))
        by_hand.append(f'  airflow pools set {name} {slots} "{description}"')
    return "\n".join(
        [
            f"Airflow pool(s) missing: {', '.join(missing)}. The tasks of {dag_id} in them would never be "
            "scheduled (the run would stay running with no error), so this run stops here, before "
            "anything is sent.",
            "Create every pool of the topology (safe to re-run; an existing pool keeps its size):",
            f"  {BOOTSTRAP_POOLS_COMMAND}",
            "or by hand:",
            *by_hand,
            "then clear this task or trigger the DAG again.",
        ]
    )


def _topology_pool_specs() -> dict[str, tuple[int, str]]:
    from include.gir_ops.bootstrap import pool_specs
    from include.gir_ops.topology import TopologyError, load_topology

    try:
        return {spec.name: (spec.slots, spec.description) for spec in pool_specs(load_topology())}
    except TopologyError:  # the DAG parsed, so this is unlikely; the message then uses 1 slot
        return {}


@task(
    task_id=CHECK_POOLS_TASK_ID,
    pool=DEFAULT_POOL,
    pool_slots=1,
    retries=3,
    retry_delay=timedelta(seconds=30),
    execution_timeout=timedelta(minutes=2),
    doc_md=CHECK_POOLS_DOC,
)
def check_pools(conn_id: str | None = None, **context: Any) -> list[str]:
    """Fail fast (AirflowFailException) on a missing pool or an unusable connection; return the pools."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.gir_ops.airflow_api import AIRFLOW_API_CONN_ID, AirflowApiClient, AirflowApiError

    dag = context["dag"]
    names = pools_used(dag.tasks)
    if not names:
        return []
    try:
        with AirflowApiClient(conn_id or AIRFLOW_API_CONN_ID) as client:
            missing = client.missing_pools(names)
    except AirflowApiError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(f"cannot check the pools {', '.join(names)}: {exc}") from None
    if missing:
        raise AirflowFailException(missing_pools_message(dag.dag_id, missing, _topology_pool_specs()))
    return names
