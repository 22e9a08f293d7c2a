"""Engine test: an Airflow whose pools were never created.

On the real scheduler a task in a pool that does not exist is never scheduled: the failover's switch task
sat in ``scheduled`` forever after the approval was given, and the run stayed ``running`` with no message.
Now the run's first task (check_pools, in default_pool) asks the REST API as the read-only user of
connection gir_airflow_api and fails the run within seconds, naming the pool and the command that creates
it, before anyone is asked to approve.
"""

from __future__ import annotations

import pytest
from engine_stack import EngineStack
from test_engine import switch_posts

from include.gir_ops.bootstrap import pool_specs
from include.gir_ops.shared import RWS_SWITCH_POOL

pytestmark = pytest.mark.engine

FAILOVER_DAG = "gir_eservices_failover"


@pytest.mark.timeout(300)
def test_a_missing_switch_pool_fails_the_failover_at_once_with_the_command(engine: EngineStack) -> None:
    admin = engine.api("admin")
    spec = next(s for s in pool_specs(engine.topology()) if s.name == RWS_SWITCH_POOL)
    switches_before = len(switch_posts(engine))
    # As an operator would (204 has an empty body, which AirflowApi.request would try to decode).
    deleted = admin.session.delete(f"{admin.base_url}/api/v2/pools/{RWS_SWITCH_POOL}", timeout=30)
    assert deleted.status_code == 204, deleted.text
    try:
        run = admin.trigger(
            FAILOVER_DAG, {"target_site": "DC2", "reason": "engine test: the switch pool is missing"}
        )
        # Before the fix this run never finished (the switch waited for its pool); now it ends by itself.
        finished = admin.wait_run_finished(FAILOVER_DAG, run["dag_run_id"], timeout=120)
    finally:
        admin.request(
            "POST",
            "/pools",
            json={"name": spec.name, "slots": spec.slots, "description": spec.description},
            expect=(201,),
        )

    assert finished["state"] == "failed", admin.describe_run(FAILOVER_DAG, run["dag_run_id"])
    states = {ti["task_id"]: ti["state"] for ti in admin.task_instances(FAILOVER_DAG, run["dag_run_id"])}
    assert states["check_pools"] == "failed"
    assert states["approve_failover"] == "upstream_failed", "nobody may be asked to approve"
    assert states["switch_eservices_site"] == "upstream_failed"
    check = admin.task_instance(FAILOVER_DAG, run["dag_run_id"], "check_pools")
    assert check["try_number"] == 1, "a missing pool is not retried"
    log = admin.task_log(FAILOVER_DAG, run["dag_run_id"], "check_pools", 1)
    assert "Airflow pool(s) missing: gir_rws_switch" in log
    assert "python -m include.gir_ops.bootstrap pools" in log
    assert f'airflow pools set gir_rws_switch {spec.slots} "{spec.description}"' in log
    assert engine.airflow_api_password not in log
    assert len(switch_posts(engine)) == switches_before, "this run must not send a multimedia-switch"
