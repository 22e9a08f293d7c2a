"""gir_eservices_failover in an Airflow whose pools were never created.

Before check_pools, the switch task (pool gir_rws_switch) sat unscheduled forever after the approval was
given, and the run stayed ``running`` with no message. Now the run fails at its first task, names the pool
and the command that creates it, and nobody is asked to approve anything.

Kept apart from test_failover_dag.py on purpose: no human answers here, so the run must end on its own
(the timeout mark turns a run that waits for an approval into a failure instead of a hang).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops import shared
from include.gir_ops.failover import spec as failover_spec
from tests.conftest import DEFAULT_TOPOLOGY, REPO_ROOT, SimulatedGir, parse_dags
from tests.dags.failover_dag_support import fast_failover_gir

pytestmark = pytest.mark.usefixtures("airflow_api")


@pytest.fixture
def failover_gir(gir_factory: Callable[..., SimulatedGir], tmp_path: Path) -> SimulatedGir:
    return fast_failover_gir(gir_factory, tmp_path, [{"id": "approver", "name": "On-call approver"}])


@pytest.fixture
def without_switch_pool(airflow_api: Any) -> Iterator[None]:
    from airflow.models import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from include.gir_ops.bootstrap import ensure_pools
    from include.gir_ops.topology import load_topology

    with create_session() as session:
        session.execute(delete(Pool).where(Pool.pool == shared.RWS_SWITCH_POOL))
    yield
    ensure_pools(load_topology(DEFAULT_TOPOLOGY))


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("without_switch_pool")
def test_a_missing_switch_pool_fails_the_run_before_anyone_is_asked(
    failover_gir: SimulatedGir, airflow_db: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bag = parse_dags(REPO_ROOT / "dags" / "gir_eservices_failover.py")
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[failover_spec.DAG_ID]

    dag_run = dag.test(run_conf={"target_site": "DC2", "reason": "DC1 Interaction Server down since 02:10"})

    assert dag_run.state == "failed"
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    check = tis["check_pools"]
    assert (check.state, check.try_number) == ("failed", 1)
    assert tis[failover_spec.APPROVE_FAILOVER].state == "upstream_failed"  # nobody was asked
    assert tis[failover_spec.SWITCH].state == "upstream_failed"
    output = capfd.readouterr().out
    assert "Airflow pool(s) missing: gir_rws_switch. The tasks of gir_eservices_failover in them" in output
    assert "python -m include.gir_ops.bootstrap pools" in output
    assert 'airflow pools set gir_rws_switch 1 "One eServices multimedia switch POST at a time' in output
    posts = [r for site in failover_gir.topology.sites for r in failover_gir.simulator.state.requests(site)]
    assert [r for r in posts if r["method"] == "POST"] == []  # no multimedia-switch, nothing at all
