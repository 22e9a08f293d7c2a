"""Comparing with the reference, with real PKCS12 files from the simulator's generator.

Each instance ends in exactly one state: match, drift (saying what differs), or not_compared when the
reference itself cannot be read; expiring certificates are warnings and expired ones are only listed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from include.gir_ops.keystore.model import DRIFT, MATCH, MISSING, NOT_COMPARED, UNREADABLE
from include.gir_ops.keystore.report import failure_message
from include.gir_ops.shared import format_size
from include.gir_ops.topology import Topology, parse_topology
from include.gir_sim.demo_data import (
    CURRENT_ALIAS,
    DRIFT_ALIAS,
    EXPIRED_ALIAS,
    EXPIRING_ALIAS,
    drift_keystore,
    generate_keystores,
    keystore_paths,
)
from tests.include.keystore.keystore_support import INSTANCES, PASSWORD, row_of, run, topology_for

# --- green --------------------------------------------------------------------------------------------


def test_all_identical_is_green_and_lists_aliases(topology: Topology, caplog: Any) -> None:
    paths = generate_keystores(topology, PASSWORD)
    caplog.set_level(logging.INFO)
    report = run(topology)

    assert report.ok
    assert report.states == dict.fromkeys(INSTANCES, MATCH)
    assert report.reference == "rcs-dc1-a"
    assert failure_message(report.to_dict()) is None
    digest = hashlib.sha256(paths["rcs-dc1-a"].read_bytes()).hexdigest()
    for row in report.results:
        assert row.sha256 == digest
        assert row.fingerprint_prefix == digest[:12]
        assert row.size == paths["rcs-dc1-a"].stat().st_size
        assert row.opened
        assert {c.alias for c in row.certificates} == {CURRENT_ALIAS, EXPIRED_ALIAS}
    # The expired certificate is kept for old recordings: information, not a warning, not an error.
    assert report.warnings == []
    assert len(report.expired_kept) == 1
    assert EXPIRED_ALIAS in report.expired_kept[0]
    assert "kept for old recordings" in report.expired_kept[0]
    assert "expired, kept for old recordings" in row_of(report, "rcs-dc2-a").detail
    # The table and the JSON are in the log; the JSON round-trips.
    assert "rcs-dc3-a  DC3  match" in caplog.text
    assert "RCS keystore report JSON" in caplog.text
    assert json.loads(report.to_json())["states"] == report.states


def test_expiring_certificate_is_a_warning_and_stays_green(topology: Topology, caplog: Any) -> None:
    generate_keystores(topology, PASSWORD, expiring_in_days=10)
    caplog.set_level(logging.INFO)
    report = run(topology)

    assert report.ok
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert EXPIRING_ALIAS in warning
    assert "in 10 day(s)" in warning
    assert all(name in warning for name in INSTANCES)  # listed once, naming every instance it is on
    expiring = next(c for c in row_of(report, "rcs-dc1-a").certificates if c.alias == EXPIRING_ALIAS)
    assert expiring.expiry == "expiring"
    assert expiring.days_left == 10
    assert report.asset_extra()["warnings"] == report.warnings
    assert any(r.levelno == logging.WARNING and EXPIRING_ALIAS in r.getMessage() for r in caplog.records)


def test_expiry_window_is_configurable(tmp_path: Path) -> None:
    topology = topology_for(tmp_path, expiry_warning_days=5)
    generate_keystores(topology, PASSWORD, expiring_in_days=10)
    report = run(topology)
    assert report.ok
    assert report.warnings == []
    assert "1 expiring soon" not in row_of(report, "rcs-dc1-a").detail


# --- red ----------------------------------------------------------------------------------------------


def test_drift_names_the_instance_bytes_and_aliases(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    report = run(topology)

    assert not report.ok
    assert report.states == {
        "rcs-dc1-a": MATCH,
        "rcs-dc1-b": MATCH,
        "rcs-dc2-a": DRIFT,
        "rcs-dc3-a": MATCH,
    }
    row = row_of(report, "rcs-dc2-a")
    assert row.site == "DC2"
    ref_size, size = paths["rcs-dc1-a"].stat().st_size, paths["rcs-dc2-a"].stat().st_size
    # Sizes as every report of the project writes them (shared.format_size): exact for keystore sizes, so
    # two keystores a few bytes apart never read the same.
    assert f"bytes differ (size {format_size(size)} vs {format_size(ref_size)} on reference" in row.detail
    assert re.search(rf"^bytes differ \(size {size} B vs {ref_size} B on reference, sha256 ", row.detail)
    assert row.sha256 and row.sha256[:12] in row.detail
    assert f"alias missing: {CURRENT_ALIAS}" in row.detail
    assert f"alias added: {DRIFT_ALIAS}" in row.detail
    assert EXPIRED_ALIAS not in row.detail  # the shared entry is not reported as a difference

    message = failure_message(report.to_dict())
    assert message is not None
    assert "rcs-dc2-a (DC2): drift: bytes differ" in message
    assert "rcs-dc1-b" not in message
    assert "1 of 4" in message


def test_certificate_changed_under_the_same_alias(topology: Topology) -> None:
    """Same alias names, other certificate: the detail says which certificate changed."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    from include.gir_sim import demo_data

    generate_keystores(topology, PASSWORD)
    path = keystore_paths(topology)["rcs-dc3-a"]
    now = datetime.now(UTC)
    store = pkcs12.load_pkcs12(path.read_bytes(), PASSWORD.encode())
    renewed = demo_data._certificate(CURRENT_ALIAS, now, now.replace(year=now.year + 2))
    path.write_bytes(demo_data._serialize(CURRENT_ALIAS, renewed, store.additional_certs, PASSWORD))

    row = row_of(run(topology), "rcs-dc3-a")
    assert row.state == DRIFT
    assert f"certificate changed: {CURRENT_ALIAS}" in row.detail
    assert "alias missing" not in row.detail
    assert "alias added" not in row.detail


