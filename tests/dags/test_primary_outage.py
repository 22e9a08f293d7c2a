"""The other DAGs while the primary DC is lost: its RWS stopped (the simulator's DC1 down) and its shares
gone from the workers (DC1's folders removed), as during a failover to DC2.

What an on-call engineer must see: "primary unreachable" naming the DC and what was tried, one failure
per run (no retry storm), the backup DC's own work going on, and a keystore check that compares against
the DC whose Interaction Server is current instead of being red for the whole outage.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from include.gir_ops.keystore.reference import choose_reference
from include.gir_sim.demo_data import generate_index_backups, generate_keystores, local_path
from tests.conftest import SimulatedGir

SMALL = 128 * 1024


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The reachability probe's 5 s / 10 s backoff shortened; its attempts stay."""
    from include.gir_ops import rws
    from include.gir_ops.rws import RetryPolicy

    monkeypatch.setattr(rws, "REACHABILITY_PROBE", RetryPolicy(attempts=3, initial_backoff_seconds=0.01))
    caplog.set_level(logging.INFO)


def _run(dag: Any, **kwargs: Any) -> Any:
    for task in dag.tasks:  # Airflow's retries stay on; only their delay goes
        task.retry_delay = timedelta(0)
    return dag.test(**kwargs)


def _tis(dag_run: Any) -> dict[tuple[str, int], Any]:
    return {(ti.task_id, ti.map_index): ti for ti in dag_run.get_task_instances()}


