"""The topology is the edge of the system: every mistake must name the file, the key path and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from include.gir_ops.topology import (
    DEFAULT_TOPOLOGY_PATH,
    TopologyError,
    load_topology,
    parse_topology,
)

VALID = {
    "primary_site": "DC1",
    "data_centers": [
        {"site": "DC1", "rws": {"contact_centers": ["9a4c1e3f0b"]}},
        {"site": "DC2", "timezone": "Asia/Kolkata", "reindex": {"enabled": True}},
    ],
    "shipping": {
        "from_site": "DC1",
        "to_site": "DC2",
        "destination": "file:///tmp/replica",
    },
    "failover": {"approvers": [{"id": "approver"}], "audit_log": "file:///tmp/audit"},
}


def _with(path: tuple[str | int, ...], value: object) -> str:
    document = yaml.safe_load(yaml.safe_dump(VALID))
    document["data_centers"][0]["speechminer"] = {"index_backup": "file:///tmp/backup"}
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return yaml.safe_dump(document)


def test_default_topology_is_valid_and_describes_the_simulator() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY_PATH)
    assert topology.sites == ["DC1", "DC2", "DC3"]
    assert topology.primary_site == "DC1"
    assert [dc.site for dc in topology.reindex_data_centers] == ["DC2", "DC3"]
    assert topology.keystore_reference == "rcs-dc1-a"
    assert topology.site("DC2").rws_conn_id == "gir_rws_dc2"
    assert topology.site("DC1").rws_conn_id == "gir_rws_dc1"
    assert topology.site("DC3").rws_pool == "gir_rws_dc3"


def test_connection_ids_default_to_the_site_name() -> None:
    topology = parse_topology(_with(("primary_site",), "DC1"), "t.yaml")
    assert topology.site("DC2").rws_conn_id == "gir_rws_dc2"
    assert topology.site("DC1").rws.conn_id is None


def test_environment_references_are_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIR_DATA_DIR", "/srv/gir")
    text = _with(("shipping", "destination"), "file://${GIR_DATA_DIR}/replica")
    assert parse_topology(text, "t.yaml").shipping.destination == "file:///srv/gir/replica"
    monkeypatch.delenv("GIR_DATA_DIR")
    assert (
        parse_topology(
            _with(("shipping", "destination"), "file://${GIR_DATA_DIR:-/x}/r"), "t"
        ).shipping.destination
        == "file:///x/r"
    )
    with pytest.raises(
        TopologyError, match=r"shipping\.destination: environment variable GIR_DATA_DIR is not set"
    ):
        parse_topology(_with(("shipping", "destination"), "file://${GIR_DATA_DIR}/r"), "t")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("data_centers", 0, "colour"), "red", r"data_centers\[0\]\.colour: unknown key; fix: remove it"),
        (("data_centers", 1, "site"), "DC1", r"data_centers\[1\]\.site: duplicate site 'DC1'"),
        (("primary_site",), "DC9", r"primary_site: 'DC9' is not among the sites \(DC1, DC2\)"),
        (
            ("data_centers", 0, "rws", "contact_centers"),
            ["9a4c1e3f0b", "not-hex"],
            r"data_centers\[0\]\.rws\.contact_centers\[1\]: contact center ID 'not-hex' is not hexadecimal",
        ),
        (
            ("data_centers", 1, "timezone"),
            "Mars/Olympus",
            r"data_centers\[1\]\.timezone: timezone 'Mars/Olympus'",
        ),
        (
            ("data_centers", 1, "reindex", "schedule"),
            "every day at two",
            r"data_centers\[1\]\.reindex\.schedule: cron expression 'every day at two' does not parse",
        ),
        (
            ("data_centers", 1, "reindex", "max_window_hours"),
            0,
            r"data_centers\[1\]\.reindex\.max_window_hours: .*greater than or equal to 1",
        ),
        (
            ("shipping", "to_site"),
            "DC7",
            r"shipping\.to_site: site 'DC7' does not exist; use one of DC1, DC2",
        ),
        (("shipping", "from_site"), "DC8", r"shipping\.from_site: site 'DC8' does not exist"),
        (
            ("shipping", "destination"),
            "ftp://x/y",
            r"shipping\.destination: URL scheme 'ftp' is not supported",
        ),
        (("failover", "audit_log"), "/no/scheme", r"failover\.audit_log: '/no/scheme' is not a storage URL"),
        (("failover", "approvers"), [], r"failover\.approvers: .*fix: add at least one entry"),
        (
            ("keystore_check",),
            {"reference": "rcs-nowhere"},
            r"keystore_check\.reference: RCS instance 'rcs-nowhere'",
        ),
        (
            ("keystore_check",),
            {"parallel_reads": 0},
            r"keystore_check\.parallel_reads: .*greater than or equal to 1",
        ),
        (
            ("keystore_check",),
            {"parallel_reads": 1000},
            r"keystore_check\.parallel_reads: .*less than or equal to 256",
        ),
    ],
)
def test_bad_topology_names_file_key_and_fix(
    path: tuple[str | int, ...], value: object, expected: str
) -> None:
    with pytest.raises(TopologyError, match=r"^bad\.yaml: invalid topology:") as caught:
        parse_topology(_with(path, value), "bad.yaml")
    assert re.search(expected, str(caught.value)), str(caught.value)


def test_file_that_is_not_yaml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("primary_site: DC1\ndata_centers: [unclosed\n", encoding="utf-8")
    expected = rf"^{broken}: not valid YAML: line 3, column 1: .*fix the syntax"
    with pytest.raises(TopologyError, match=expected):
        load_topology(broken)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    listing = tmp_path / "list.yaml"
    listing.write_text("- DC1\n- DC2\n", encoding="utf-8")
    with pytest.raises(TopologyError, match=r"expected a YAML mapping with primary_site and data_centers"):
        load_topology(listing)


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"topology file not found; set GIR_TOPOLOGY"):
        load_topology(tmp_path / "nowhere.yaml")


def test_gir_topology_env_var_replaces_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = tmp_path / "custom.yaml"
    custom.write_text(_with(("primary_site",), "DC2"), encoding="utf-8")
    monkeypatch.setenv("GIR_TOPOLOGY", str(custom))
    assert load_topology().primary_site == "DC2"


def test_edited_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(_with(("primary_site",), "DC1"), encoding="utf-8")
    assert load_topology(path).primary_site == "DC1"
    path.write_text(_with(("primary_site",), "DC2") + "\n# edited\n", encoding="utf-8")
    assert load_topology(path).primary_site == "DC2"


def test_shipping_needs_a_source_backup_folder() -> None:
    document = yaml.safe_load(yaml.safe_dump(VALID))
    with pytest.raises(
        TopologyError, match=r"shipping\.from_site: site 'DC1' has no speechminer\.index_backup"
    ):
        parse_topology(yaml.safe_dump(document), "t.yaml")


def test_list_defaults_are_never_shared_between_data_centers() -> None:
    """``[]`` defaults (cheaper to parse than ``default_factory=list``) still give each DC its own list."""
    topology = parse_topology(_with(("data_centers", 0, "rws"), {}), "t.yaml")
    first, second = topology.data_centers
    assert first.rws.contact_centers == [] and second.rws.contact_centers == []
    assert first.rws.contact_centers is not second.rws.contact_centers
    first.rws.contact_centers.append("ab")
    assert second.rws.contact_centers == []


def test_reindex_kinds_follow_screen_recording() -> None:
    topology = parse_topology(_with(("data_centers", 0, "rws", "screen_recording"), True), "t.yaml")
    assert topology.data_centers[0].reindex_kinds == ("recordings", "screen-recordings")
    assert topology.data_centers[1].reindex_kinds == ("recordings",)