def test_drift_made_after_the_fact(topology: Topology) -> None:
    generate_keystores(topology, PASSWORD)
    drift_keystore(topology, "rcs-dc1-b", PASSWORD)
    report = run(topology)
    assert report.states["rcs-dc1-b"] == DRIFT
    assert report.not_matching == [row_of(report, "rcs-dc1-b")]


# --- the reference ------------------------------------------------------------------------------------


def test_reference_missing_is_a_clear_failure(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    paths["rcs-dc1-a"].unlink()
    paths["rcs-dc3-a"].unlink()
    report = run(topology)

    assert not report.ok
    assert report.reference_error and "reference instance rcs-dc1-a is missing" in report.reference_error
    assert report.states == {
        "rcs-dc1-a": MISSING,
        "rcs-dc1-b": NOT_COMPARED,  # readable, but there is nothing to compare it with
        "rcs-dc2-a": NOT_COMPARED,
        "rcs-dc3-a": MISSING,
    }
    assert report.summary().startswith("FAILED: nothing to compare against")
    message = failure_message(report.to_dict()) or ""
    assert "Nothing to compare against: reference instance rcs-dc1-a is missing" in message
    assert "rcs-dc3-a (DC3): missing" in message
    assert "Not compared (no reference): rcs-dc1-b, rcs-dc2-a." in message


def test_reference_unreadable_is_a_clear_failure(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    paths["rcs-dc1-a"].write_bytes(paths["rcs-dc1-a"].read_bytes()[:100])
    report = run(topology)
    assert report.reference_error and "is unreadable (truncated" in report.reference_error
    assert report.states["rcs-dc1-a"] == UNREADABLE
    assert report.states["rcs-dc2-a"] == NOT_COMPARED
    assert "Nothing to compare against" in (failure_message(report.to_dict()) or "")


def test_configured_reference_in_a_second_dc(tmp_path: Path) -> None:
    topology = topology_for(tmp_path, reference="rcs-dc2-a")
    generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    report = run(topology)

    assert report.reference == "rcs-dc2-a"
    assert report.states == {
        "rcs-dc1-a": DRIFT,
        "rcs-dc1-b": DRIFT,
        "rcs-dc2-a": MATCH,
        "rcs-dc3-a": DRIFT,
    }
    assert row_of(report, "rcs-dc2-a").detail.startswith("reference")
    assert f"alias added: {CURRENT_ALIAS}" in row_of(report, "rcs-dc3-a").detail
    assert f"alias missing: {DRIFT_ALIAS}" in row_of(report, "rcs-dc3-a").detail


def test_no_rcs_instances_fails_clearly(tmp_path: Path) -> None:
    topology = parse_topology("primary_site: DC1\ndata_centers:\n  - site: DC1\n", "empty")
    report = run(topology)
    assert not report.ok
    assert report.results == []
    assert "nothing to compare against" in report.summary()


# --- the report ----------------------------------------------------------------------------------------


def test_report_table_and_asset_extra(topology: Topology) -> None:
    generate_keystores(topology, PASSWORD, drift=["rcs-dc3-a"])
    report = run(topology)
    lines = report.table().splitlines()
    assert lines[0].split() == ["instance", "DC", "state", "fingerprint", "detail"]
    assert len(lines) == 2 + len(INSTANCES)
    assert lines[5].startswith("rcs-dc3-a  DC3  drift ")
    assert row_of(report, "rcs-dc3-a").fingerprint_prefix in lines[5]

    extra = report.asset_extra()
    assert set(extra) >= {"ok", "checked_at", "reference", "states", "warnings"}
    assert extra["ok"] is False
    assert extra["states"]["rcs-dc3-a"] == DRIFT
    json.dumps(report.to_dict())  # JSON-serialisable as an XCom