def _output(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err + caplog.text


@pytest.fixture
def outage(gir_factory: Callable[..., SimulatedGir], airflow_api: Any) -> SimulatedGir:
    """DC1 (primary) and DC2 re-index; DC1's RWS is stopped and RWS reports DC2 as the current site."""
    from include.gir_ops.bootstrap import ensure_pools

    gir = gir_factory({"data_centers": _with_dc1_reindex()})
    topology = gir.topology
    ensure_pools(topology)  # gir_rws_dc1 too
    generate_keystores(topology, gir.keystore_password)
    assert topology.shipping is not None
    generate_index_backups(
        local_path(topology.site("DC1").speechminer.index_backup or ""), days=1, total_bytes_per_backup=SMALL
    )
    local_path(topology.shipping.destination).mkdir(parents=True, exist_ok=True)
    # The failover happened: RWS uses DC2's Interaction Server; then DC1 was lost.
    import requests

    requests.post(f"{gir.url('DC2')}/_sim/environment", json={"current_site": "DC2"}, timeout=10)
    gir.simulator.stop_site("DC1")
    return gir


def _with_dc1_reindex() -> list[dict[str, Any]]:
    from tests.conftest import default_topology_dict

    dcs = default_topology_dict()["data_centers"]
    dcs[0]["reindex"] = {"enabled": True, "schedule": "0 2 * * *"}
    return dcs


def _lose_dc1_shares(gir: SimulatedGir) -> None:
    """DC1's storage is gone from this worker: its folders (the "mount points") disappear."""
    shutil.rmtree(local_path(gir.topology.site("DC1").speechminer.index_backup or "").parent.parent)


def test_reindex_of_the_lost_primary_fails_once_naming_it_while_the_backup_dc_reindexes(
    outage: SimulatedGir,
    load_dag: Callable[[str], Any],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    window = {"from": "2026-11-18T00:00:00Z", "to": "2026-11-19T00:00:00Z"}
    primary = _run(load_dag("gir_es_reindex_dc1"), logical_date=None, run_conf=window)
    assert primary.state == "failed"
    tis = _tis(primary)
    assert (tis[("plan", -1)].state, tis[("plan", -1)].try_number) == ("failed", 1)
    assert tis[("send", -1)].state == "upstream_failed"
    text = _output(capsys, caplog)
    assert "primary unreachable: RWS DC1 did not answer GET /api/v2/ops/contact-centers" in text
    assert "through connection 'gir_rws_dc1' (3 attempt(s))" in text
    assert "connection refused or host unknown" in text
    assert "During a failover away from DC1 this is expected and not retried" in text

    backup = _run(load_dag("gir_es_reindex_dc2"), logical_date=None, run_conf=window)
    assert backup.state == "success"
    assert len(outage.posts("DC2", "/contact-centers/")) == 4  # 2 contact centers x 2 kinds, one window


def test_shipping_reports_the_primary_unreachable_and_the_stale_alarm_says_why(
    outage: SimulatedGir,
    load_dag: Callable[[str], Any],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _lose_dc1_shares(outage)
    dag_run = _run(load_dag("gir_speechminer_backup_ship"))
    assert dag_run.state == "failed"
    tis = _tis(dag_run)
    wait = tis[("wait_for_backup", -1)]
    assert (wait.state, wait.try_number) == ("failed", 1)  # at once, no retry storm
    assert tis[("copy", -1)].state == "upstream_failed"
    assert tis[("freshness", -1)].state == "failed"
    text = _output(capsys, caplog)
    source = local_path(outage.topology.site("DC1").speechminer.index_backup or "")
    assert (
        "primary unreachable: the SpeechMiner backup source of DC1 cannot be reached from this worker" in text
    )
    assert f"tried to list file://{source}" in text
    assert "the share is not mounted on this worker" in text
    assert "Nothing was shipped" in text and "Not retried" in text
    # The stale alarm: no verified copy at DC2, the source unreadable (not "missing file"), which step failed.
    assert "no verified SpeechMiner backup at DC2" in text
    assert (
        "- the source (DC1) cannot be read from this worker: the share is not mounted on this worker" in text
    )
    assert "- the step that failed in this run: wait_for_backup (its log says why)" in text


def test_the_keystore_check_compares_against_the_current_dc_during_the_outage(
    outage: SimulatedGir,
    load_dag: Callable[[str], Any],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _lose_dc1_shares(outage)
    dag_run = _run(load_dag("gir_rcs_keystore_check"))
    report = _xcom(dag_run, "check_replication")
    assert report["reference"] == "rcs-dc2-a"
    assert report["reference_reason"].startswith(
        "rcs-dc2-a: the first RCS of DC2, whose Interaction Server is current "
        "(RWS DC2 reports eServicesSite DC2)"
    )
    assert report["reference_error"] is None, "not 'nothing to compare against' for the whole outage"
    assert report["states"] == {
        "rcs-dc1-a": "missing",
        "rcs-dc1-b": "missing",
        "rcs-dc2-a": "match",
        "rcs-dc3-a": "match",
    }
    details = {item["instance"]: item["detail"] for item in report["instances"]}
    assert details["rcs-dc1-a"].startswith("the share is not mounted on this worker")
    # The run is red for what is really missing, and names it.
    assert dag_run.state == "failed"
    assert "rcs-dc1-a (DC1): missing: the share is not mounted" in _output(capsys, caplog)


def test_a_run_can_name_its_reference_and_without_a_reported_site_the_configured_one_stays(
    outage: SimulatedGir, load_dag: Callable[[str], Any]
) -> None:
    dag_run = _run(load_dag("gir_rcs_keystore_check"), run_conf={"reference": "rcs-dc3-a"})
    report = _xcom(dag_run, "check_replication")
    assert report["reference"] == "rcs-dc3-a"
    assert report["reference_reason"] == "rcs-dc3-a: chosen for this run (param reference)"

    import requests

    requests.post(f"{outage.url('DC2')}/_sim/environment", json={"report_site": False}, timeout=10)
    dag_run = _run(load_dag("gir_rcs_keystore_check"))
    report = _xcom(dag_run, "check_replication")
    assert report["reference"] == "rcs-dc1-a"
    assert (
        "the configured reference; the current eServices site is unknown (DC1: RwsUnreachable;"
        in (report["reference_reason"])
    )


def _xcom(dag_run: Any, task_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key="return_value")
            .one()
        )
        value = row.value
    return json.loads(value) if isinstance(value, str) else value


# --- the reference choice, unit ---------------------------------------------------------------------------


def test_the_reference_choice_and_the_readiness_probe_read_the_site_as_the_failover_does(
    gir_factory: Any,
) -> None:
    """One read-back for all (rws.eservices_site_of): with failover.site_field set, only that path counts."""
    from include.gir_ops.keystore.reference import current_eservices_site
    from include.gir_ops.readiness.probe import probe_rws

    field = "genesysEnvironment.eServicesSite"
    gir = gir_factory({"failover": {"site_field": field}})
    primary = gir.topology.site(gir.topology.primary_site)
    assert probe_rws(primary, field).eservices_site == primary.site  # GWS's nested answer
    assert (
        current_eservices_site(gir.topology)[1] == f"RWS {primary.site} reports eServicesSite {primary.site}"
    )

    gir.configure_environment(site_format="top-level")  # RWS no longer answers at that path
    assert probe_rws(primary, field).eservices_site is None
    assert probe_rws(primary, None).eservices_site == primary.site
    site, reason = current_eservices_site(gir.topology)  # the simulated RWS nodes share one answer form
    assert site is None and "DC1: no eServicesSite in its answer" in reason, reason


def test_the_reference_follows_the_current_site_keeps_a_configured_one_there_and_checks_the_param() -> None:
    from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH, load_topology

    topology = load_topology(DEFAULT_TOPOLOGY_PATH)
    on = choose_reference(topology, None, current_site=lambda t: ("DC1", "RWS DC2 reports eServicesSite DC1"))
    assert on.instance == "rcs-dc1-a" and "in DC1, the current site" in on.reason
    moved = choose_reference(topology, None, current_site=lambda t: ("DC3", "RWS DC2 reports DC3"))
    assert moved.instance == "rcs-dc3-a"
    assert "the configured reference rcs-dc1-a is in another DC" in moved.reason
    with pytest.raises(ValueError, match=r"param reference 'rcs-x' is not an RCS instance"):
        choose_reference(topology, "rcs-x", current_site=lambda t: (None, ""))
