"""The follow-ups checklist per scenario, and the readiness items pre-flight shows before approval."""

from __future__ import annotations

from include.gir_ops.failover import checklist
from include.gir_ops.topology import load_topology


def test_screen_recording_peer_uri_is_a_readiness_item_before_a_whole_dc_failover() -> None:
    topology = load_topology()
    [item] = checklist.readiness_items(topology, "DC2", "data-center-lost")
    assert "screen-recording.htcc.peer_uri" in item and "BEFORE the outage" in item
    assert "WDE >= 8.5.118.10 and SRS >= 8.5.340.97" in item
    assert checklist.readiness_items(topology, "DC2", "interaction-server-down") == []
    assert checklist.readiness_items(topology, "DC1", "data-center-lost") == [], "not when switching back"


def test_the_checklist_names_the_newest_verified_backup_and_its_age() -> None:
    topology = load_topology()
    items = checklist.checklist(
        topology, "DC2", "data-center-lost", backup={"backup_name": "index-2026-11-19", "age_hours": 5.25}
    )
    assert [i.key for i in items] == [
        "wde_eservices_site",
        "srs_rws",
        "speechminer_index",
        "recording_processing",
        "switch_back_plan",
    ]
    speechminer = next(i for i in items if i.key == "speechminer_index")
    assert "newest verified backup index-2026-11-19, 5.2 h old at pre-flight" in speechminer.text
    none_yet = checklist.checklist(topology, "DC2", "data-center-lost", backup={"level": "unknown"})
    assert "pre-flight found none" in next(i for i in none_yet if i.key == "speechminer_index").text


def test_the_hitl_form_has_one_answer_per_item() -> None:
    topology = load_topology()
    items = checklist.checklist(topology, "DC1", "interaction-server-down")
    params = checklist.checklist_params(items)
    assert list(params) == ["wde_eservices_site", "recording_processing"]
    assert params["wde_eservices_site"].value == "not done"
    assert params["wde_eservices_site"].schema["enum"] == ["done", "not done", "not applicable"]
