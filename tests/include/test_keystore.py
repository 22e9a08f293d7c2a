"""The keystore replication check, without a scheduler: real PKCS12 files from the simulator's generator.

Each instance must end in exactly one state, a read error must never look like drift, and nothing but
digests and metadata may leave the check (no password, no keystore bytes, in logs or in the report).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
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
from include.gir_ops.topology import Topology, TopologyError, parse_topology

PASSWORD = "Rcs-Keystore-Pässwort-7f3a"
CONN = "gir_rcs_keystore"
INSTANCES = ("rcs-dc1-a", "rcs-dc1-b", "rcs-dc2-a", "rcs-dc3-a")


def _topology(
    root: Path,
    *,
    reference: str | None = None,
    extra_rcs: str = "",
    expiry_warning_days: int = 30,
    read_timeout_seconds: float | None = None,
) -> Topology:
    return parse_topology(
        _topology_yaml(
            root,
            reference=reference,
            extra_rcs=extra_rcs,
            expiry_warning_days=expiry_warning_days,
            read_timeout_seconds=read_timeout_seconds,
        ),
        "test-topology",
    )


def _topology_yaml(
    root: Path,
    *,
    reference: str | None = None,
    extra_rcs: str = "",
    expiry_warning_days: int = 30,
    read_timeout_seconds: float | None = None,
) -> str:
    reference_line = f"  reference: {reference}\n" if reference else ""
    if read_timeout_seconds is not None:
        reference_line += f"  read_timeout_seconds: {read_timeout_seconds}\n"
    return f"""
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
{reference_line}"""


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


# --- a keystore that never answers (issue 12, 3b) -------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
RESCUE_AFTER_SECONDS = 60.0


class HungKeystore:
    """A FIFO nobody writes to, where a keystore should be: open() blocks like a hung NFS/SMB mount.

    ``release`` opens and closes the writing end, so a reader stuck in open() sees an empty file and its
    thread ends. A watchdog releases it after ``RESCUE_AFTER_SECONDS``, so code that waits for the stuck
    read fails this test's assertions (an empty file is not "no answer") instead of hanging the run.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        self.path = path
        self._watchdog = threading.Timer(RESCUE_AFTER_SECONDS, self.release)
        self._watchdog.daemon = True
        self._watchdog.start()

    def release(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody is waiting to read it
            return
        os.close(fd)

    def close(self) -> None:
        self._watchdog.cancel()
        self.release()


@pytest.fixture
def hang() -> Iterator[Callable[[Path], HungKeystore]]:
    made: list[HungKeystore] = []

    def make(path: Path) -> HungKeystore:
        made.append(HungKeystore(path))
        return made[-1]

    yield make
    for fifo in made:
        fifo.close()


def test_keystore_that_never_answers_is_unreadable_and_the_report_comes_out(
    tmp_path: Path, hang: Callable[[Path], HungKeystore], caplog: Any
) -> None:
    """A FIFO nobody writes (a hung mount): unreadable after the per-read timeout, the others still read.

    One read at a time, with the hung keystore read second: the keystores after it are read only if the
    hung read gives its slot up.
    """
    topology = _topology(tmp_path, read_timeout_seconds=2)
    assert topology.keystore_check.read_timeout_seconds == 2
    paths = generate_keystores(topology, PASSWORD)
    hang(paths["rcs-dc1-b"])
    caplog.set_level(logging.INFO)

    report = _run(topology, parallel_reads=1)

    assert report.states == {**dict.fromkeys(INSTANCES, MATCH), "rcs-dc1-b": UNREADABLE}
    row = _row(report, "rcs-dc1-b")
    assert row.detail.startswith("no answer within 2 s: ")
    assert "keystore_check.read_timeout_seconds" in row.detail
    assert row.sha256 is None
    message = failure_message(report.to_dict()) or ""
    assert "- rcs-dc1-b (DC1): unreadable: no answer within 2 s" in message
    assert report.asset_extra()["states"] == report.states
    assert report.asset_extra()["ok"] is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("rcs-dc1-b" in w and "no answer within 2 s" in w for w in warnings)


def test_hung_reference_means_nothing_to_compare_against(
    tmp_path: Path, hang: Callable[[Path], HungKeystore]
) -> None:
    topology = _topology(tmp_path, read_timeout_seconds=2)
    paths = generate_keystores(topology, PASSWORD)
    hang(paths["rcs-dc1-a"])
    report = _run(topology)
    assert report.states["rcs-dc1-a"] == UNREADABLE
    assert report.states["rcs-dc2-a"] == NOT_COMPARED
    assert (report.reference_error or "").startswith(
        "reference instance rcs-dc1-a is unreadable (no answer within 2 s: "
    )


def test_a_slow_read_that_keeps_answering_is_not_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeout is per open/read call, not per file: a store that answers every call is waited for.

    The check's clock is a fake one that only the trickling store moves: 0.4 s per read, 64 bytes at a
    time, so the whole file takes far longer than the 0.5 s limit while no single call does. One read at
    a time, so that the clock moves only while the trickling read is the one in flight.
    """
    topology = _topology(tmp_path, read_timeout_seconds=0.5)
    paths = generate_keystores(topology, PASSWORD)
    data = paths["rcs-dc2-a"].read_bytes()
    clock = [1000.0]
    monkeypatch.setattr(keystore, "time", SimpleNamespace(monotonic=lambda: clock[0]))

    class Trickle:
        def __init__(self) -> None:
            self.left = data

        def __enter__(self) -> Trickle:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self, _size: int = -1) -> bytes:
            clock[0] += 0.4
            chunk, self.left = self.left[:64], self.left[64:]
            return chunk

    def opener(url: str) -> BinaryIO:
        return Trickle() if "/dc2/" in url else open_keystore(url)  # type: ignore[return-value]

    report = _run(topology, opener=opener, parallel_reads=1)
    assert clock[0] - 1000.0 > 10 * 0.5  # the file took at least ten times the limit
    assert report.states == dict.fromkeys(INSTANCES, MATCH)


@pytest.mark.parametrize("value", ["0", "-1", "301", ".nan", ".inf"])
def test_read_timeout_is_validated(tmp_path: Path, value: str) -> None:
    text = _topology_yaml(tmp_path).replace(
        "keystore_check:\n", f"keystore_check:\n  read_timeout_seconds: {value}\n"
    )
    with pytest.raises(TopologyError) as raised:
        parse_topology(text, "test-topology")
    key = "keystore_check.read_timeout_seconds"
    assert f"{key}: read_timeout_seconds must be more than 0 and at most 300 seconds" in str(raised.value)


def test_read_timeout_defaults_to_30_seconds(tmp_path: Path) -> None:
    assert _topology(tmp_path).keystore_check.read_timeout_seconds == 30
    with pytest.raises(ValueError, match="read_timeout_seconds must be more than 0"):
        _run(_topology(tmp_path), read_timeout_seconds=0)


_EXITS = """
import json, os, sys

from include.gir_ops.keystore import check_replication
from include.gir_ops.topology import parse_topology

mode, text = sys.argv[1], sys.argv[2]
topology = parse_topology(text, "subprocess-topology")
if mode == "execution_timeout":
    # What a task's execution_timeout does: SIGALRM raises AirflowTaskTimeout in the main thread.
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    try:
        with timeout(1):  # the topology gives every read 300 s: the task's timeout comes first
            check_replication(topology, get_password=lambda _: None)
    except AirflowTaskTimeout:
        print(json.dumps({"stopped": "AirflowTaskTimeout"}), flush=True)
    sys.exit(0)
report = check_replication(topology, get_password=lambda _: None)
print(json.dumps({"states": report.states, "ok": report.ok}), flush=True)
if mode == "os_exit":
    os._exit(0)  # how Airflow's task runner ends the task process (supervisor._fork_main)
sys.exit(0)  # interpreter exit: joins every non-daemon thread (airflow dags test, dag.test(), scripts)
"""


@pytest.mark.parametrize("mode", ["interpreter_exit", "os_exit", "execution_timeout"])
def test_process_with_a_hung_keystore_ends(tmp_path: Path, mode: str) -> None:
    """The whole process ends although a reading thread is stuck in open() on a FIFO for good.

    Airflow's task runner ends the task process with ``os._exit`` (no thread is joined), but
    ``airflow dags test``, ``dag.test()`` and scripts end through the interpreter, which joins every
    non-daemon thread, concurrent.futures' workers included; and the execution timeout raises in the
    main thread, which must then not wait for the stuck read either.
    """
    text = _topology_yaml(tmp_path, read_timeout_seconds=300 if mode == "execution_timeout" else 5)
    paths = generate_keystores(parse_topology(text, "t"), PASSWORD)
    paths["rcs-dc3-a"].unlink()
    os.mkfifo(paths["rcs-dc3-a"])  # nobody ever writes: the child's reading thread stays stuck
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _EXITS, mode, text],
            check=False,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RESCUE_AFTER_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not end within {RESCUE_AFTER_SECONDS:g} s ({mode}): {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if mode == "execution_timeout":
        assert result == {"stopped": "AirflowTaskTimeout"}
    else:
        assert result == {
            "states": {**dict.fromkeys(INSTANCES, MATCH), "rcs-dc3-a": UNREADABLE},
            "ok": False,
        }


# --- several private keys in one PKCS12 keystore (issue 12, 6a) -----------------------------------------
#
# cryptography writes one private key per PKCS12 file, and RCS's Java keystore may hold several. So the
# fixture takes cryptography's one-key files apart and puts their pieces (each key bag, each encrypted
# certificate part) into one PFX, with a fresh SHA-256 integrity MAC (RFC 7292, appendix B).

KEY_ALIASES = ("gir-recording-2026", "gir-recording-2025", "gir-recording-2024")
CA_ALIAS = "gir-root-ca"


def _tlv(tag: int, contents: bytes) -> bytes:
    size = len(contents)
    if size < 0x80:
        return bytes([tag, size]) + contents
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + contents


def _items(data: bytes) -> list[tuple[int, bytes]]:
    """DER elements one after another: (tag, contents)."""
    found, pos = [], 0
    while pos < len(data):
        tag, first = data[pos], data[pos + 1]
        pos += 2
        size = first
        if first & 0x80:
            size = int.from_bytes(data[pos : pos + (first & 0x7F)], "big")
            pos += first & 0x7F
        found.append((tag, data[pos : pos + size]))
        pos += size
    return found


_OID_DATA = bytes.fromhex("2a864886f70d010701")
_OID_SHA256 = bytes.fromhex("608648016503040201")


def _content_infos(pfx: bytes) -> list[bytes]:
    """The ContentInfo parts of a PFX's authenticated safe (key bags, encrypted certificates)."""
    ((_, body),) = _items(pfx)
    _version, (_, auth_safe), *_ = _items(body)
    _oid, (_, explicit) = _items(auth_safe)
    ((_, safe),) = _items(explicit)
    ((_, parts),) = _items(safe)
    return [_tlv(tag, contents) for tag, contents in _items(parts)]


def _mac_key(password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 7292 B.2 key derivation (ID 3: MAC key) with SHA-256."""
    u, v = 32, 64
    secret = password.encode("utf-16-be") + b"\0\0"

    def stretch(value: bytes) -> bytes:
        size = v * -(-len(value) // v)
        return (value * (size // len(value) + 1))[:size]

    block = bytearray(stretch(salt) + stretch(secret))
    digest = bytes([3]) * v + bytes(block)
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return digest[:u]


def _pkcs12(entries: list[tuple[str, Any, Any]], password: str) -> bytes:
    """One PKCS12 file holding every (alias, private key or None, certificate) entry."""
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    encryption = BestAvailableEncryption(password.encode())
    parts = []
    for alias, key, cert in entries:
        if key is not None:
            one = pkcs12.serialize_key_and_certificates(alias.encode(), key, cert, None, encryption)
        else:  # a certificate-only entry: the certificate with its alias, no key
            only = [pkcs12.PKCS12Certificate(cert, alias.encode())]
            one = pkcs12.serialize_key_and_certificates(None, None, None, only, encryption)
        parts += _content_infos(one)
    auth_safe = _tlv(0x30, b"".join(parts))
    salt, iterations = os.urandom(16), 2048
    mac = hmac.new(_mac_key(password, salt, iterations), auth_safe, hashlib.sha256).digest()
    digest_info = _tlv(0x30, _tlv(0x30, _tlv(0x06, _OID_SHA256) + _tlv(0x05, b"")) + _tlv(0x04, mac))
    mac_data = _tlv(0x30, digest_info + _tlv(0x04, salt) + _tlv(0x02, iterations.to_bytes(2, "big")))
    content_info = _tlv(0x30, _tlv(0x06, _OID_DATA) + _tlv(0xA0, _tlv(0x04, auth_safe)))
    return _tlv(0x30, _tlv(0x02, b"\x03") + content_info + mac_data)


def _certificate(alias: str, key: Any, days: int) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"GIR test {alias}")])
    not_before = min(now - timedelta(days=1), now + timedelta(days=days) - timedelta(days=30))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def key_entries() -> dict[str, tuple[Any, Any]]:
    """Three private keys (the 2025 certificate expired: its key still decrypts old recordings) and a CA."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    keys = {
        KEY_ALIASES[0]: ec.generate_private_key(ec.SECP256R1()),
        KEY_ALIASES[1]: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        KEY_ALIASES[2]: ec.generate_private_key(ec.SECP384R1()),
        CA_ALIAS: ec.generate_private_key(ec.SECP256R1()),
    }
    days = {KEY_ALIASES[0]: 365, KEY_ALIASES[1]: -10, KEY_ALIASES[2]: 700, CA_ALIAS: 3650}
    return {alias: (key, _certificate(alias, key, days[alias])) for alias, key in keys.items()}


def _keystore(entries: dict[str, tuple[Any, Any]], *, certificate_only: tuple[str, ...] = ()) -> bytes:
    rows = [
        (alias, None if alias in certificate_only or alias == CA_ALIAS else key, cert)
        for alias, (key, cert) in entries.items()
    ]
    return _pkcs12(rows, PASSWORD)


def _key_secrets(entries: dict[str, tuple[Any, Any]]) -> list[str]:
    """Every private key as it must never appear: PKCS8 DER in base64 (and its start) and hex, PEM body."""
    from cryptography.hazmat.primitives import serialization

    found = []
    for key, _cert in entries.values():
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        encoded = base64.b64encode(der).decode()
        found += [encoded, encoded[:40], der.hex()[:64], encoded[40:80]]
    return found


def test_every_private_key_alias_is_reported(
    topology: Topology, key_entries: dict[str, tuple[Any, Any]], caplog: Any
) -> None:
    whole = _keystore(key_entries)
    for path in keystore_paths(topology).values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(whole)
    caplog.set_level(logging.DEBUG)
    report = _run(topology)

    assert report.states == dict.fromkeys(INSTANCES, MATCH)
    for row in report.results:
        assert row.opened
        assert {c.alias: c.has_private_key for c in row.certificates} == {
            KEY_ALIASES[0]: True,
            KEY_ALIASES[1]: True,
            KEY_ALIASES[2]: True,
            CA_ALIAS: False,
        }
    assert f"private key(s): {', '.join(KEY_ALIASES)}" in _row(report, "rcs-dc1-a").detail
    assert any(KEY_ALIASES[1] in note and "kept for old recordings" in note for note in report.expired_kept)
    for text in (caplog.text, report.to_json()):
        assert PASSWORD not in text
        for secret in _key_secrets(key_entries):
            assert secret not in text


def test_replica_holding_only_the_certificate_of_a_private_key_is_drift(
    topology: Topology, key_entries: dict[str, tuple[Any, Any]], caplog: Any
) -> None:
    whole, lacking = _keystore(key_entries), _keystore(key_entries, certificate_only=(KEY_ALIASES[1],))
    for name, path in keystore_paths(topology).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lacking if name == "rcs-dc2-a" else whole)
    caplog.set_level(logging.DEBUG)
    report = _run(topology)

    assert report.states == {**dict.fromkeys(INSTANCES, MATCH), "rcs-dc2-a": DRIFT}
    row = _row(report, "rcs-dc2-a")
    assert {c.alias: c.has_private_key for c in row.certificates}[KEY_ALIASES[1]] is False
    assert f"private key missing: {KEY_ALIASES[1]} (only its certificate is here)" in row.detail
    assert "re-exported" not in row.detail
    assert "alias missing" not in row.detail  # the certificate is there: it is the key that is missing
    assert KEY_ALIASES[0] not in row.detail and KEY_ALIASES[2] not in row.detail
    message = failure_message(report.to_dict()) or ""
    assert "- rcs-dc2-a (DC2): drift: bytes differ" in message
    assert f"private key missing: {KEY_ALIASES[1]}" in message
    for text in (caplog.text, report.to_json(), message):
        assert PASSWORD not in text
        for secret in _key_secrets(key_entries):
            assert secret not in text


