"""Reading one keystore: every way a file can be missing or unusable is unreadable, never drift.

Nothing but digests and metadata may leave the check: no password, no keystore bytes, in logs or in the
report, whatever went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from include.gir_ops.keystore.model import DRIFT, MATCH, MISSING, UNREADABLE
from include.gir_ops.keystore.reading import open_keystore
from include.gir_ops.keystore.report import failure_message
from include.gir_ops.topology import Topology
from include.gir_sim.demo_data import generate_keystores, keystore_paths
from tests.include.keystore.keystore_support import (
    CONN,
    INSTANCES,
    PASSWORD,
    assert_no_secrets,
    passwords,
    row_of,
    run,
    topology_for,
)


def test_missing_keystore(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    paths["rcs-dc3-a"].unlink()
    report = run(topology)

    row = row_of(report, "rcs-dc3-a")
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
    report = run(topology, opener=opener)

    row = row_of(report, "rcs-dc2-a")
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
    report = run(topology)
    assert report.states == {**dict.fromkeys(INSTANCES, MATCH), "rcs-dc1-b": UNREADABLE}
    assert row_of(report, "rcs-dc1-b").detail == "permission denied"


def test_keystore_path_that_is_a_directory(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    paths["rcs-dc1-b"].unlink()
    paths["rcs-dc1-b"].mkdir()
    row = row_of(run(topology), "rcs-dc1-b")
    assert row.state == UNREADABLE
    assert "is a directory" in row.detail


def test_other_storage_error_is_unreadable(topology: Topology) -> None:
    class AccessDeniedError(Exception):
        pass

    generate_keystores(topology, PASSWORD)
    opener = _denying("/dc3/", AccessDeniedError("AccessDenied: s3:GetObject"))  # type: ignore[arg-type]
    row = row_of(run(topology, opener=opener), "rcs-dc3-a")
    assert row.state == UNREADABLE
    assert "AccessDeniedError" in row.detail


@pytest.mark.parametrize("with_password", [True, False])
def test_truncated_keystore_is_unreadable_with_or_without_password(
    topology: Topology, with_password: bool
) -> None:
    paths = generate_keystores(topology, PASSWORD)
    whole = paths["rcs-dc2-a"].read_bytes()
    paths["rcs-dc2-a"].write_bytes(whole[: len(whole) // 2])
    getter = passwords() if with_password else passwords({CONN: ""})
    report = run(topology, get_password=getter)

    row = row_of(report, "rcs-dc2-a")
    assert row.state == UNREADABLE
    assert row.detail == f"truncated: {len(whole) // 2} bytes, its PKCS12 header declares {len(whole)}"
    assert report.states["rcs-dc1-b"] == MATCH


def test_empty_and_corrupt_keystores_are_unreadable(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    paths["rcs-dc1-b"].write_bytes(b"")
    whole = bytearray(paths["rcs-dc3-a"].read_bytes())
    whole[len(whole) // 2] ^= 0xFF  # one flipped byte inside the encrypted contents
    paths["rcs-dc3-a"].write_bytes(bytes(whole))
    report = run(topology)

    assert row_of(report, "rcs-dc1-b").state == UNREADABLE
    assert row_of(report, "rcs-dc1-b").detail == "empty file (0 bytes)"
    corrupt = row_of(report, "rcs-dc3-a")
    assert corrupt.state == UNREADABLE
    assert "corrupt" in corrupt.detail
    assert report.states["rcs-dc2-a"] == MATCH


def test_wrong_password_is_unreadable_and_never_shown(tmp_path: Path, caplog: Any) -> None:
    wrong = "Wrong-Password-9c1d"
    topology = topology_for(
        tmp_path,
        extra_rcs=(
            "  - site: DC4\n    rcs:\n"
            f'      - {{name: rcs-dc4-a, keystore: "file://{tmp_path}/dc4/rcs-a/keystore.p12", '
            "password_conn_id: gir_rcs_keystore_dc4}"
        ),
    )
    paths = generate_keystores(topology, PASSWORD)
    caplog.set_level(logging.DEBUG)
    report = run(topology, get_password=passwords({CONN: PASSWORD, "gir_rcs_keystore_dc4": wrong}))

    row = row_of(report, "rcs-dc4-a")
    assert row.state == UNREADABLE
    assert "wrong keystore password" in row.detail
    assert "gir_rcs_keystore_dc4" in row.detail
    assert row.sha256 == row_of(report, "rcs-dc1-a").sha256  # same bytes, yet it cannot be opened
    assert report.states["rcs-dc3-a"] == MATCH
    assert_no_secrets(caplog.text, paths, PASSWORD, wrong)
    assert_no_secrets(report.to_json(), paths, PASSWORD, wrong)
    assert_no_secrets(failure_message(report.to_dict()) or "", paths, PASSWORD, wrong)


def test_no_password_compares_bytes_only(topology: Topology) -> None:
    generate_keystores(topology, PASSWORD, drift=["rcs-dc3-a"])
    report = run(topology, get_password=passwords({}))

    assert report.states["rcs-dc1-b"] == MATCH
    drifted = row_of(report, "rcs-dc3-a")
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

    report = run(topology, get_password=broken)
    assert report.ok  # bytes still compared
    assert any("could not be read (RuntimeError)" in w for w in report.warnings)
    assert PASSWORD not in report.to_json()


def test_java_keystore_structure_is_checked_and_never_crashes(topology: Topology) -> None:
    """An empty JKS (as keytool writes one) matches; garbage behind a JKS magic is corrupt, not drift."""
    from include.gir_ops.keystore.java_keystores import integrity_digest

    paths = keystore_paths(topology)
    body = bytes.fromhex("feedfeed0000000200000000")
    jks = body + integrity_digest(body, PASSWORD)
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jks if name != "rcs-dc2-a" else bytes.fromhex("feedfeed00000002") + b"\x00" * 64)
    report = run(topology)

    assert row_of(report, "rcs-dc1-b").state == MATCH
    assert row_of(report, "rcs-dc1-b").format == "JKS"
    assert row_of(report, "rcs-dc1-b").opened
    assert row_of(report, "rcs-dc2-a").state == UNREADABLE
    assert row_of(report, "rcs-dc2-a").detail.startswith("corrupt")
