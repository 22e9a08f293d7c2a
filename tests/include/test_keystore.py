"""The keystore replication check, without a scheduler: real PKCS12 files from the simulator's generator.

Each instance must end in exactly one state, a read error must never look like drift, and nothing but
digests and metadata may leave the check (no password, no keystore bytes, in logs or in the report).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from airflow.sdk.exceptions import AirflowNotFoundException

from include.gir_ops import keystore
from include.gir_ops.keystore import (
    DRIFT,
    MATCH,
    MISSING,
    NOT_COMPARED,
    UNREADABLE,
    check_replication,
    der_length_problem,
    failure_message,
    open_keystore,
)
from include.gir_ops.simulator.demo_data import (
    CURRENT_ALIAS,
    DRIFT_ALIAS,
    EXPIRED_ALIAS,
    EXPIRING_ALIAS,
    drift_keystore,
    generate_keystores,
    keystore_paths,
)
from include.gir_ops.topology import Topology, parse_topology

PASSWORD = "Rcs-Keystore-Pässwort-7f3a"
CONN = "gir_rcs_keystore"
INSTANCES = ("rcs-dc1-a", "rcs-dc1-b", "rcs-dc2-a", "rcs-dc3-a")


def _topology(
    root: Path, *, reference: str | None = None, extra_rcs: str = "", expiry_warning_days: int = 30
) -> Topology:
    reference_line = f"  reference: {reference}\n" if reference else ""
    return parse_topology(
        f"""