def test_replica_with_an_extra_private_key_names_it(
    tmp_path: Path, key_entries: dict[str, tuple[Any, Any]]
) -> None:
    """The other way round (the reference lost the key): the replica's detail says it holds the key."""
    topology = _topology(tmp_path, reference="rcs-dc2-a")
    whole, lacking = _keystore(key_entries), _keystore(key_entries, certificate_only=(KEY_ALIASES[2],))
    for name, path in keystore_paths(topology).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lacking if name == "rcs-dc2-a" else whole)
    row = _row(_run(topology), "rcs-dc3-a")
    assert row.state == DRIFT
    assert f"private key added: {KEY_ALIASES[2]} (only its certificate is on reference)" in row.detail


def test_private_key_without_a_certificate_is_listed(key_entries: dict[str, tuple[Any, Any]]) -> None:
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    key, _cert = key_entries[KEY_ALIASES[0]]
    data = pkcs12.serialize_key_and_certificates(
        b"lonely", key, None, None, BestAvailableEncryption(PASSWORD.encode())
    )
    certificates, error = keystore._open_pkcs12(
        data, PASSWORD, CONN, now=datetime.now(UTC), expiry_warning_days=30
    )
    assert error is None
    assert [(c.alias, c.has_private_key) for c in certificates] == [("lonely", True)]


