"""Verification after the POST: the verdicts, the deferred trigger against the simulator, its classpaths."""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import pytest

from include.gir_ops.failover.operators import VerifyEServicesSiteOperator
from include.gir_ops.failover.triggers import (
    NOT_SWITCHED,
    UNVERIFIED,
    VERIFIED,
    EServicesSiteTrigger,
    judge_verification,
)
from tests.conftest import SimulatedGir
from tests.include.failover.failover_support import environment_id, obs, switch_client

# --- verification ----------------------------------------------------------------------------------------


def judge(observations: list[dict[str, Any]], elapsed: float) -> tuple[str, str] | None:
    return judge_verification(
        observations,
        target_site="DC2",
        elapsed_seconds=elapsed,
        dr_monitoring_delay_seconds=30,
        verify_margin_seconds=30,
    )


def test_verified_only_when_every_answering_rws_reports_the_target() -> None:
    assert judge([obs("DC1", "DC2"), obs("DC2", "DC2"), obs("DC3", None, ok=False)], 5)[0] == VERIFIED
    assert judge([obs("DC1", "DC2"), obs("DC2", "DC1")], 5) is None, "keep polling before the deadline"
    assert judge([obs("DC1", None, ok=False)], 5) is None


def test_not_switched_when_an_rws_still_reports_another_site_at_the_deadline() -> None:
    verdict = judge([obs("DC1", "DC1"), obs("DC2", "DC2")], 60)
    assert verdict is not None and verdict[0] == NOT_SWITCHED and "DC1 reports DC1" in verdict[1]


def test_unverified_after_the_delay_when_rws_reports_no_site() -> None:
    assert judge([obs("DC1", None), obs("DC2", None)], 29) is None
    verdict = judge([obs("DC1", None), obs("DC2", None)], 30)
    assert verdict is not None and verdict[0] == UNVERIFIED and "does not report eServicesSite" in verdict[1]


def test_unverified_at_the_deadline_when_some_are_silent_or_none_answers() -> None:
    assert judge([obs("DC1", "DC2"), obs("DC2", None)], 59) is None
    assert judge([obs("DC1", "DC2"), obs("DC2", None)], 60)[0] == UNVERIFIED
    assert judge([obs("DC1", None, ok=False)], 60)[0] == UNVERIFIED


def run_trigger(gir: SimulatedGir, *, switched_at: float, delay: float = 0.5, margin: float = 1.0) -> Any:
    trigger = EServicesSiteTrigger(
        rws_nodes=[{"site": dc.site, "conn_id": dc.rws_conn_id} for dc in gir.topology.data_centers],
        environment_id=environment_id(gir),
        target_site="DC2",
        switched_at=switched_at,
        dr_monitoring_delay_seconds=delay,
        verify_margin_seconds=margin,
        poll_interval_seconds=0.2,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "include.gir_ops.failover.triggers.EServicesSiteTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs, "trigger arguments must be plain JSON"
    assert gir.ops_password not in json.dumps(kwargs)

    async def first_event() -> Any:
        async for event in EServicesSiteTrigger(**kwargs).run():
            return event.payload
        return None

    return asyncio.run(asyncio.wait_for(first_event(), timeout=30))


def test_trigger_verifies_a_real_switch_and_only_reads(gir_factory: Any) -> None:
    import time

    gir = gir_factory(dr_monitoring_delay_seconds=0.3)
    switch_client(gir).multimedia_switch(environment_id(gir), "DC2")
    gir.simulator.stop_site("DC3")
    event = run_trigger(gir, switched_at=time.time())
    assert event["outcome"] == VERIFIED
    assert {a["site"] for a in event["answers"] if not a["ok"]} >= {"DC3"}
    assert all(
        r["method"] == "GET" for site in ("DC1", "DC2") for r in gir.simulator.state.requests(site)[1:]
    )


def test_trigger_reports_not_switched_and_unverified(gir_factory: Any) -> None:
    import time

    gir = gir_factory(dr_monitoring_delay_seconds=0.3)
    event = run_trigger(gir, switched_at=time.time())
    assert event["outcome"] == NOT_SWITCHED and event["elapsed_seconds"] >= 1.5
    gir.configure_environment(report_site=False)
    event = run_trigger(gir, switched_at=time.time())
    assert event["outcome"] == UNVERIFIED and 0.5 <= event["elapsed_seconds"] < 1.5


def test_verify_skips_when_nothing_was_posted() -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    class Ti:
        def xcom_pull(self, **_: Any) -> Any:
            return {"posted": False, "detail": "DRY RUN"}

    verify = VerifyEServicesSiteOperator(
        task_id="verify_switch",
        switch_task_id="switch_eservices_site",
        rws_nodes=[],
        dr_monitoring_delay_seconds=30,
        verify_margin_seconds=30,
    )
    with pytest.raises(AirflowSkipException, match="DRY RUN"):
        verify.execute({"ti": Ti()})


def import_string(classpath: str) -> Any:
    """What the triggerer does with a stored classpath."""
    module, name = classpath.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_a_trigger_stored_under_the_old_classpath_still_loads_and_reserializes_under_the_new_one() -> None:
    """The triggerer re-creates a deferred verify_switch from its stored classpath and kwargs: a deployment
    upgraded while a verification was deferred stored ``include.gir_ops.failover_triggers...``."""
    stored = import_string("include.gir_ops.failover_triggers.EServicesSiteTrigger")
    assert stored is EServicesSiteTrigger
    trigger = stored(
        rws_nodes=[{"site": "DC1", "conn_id": "gir_rws_dc1"}],
        environment_id="env-1",
        target_site="DC2",
        switched_at=1.0,
        dr_monitoring_delay_seconds=30,
        verify_margin_seconds=30,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "include.gir_ops.failover.triggers.EServicesSiteTrigger"
    assert import_string(classpath) is EServicesSiteTrigger
    assert kwargs["environment_id"] == "env-1" and kwargs["target_site"] == "DC2"