primary_site: DC1
data_centers:
  - site: DC1
    rcs:
      - {{name: rcs-dc1-a, keystore: "file://{root}/dc1/rcs-a/keystore.p12", password_conn_id: {CONN}}}
      - {{name: rcs-dc1-b, keystore: "file://{root}/dc1/rcs-b/keystore.p12", password_conn_id: {CONN}}}
  - site: DC2
    timezone: Europe/Paris
    rcs:
      - {{name: rcs-dc2-a, keystore: "file://{root}/dc2/rcs-a/keystore.p12", password_conn_id: {CONN}}}
  - site: DC3
    timezone: Asia/Kolkata
    rcs:
      - {{name: rcs-dc3-a, keystore: "file://{root}/dc3/rcs-a/keystore.p12", password_conn_id: {CONN}}}
{extra_rcs}
keystore_check:
  expiry_warning_days: {expiry_warning_days}
{reference_line}""",
        "test-topology",
    )


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    return _topology(tmp_path)


def _passwords(mapping: dict[str, str] | None = None) -> Callable[[str], str | None]:
    known = mapping if mapping is not None else {CONN: PASSWORD}

    def get(conn_id: str) -> str | None:
        if conn_id not in known:
            raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")
        return known[conn_id]

    return get


def _run(topology: Topology, **kwargs: Any) -> keystore.KeystoreReport:
    kwargs.setdefault("get_password", _passwords())
    return check_replication(topology, **kwargs)


def _row(report: keystore.KeystoreReport, instance: str) -> keystore.InstanceResult:
    return next(r for r in report.results if r.instance == instance)


def _assert_no_secrets(text: str, paths: dict[str, Path], *passwords: str) -> None:
    for password in passwords:
        assert password not in text
    for path in paths.values():
        if path.is_file() and path.stat().st_size:
            data = path.read_bytes()
            encoded = base64.b64encode(data).decode()
            assert encoded not in text
            assert encoded[:40] not in text  # not even the start of it
            assert data.hex()[:64] not in text


# --- green --------------------------------------------------------------------------------------------


def test_all_identical_is_green_and_lists_aliases(topology: Topology, caplog: Any) -> None:
    paths = generate_keystores(topology, PASSWORD)
    caplog.set_level(logging.INFO)
    report = _run(topology)

    assert report.ok
    assert report.states == dict.fromkeys(INSTANCES, MATCH)
    assert report.reference == "rcs-dc1-a"
    assert failure_message(report.to_dict()) is None
    digest = keystore.hashlib.sha256(paths["rcs-dc1-a"].read_bytes()).hexdigest()
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
    assert "expired, kept for old recordings" in _row(report, "rcs-dc2-a").detail
    # The table and the JSON are in the log; the JSON round-trips.
    assert "rcs-dc3-a  DC3  match" in caplog.text
    assert "RCS keystore report JSON" in caplog.text
    assert json.loads(report.to_json())["states"] == report.states


def test_expiring_certificate_is_a_warning_and_stays_green(topology: Topology, caplog: Any) -> None:
    generate_keystores(topology, PASSWORD, expiring_in_days=10)
    caplog.set_level(logging.INFO)
    report = _run(topology)

    assert report.ok
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert EXPIRING_ALIAS in warning
    assert "in 10 day(s)" in warning
    assert all(name in warning for name in INSTANCES)  # listed once, naming every instance it is on
    expiring = next(c for c in _row(report, "rcs-dc1-a").certificates if c.alias == EXPIRING_ALIAS)
    assert expiring.expiry == "expiring"
    assert expiring.days_left == 10
    assert report.asset_extra()["warnings"] == report.warnings
    assert any(r.levelno == logging.WARNING and EXPIRING_ALIAS in r.getMessage() for r in caplog.records)


def test_expiry_window_is_configurable(tmp_path: Path) -> None:
    topology = _topology(tmp_path, expiry_warning_days=5)
    generate_keystores(topology, PASSWORD, expiring_in_days=10)
    report = _run(topology)
    assert report.ok
    assert report.warnings == []
    assert "1 expiring soon" not in _row(report, "rcs-dc1-a").detail


# --- red ----------------------------------------------------------------------------------------------


def test_drift_names_the_instance_bytes_and_aliases(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    report = _run(topology)

    assert not report.ok
    assert report.states == {
        "rcs-dc1-a": MATCH,
        "rcs-dc1-b": MATCH,
        "rcs-dc2-a": DRIFT,
        "rcs-dc3-a": MATCH,
    }
    row = _row(report, "rcs-dc2-a")
    assert row.site == "DC2"
    ref_size, size = paths["rcs-dc1-a"].stat().st_size, paths["rcs-dc2-a"].stat().st_size
    assert f"bytes differ (size {size} B vs {ref_size} B on reference" in row.detail
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

    from include.gir_ops.simulator import demo_data

    generate_keystores(topology, PASSWORD)
    path = keystore_paths(topology)["rcs-dc3-a"]
    now = datetime.now(UTC)
    store = pkcs12.load_pkcs12(path.read_bytes(), PASSWORD.encode())
    renewed = demo_data._certificate(CURRENT_ALIAS, now, now.replace(year=now.year + 2))
    path.write_bytes(demo_data._serialize(CURRENT_ALIAS, renewed, store.additional_certs, PASSWORD))

    row = _row(_run(topology), "rcs-dc3-a")
    assert row.state == DRIFT
    assert f"certificate changed: {CURRENT_ALIAS}" in row.detail
    assert "alias missing" not in row.detail
    assert "alias added" not in row.detail


def test_drift_made_after_the_fact(topology: Topology) -> None:
    generate_keystores(topology, PASSWORD)
    drift_keystore(topology, "rcs-dc1-b", PASSWORD)
    report = _run(topology)
    assert report.states["rcs-dc1-b"] == DRIFT
    assert report.not_matching == [_row(report, "rcs-dc1-b")]


def test_missing_keystore(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    paths["rcs-dc3-a"].unlink()
    report = _run(topology)

    row = _row(report, "rcs-dc3-a")
    assert row.state == MISSING
    assert row.fingerprint_prefix == "-"
    assert "file does not exist" in row.detail
    assert "keystore.p12" in row.detail
    assert report.states["rcs-dc1-b"] == MATCH
    assert "rcs-dc3-a (DC3): missing" in (failure_message(report.to_dict()) or "")


def _denying(url_part: str, error: OSError) -> Callable[[str], BinaryIO]:
    def opener(url: str) -> BinaryIO:
        if url_part in url:
            raise error
        return open_keystore(url)

    return opener


def test_permission_denied_is_unreadable_not_drift(topology: Topology) -> None:
    # Tests run as root, which chmod 000 does not stop: the storage layer raises instead.
    generate_keystores(topology, PASSWORD)
    opener = _denying("/dc2/rcs-a/", PermissionError(13, "Permission denied"))
    report = _run(topology, opener=opener)

    row = _row(report, "rcs-dc2-a")
    assert row.state == UNREADABLE
    assert row.detail == "permission denied"
    assert row.sha256 is None
    assert report.states["rcs-dc1-b"] == MATCH


def test_permission_denied_through_object_storage_path(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real reading path (ObjectStoragePath.open) raising, as a remote store would."""
    from airflow.sdk import ObjectStoragePath

    original = ObjectStoragePath.open

    def open_or_deny(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "/dc1/rcs-b/" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    generate_keystores(topology, PASSWORD)
    monkeypatch.setattr(ObjectStoragePath, "open", open_or_deny)
    report = _run(topology)
    assert report.states == {**dict.fromkeys(INSTANCES, MATCH), "rcs-dc1-b": UNREADABLE}
    assert _row(report, "rcs-dc1-b").detail == "permission denied"


def test_keystore_path_that_is_a_directory(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    paths["rcs-dc1-b"].unlink()
    paths["rcs-dc1-b"].mkdir()
    row = _row(_run(topology), "rcs-dc1-b")
    assert row.state == UNREADABLE
    assert "is a directory" in row.detail


def test_other_storage_error_is_unreadable(topology: Topology) -> None:
    class AccessDeniedError(Exception):
        pass

    generate_keystores(topology, PASSWORD)
    opener = _denying("/dc3/", AccessDeniedError("AccessDenied: s3:GetObject"))  # type: ignore[arg-type]
    row = _row(_run(topology, opener=opener), "rcs-dc3-a")
    assert row.state == UNREADABLE
    assert "AccessDeniedError" in row.detail


@pytest.mark.parametrize("with_password", [True, False])
def test_truncated_keystore_is_unreadable_with_or_without_password(
    topology: Topology, with_password: bool
) -> None:
    paths = generate_keystores(topology, PASSWORD)
    whole = paths["rcs-dc2-a"].read_bytes()
    paths["rcs-dc2-a"].write_bytes(whole[: len(whole) // 2])
    getter = _passwords() if with_password else _passwords({CONN: ""})
    report = _run(topology, get_password=getter)

    row = _row(report, "rcs-dc2-a")
    assert row.state == UNREADABLE
    assert row.detail == f"truncated: {len(whole) // 2} bytes, its PKCS12 header declares {len(whole)}"
    assert report.states["rcs-dc1-b"] == MATCH


def test_empty_and_corrupt_keystores_are_unreadable(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    paths["rcs-dc1-b"].write_bytes(b"")
    whole = bytearray(paths["rcs-dc3-a"].read_bytes())
    whole[len(whole) // 2] ^= 0xFF  # one flipped byte inside the encrypted contents
    paths["rcs-dc3-a"].write_bytes(bytes(whole))
    report = _run(topology)

    assert _row(report, "rcs-dc1-b").state == UNREADABLE
    assert _row(report, "rcs-dc1-b").detail == "empty file (0 bytes)"
    corrupt = _row(report, "rcs-dc3-a")
    assert corrupt.state == UNREADABLE
    assert "corrupt" in corrupt.detail
    assert report.states["rcs-dc2-a"] == MATCH


def test_wrong_password_is_unreadable_and_never_shown(tmp_path: Path, caplog: Any) -> None:
    wrong = "Wrong-Password-9c1d"
    topology = _topology(
        tmp_path,
        extra_rcs=(
            "  - site: DC4\n    rcs:\n"
            f'      - {{name: rcs-dc4-a, keystore: "file://{tmp_path}/dc4/rcs-a/keystore.p12", '
            "password_conn_id: gir_rcs_keystore_dc4}"
        ),
    )
    paths = generate_keystores(topology, PASSWORD)
    caplog.set_level(logging.DEBUG)
    report = _run(topology, get_password=_passwords({CONN: PASSWORD, "gir_rcs_keystore_dc4": wrong}))

    row = _row(report, "rcs-dc4-a")
    assert row.state == UNREADABLE
    assert "wrong keystore password" in row.detail
    assert "gir_rcs_keystore_dc4" in row.detail
    assert row.sha256 == _row(report, "rcs-dc1-a").sha256  # same bytes, yet it cannot be opened
    assert report.states["rcs-dc3-a"] == MATCH
    _assert_no_secrets(caplog.text, paths, PASSWORD, wrong)
    _assert_no_secrets(report.to_json(), paths, PASSWORD, wrong)
    _assert_no_secrets(failure_message(report.to_dict()) or "", paths, PASSWORD, wrong)


def test_no_password_compares_bytes_only(topology: Topology) -> None:
    generate_keystores(topology, PASSWORD, drift=["rcs-dc3-a"])
    report = _run(topology, get_password=_passwords({}))

    assert report.states["rcs-dc1-b"] == MATCH
    drifted = _row(report, "rcs-dc3-a")
    assert drifted.state == DRIFT
    assert "bytes differ" in drifted.detail
    assert "aliases not compared" in drifted.detail
    assert "is not defined" in drifted.detail
    assert not drifted.opened
    assert any("gir_rcs_keystore" in w and "is not defined" in w for w in report.warnings)


def test_secrets_backend_error_is_a_warning_without_its_text(topology: Topology) -> None:
    generate_keystores(topology, PASSWORD)

    def broken(conn_id: str) -> str:
        raise RuntimeError(f"backend said: token={PASSWORD}")

    report = _run(topology, get_password=broken)
    assert report.ok  # bytes still compared
    assert any("could not be read (RuntimeError)" in w for w in report.warnings)
    assert PASSWORD not in report.to_json()


def test_jks_keystore_is_compared_by_bytes_and_never_crashes(topology: Topology) -> None:
    paths = keystore_paths(topology)
    jks = bytes.fromhex("feedfeed00000002") + b"\x00" * 64
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jks if name != "rcs-dc2-a" else jks + b"\x01")
    report = _run(topology)

    assert _row(report, "rcs-dc1-b").state == MATCH
    assert _row(report, "rcs-dc1-b").format == "JKS"
    assert "JKS keystore: compared by bytes only" in _row(report, "rcs-dc1-b").detail
    assert _row(report, "rcs-dc2-a").state == DRIFT


# --- the reference ------------------------------------------------------------------------------------


def test_reference_missing_is_a_clear_failure(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    paths["rcs-dc1-a"].unlink()
    paths["rcs-dc3-a"].unlink()
    report = _run(topology)

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
    report = _run(topology)
    assert report.reference_error and "is unreadable (truncated" in report.reference_error
    assert report.states["rcs-dc1-a"] == UNREADABLE
    assert report.states["rcs-dc2-a"] == NOT_COMPARED
    assert "Nothing to compare against" in (failure_message(report.to_dict()) or "")


def test_configured_reference_in_a_second_dc(tmp_path: Path) -> None:
    topology = _topology(tmp_path, reference="rcs-dc2-a")
    generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    report = _run(topology)

    assert report.reference == "rcs-dc2-a"
    assert report.states == {
        "rcs-dc1-a": DRIFT,
        "rcs-dc1-b": DRIFT,
        "rcs-dc2-a": MATCH,
        "rcs-dc3-a": DRIFT,
    }
    assert _row(report, "rcs-dc2-a").detail.startswith("reference")
    assert f"alias added: {CURRENT_ALIAS}" in _row(report, "rcs-dc3-a").detail
    assert f"alias missing: {DRIFT_ALIAS}" in _row(report, "rcs-dc3-a").detail


def test_no_rcs_instances_fails_clearly(tmp_path: Path) -> None:
    topology = parse_topology("primary_site: DC1\ndata_centers:\n  - site: DC1\n", "empty")
    report = _run(topology)
    assert not report.ok
    assert report.results == []
    assert "nothing to compare against" in report.summary()


# --- report and parallel reads -------------------------------------------------------------------------


def test_report_table_and_asset_extra(topology: Topology) -> None:
    generate_keystores(topology, PASSWORD, drift=["rcs-dc3-a"])
    report = _run(topology)
    lines = report.table().splitlines()
    assert lines[0].split() == ["instance", "DC", "state", "fingerprint", "detail"]
    assert len(lines) == 2 + len(INSTANCES)
    assert lines[5].startswith("rcs-dc3-a  DC3  drift ")
    assert _row(report, "rcs-dc3-a").fingerprint_prefix in lines[5]

    extra = report.asset_extra()
    assert set(extra) >= {"ok", "checked_at", "reference", "states", "warnings"}
    assert extra["ok"] is False
    assert extra["states"]["rcs-dc3-a"] == DRIFT
    json.dumps(report.to_dict())  # JSON-serialisable as an XCom


def test_reads_run_in_parallel(tmp_path: Path) -> None:
    """20 keystores, 10 workers: every read waits until 10 reads are in flight at once.

    A barrier proves the fan-out without timing anything (speed is measured in `make bench`): with fewer
    than 10 concurrent reads the barrier times out and the reads come back unreadable.
    """
    extra = "  - site: DC9\n    rcs:\n" + "".join(
        f'      - {{name: rcs-dc9-{i:02d}, keystore: "file://{tmp_path}/dc9/{i:02d}/keystore.p12", '
        f"password_conn_id: {CONN}}}\n"
        for i in range(16)
    )
    topology = _topology(tmp_path, extra_rcs=extra)
    generate_keystores(topology, PASSWORD)
    all_ten_in_flight = threading.Barrier(10, timeout=20)

    def rendezvous(url: str) -> BinaryIO:
        all_ten_in_flight.wait()
        return open_keystore(url)

    keystore._preload(open_keystore)
    report = _run(topology, opener=rendezvous, parallel_reads=10)

    assert report.ok, report
    assert len(report.results) == 20
    with pytest.raises(ValueError, match="at least 1"):
        _run(topology, parallel_reads=0)


def test_der_length_problem() -> None:
    assert der_length_problem(bytes([0x30, 0x03, 1, 2, 3]), 5) is None
    assert der_length_problem(bytes([0x30, 0x82, 0x01, 0x00]), 4) == (
        "truncated: 4 bytes, its PKCS12 header declares 260"
    )
    assert "unexpected bytes" in (der_length_problem(bytes([0x30, 0x01, 1, 9]), 4) or "")
    assert "not valid DER" in (der_length_problem(bytes([0x30, 0x80, 0, 0]), 4) or "")