def test_key_bags_are_found_in_ber_encoded_keystores(key_entries: dict[str, tuple[Any, Any]]) -> None:
    """BER (indefinite lengths, an OCTET STRING in pieces), as some exporters write, walks like DER."""
    der = _keystore(key_entries)
    ((_, body),) = _items(der)
    version, (_, auth_safe), mac_data = _items(body)
    _oid, (_, explicit) = _items(auth_safe)
    ((_, safe),) = _items(explicit)
    pieces = b"".join(_tlv(0x04, safe[i : i + 100]) for i in range(0, len(safe), 100))

    def indefinite(tag: int, contents: bytes) -> bytes:
        return bytes([tag, 0x80]) + contents + b"\0\0"

    content_info = indefinite(0x30, _tlv(0x06, _OID_DATA) + indefinite(0xA0, indefinite(0x24, pieces)))
    ber = indefinite(0x30, _tlv(*version) + content_info + _tlv(*mac_data))

    bags = keystore.pkcs12_key_bags(ber)
    assert bags is not None
    assert sorted(bag.friendly_name or "" for bag in bags) == sorted(KEY_ALIASES)
    assert keystore.pkcs12_key_bags(der) is not None
    assert keystore.pkcs12_key_bags(ber[:-40]) is None  # cut short: cannot be walked, never a crash
    assert "BEGIN" not in repr(bags) and all(bag.der.hex() not in repr(bags) for bag in bags)
