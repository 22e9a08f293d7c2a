"""gir_rcs_keystore_check end to end with dag.test(): real keystores from the simulator's generator.

What an operator relies on: green when every keystore matches (warnings allowed), red naming every
instance that does not match and why, the asset event recorded red or green for the failover
pre-flight, and no password or keystore bytes in any log line or XCom of the run.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.gir_sim.demo_data import (
    CURRENT_ALIAS,
    DRIFT_ALIAS,
    EXPIRING_ALIAS,
    generate_keystores,
    keystore_paths,
)
from tests.include.keystore.keystore_support import HungKeystore, hung_keystores

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = REPO_ROOT / "dags" / "gir_rcs_keystore_check.py"
DAG_ID = "gir_rcs_keystore_check"
WRONG_CONN = "gir_rcs_keystore_dc3c"


@pytest.fixture(autouse=True)
def _metadata_db(airflow_db: Path) -> None:
    """dag.test() needs the migrated metadata DB."""


def _load_dag() -> Any:
    """Parse only this DAG file, with the GIR_TOPOLOGY the test just set."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[DAG_ID]


def _run(capsys: Any, caplog: Any, conf: dict[str, Any] | None = None) -> tuple[Any, str]:
    """dag.test() the DAG; return the run and everything logged (stdout: structlog; caplog: stdlib)."""
    capsys.readouterr()
    run = _load_dag().test(run_conf=conf)
    logged = capsys.readouterr().out + caplog.text
    return run, logged


def _task_states(run: Any) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter_by(dag_id=DAG_ID, run_id=run.run_id).all()
        return {ti.task_id: str(ti.state) for ti in rows}


def _xcoms(run: Any) -> dict[tuple[str, str], Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=DAG_ID, run_id=run.run_id).all()
        return {(row.task_id, row.key): row.value for row in rows}


def _report(run: Any) -> dict[str, Any]:
    value = _xcoms(run)[("check_replication", "return_value")]
    return json.loads(value) if isinstance(value, str) else value


def _asset_events(run: Any) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent, AssetModel)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetEvent.source_dag_id == DAG_ID, AssetEvent.source_run_id == run.run_id)
            .all()
        )
        return [{"asset": asset.name, "task": event.source_task_id, **event.extra} for event, asset in rows]


def _assert_nothing_secret(run: Any, logged: str, secrets: list[str], keystores: list[Path]) -> None:
    """No password and no keystore bytes (base64, or even its first 40 characters) in logs or XComs."""
    stored = json.dumps({f"{k[0]}/{k[1]}": v for k, v in _xcoms(run).items()}, default=str)
    stored += json.dumps(_asset_events(run), default=str)
    for text in (logged, stored):
        for secret in secrets:
            assert secret not in text
        for path in keystores:
            encoded = base64.b64encode(path.read_bytes()).decode()
            assert encoded[:40] not in text
            assert encoded not in text
    # Airflow masks connection passwords as ***: our own lines must never even have tried to log one.
    ours = [line for line in logged.splitlines() if "include.gir_ops.keystore" in line]
    assert ours, "the check logged nothing"
    assert not [line for line in ours if "***" in line]


# --- green --------------------------------------------------------------------------------------------


def test_all_identical_with_an_expiring_certificate_is_green(gir: Any, capsys: Any, caplog: Any) -> None:
    paths = generate_keystores(gir.topology, gir.keystore_password, expiring_in_days=10)
    run, logged = _run(capsys, caplog)

    assert str(run.state) == "success"
    assert _task_states(run) == {"check_replication": "success", "enforce_replication": "success"}
    report = _report(run)
    assert report["ok"] is True
    assert report["states"] == {
        "rcs-dc1-a": "match",
        "rcs-dc1-b": "match",
        "rcs-dc2-a": "match",
        "rcs-dc3-a": "match",
    }
    # The second and third DC's instances were really read: same digest as the reference's file.
    digest = {i["instance"]: i["sha256"] for i in report["instances"]}
    assert digest["rcs-dc3-a"] == digest["rcs-dc1-a"] is not None
    assert {i["site"] for i in report["instances"]} == {"DC1", "DC2", "DC3"}
    # The certificate expiring in 10 days is a warning; the run stays green.
    assert len(report["warnings"]) == 1
    assert EXPIRING_ALIAS in report["warnings"][0]
    assert "kept for old recordings" in report["expired_kept"][0]
    # The table is in the log.
    assert "rcs-dc2-a  DC2  match" in logged
    assert "RCS keystore warning" in logged
    # Red or green, the latest result is recorded for the failover pre-flight.
    events = _asset_events(run)
    assert len(events) == 1
    assert events[0]["asset"] == "gir_rcs_keystore_check"
    assert events[0]["ok"] is True
    assert events[0]["reference"] == "rcs-dc1-a"
    assert events[0]["states"] == report["states"]
    assert events[0]["warnings"] == report["warnings"]
    _assert_nothing_secret(run, logged, [gir.keystore_password], list(paths.values()))


# --- red ----------------------------------------------------------------------------------------------


def _rcs(site_dir: str, letter: str, conn_id: str = "gir_rcs_keystore") -> dict[str, str]:
    return {
        "name": f"rcs-{site_dir}-{letter}",
        "keystore": f"file://${{GIR_DATA_DIR}}/{site_dir}/rcs-{letter}/keystore.p12",
        "password_conn_id": conn_id,
    }


def _seven_instances() -> dict[str, Any]:
    """The default topology with more RCS instances, one per fault, one password connection per DC3-c."""
    document = yaml.safe_load((REPO_ROOT / "include/config/topology.yaml").read_text(encoding="utf-8"))
    document = copy.deepcopy(document)
    by_site = {dc["site"]: dc for dc in document["data_centers"]}
    by_site["DC1"]["rcs"] = [_rcs("dc1", "a"), _rcs("dc1", "b")]
    by_site["DC2"]["rcs"] = [_rcs("dc2", "a"), _rcs("dc2", "b")]
    by_site["DC3"]["rcs"] = [_rcs("dc3", "a"), _rcs("dc3", "b"), _rcs("dc3", "c", WRONG_CONN)]
    return document


@pytest.fixture
def deny_dc1_b(monkeypatch: pytest.MonkeyPatch) -> None:
    """Permission denied on rcs-dc1-b's keystore. Tests run as root, which chmod 000 does not stop, so
    the storage layer is made to refuse, as a remote store or a root-squashed NFS mount would."""
    from airflow.sdk import ObjectStoragePath

    original = ObjectStoragePath.open

    def open_or_deny(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "/dc1/rcs-b/" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ObjectStoragePath, "open", open_or_deny)


def test_every_fault_is_named_and_the_run_is_red(
    gir_factory: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    deny_dc1_b: None,
    capsys: Any,
    caplog: Any,
) -> None:
    gir = gir_factory(topology=_seven_instances())
    paths = generate_keystores(gir.topology, gir.keystore_password, drift=["rcs-dc2-a"])
    keystores = list(paths.values())  # every file as generated, for the leak check
    paths["rcs-dc2-b"].unlink()  # missing
    whole = paths["rcs-dc3-a"].read_bytes()
    paths["rcs-dc3-a"].write_bytes(whole[:700])  # truncated copy
    paths["rcs-dc3-b"].unlink()
    paths["rcs-dc3-b"].mkdir()  # the keystore path is a directory
    wrong_password = "not-the-keystore-password-4e1b"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{WRONG_CONN.upper()}", json.dumps({"conn_type": "generic", "password": wrong_password})
    )
    kept = [p for p in keystores if p.is_file()]

    run, logged = _run(capsys, caplog, conf={"parallel_reads": 3})

    assert str(run.state) == "failed"
    # The check itself succeeded (and recorded the report); the enforcement failed the run.
    assert _task_states(run) == {"check_replication": "success", "enforce_replication": "failed"}
    report = _report(run)
    assert report["ok"] is False
    assert report["parallel_reads"] == 3  # the trigger-time param reached the check
    assert report["states"] == {
        "rcs-dc1-a": "match",
        "rcs-dc1-b": "unreadable",
        "rcs-dc2-a": "drift",
        "rcs-dc2-b": "missing",
        "rcs-dc3-a": "unreadable",
        "rcs-dc3-b": "unreadable",
        "rcs-dc3-c": "unreadable",
    }
    detail = {i["instance"]: i["detail"] for i in report["instances"]}
    assert detail["rcs-dc1-b"] == "permission denied"
    assert "bytes differ" in detail["rcs-dc2-a"]
    assert f"alias missing: {CURRENT_ALIAS}" in detail["rcs-dc2-a"]
    assert f"alias added: {DRIFT_ALIAS}" in detail["rcs-dc2-a"]
    assert "file does not exist" in detail["rcs-dc2-b"]
    assert detail["rcs-dc3-a"] == f"truncated: 700 bytes, its PKCS12 header declares {len(whole)}"
    assert "is a directory" in detail["rcs-dc3-b"]
    assert "wrong keystore password" in detail["rcs-dc3-c"]

    # The failure message names every instance that is not match, with its DC and why.
    failure = logged[logged.index("AirflowFailException: RCS keystore replication check failed.") :]
    assert "6 of 7 RCS keystore(s) do not match rcs-dc1-a" in failure
    for line in (
        "- rcs-dc1-b (DC1): unreadable: permission denied",
        "- rcs-dc2-a (DC2): drift: bytes differ",
        "- rcs-dc2-b (DC2): missing: file does not exist",
        "- rcs-dc3-a (DC3): unreadable: truncated",
        "- rcs-dc3-b (DC3): unreadable: is a directory",
        "- rcs-dc3-c (DC3): unreadable: cannot open: wrong keystore password",
    ):
        assert line in failure
    assert "- rcs-dc1-a" not in failure
    # Safe guidance: the drifted instance holds a key the reference lacks, so it must not be overwritten;
    # the missing one gets the replication steps.
    assert (
        f"what to do: do not overwrite: this instance holds a key the reference does not ({DRIFT_ALIAS})"
        in (failure)
    )
    assert (
        "what to do: back up rcs-dc2-b's keystore (file and password), copy rcs-dc1-a's keystore over it"
        in (failure)
    )

    events = _asset_events(run)
    assert len(events) == 1
    assert events[0]["ok"] is False
    assert events[0]["states"] == report["states"]
    _assert_nothing_secret(run, logged, [gir.keystore_password, wrong_password], kept)


def test_reference_missing_fails_with_nothing_to_compare_against(gir: Any, capsys: Any, caplog: Any) -> None:
    paths = generate_keystores(gir.topology, gir.keystore_password)
    paths["rcs-dc1-a"].unlink()
    run, logged = _run(capsys, caplog)

    assert str(run.state) == "failed"
    assert _task_states(run) == {"check_replication": "success", "enforce_replication": "failed"}
    report = _report(run)
    assert report["states"]["rcs-dc1-a"] == "missing"
    assert report["states"]["rcs-dc2-a"] == "not_compared"
    assert "Nothing to compare against: reference instance rcs-dc1-a is missing" in logged
    assert report["not_matching"] == ["rcs-dc1-a", "rcs-dc1-b", "rcs-dc2-a", "rcs-dc3-a"]
    assert report["reference_error"].startswith("reference instance rcs-dc1-a is missing")
    assert keystore_paths(gir.topology)["rcs-dc1-b"].is_file()  # the others were there to compare
    events = _asset_events(run)
    assert events[0]["ok"] is False
    assert events[0]["states"]["rcs-dc1-a"] == "missing"


# --- a topology without RCS instances ------------------------------------------------------------------


def test_a_topology_without_rcs_instances_defines_no_dag_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """No RCS instance means the check is not configured: no DAG and no import error, one warning."""
    from airflow.dag_processing.dagbag import DagBag

    document = yaml.safe_load((REPO_ROOT / "include/config/topology.yaml").read_text(encoding="utf-8"))
    for dc in document["data_centers"]:
        dc.pop("rcs", None)
    path = tmp_path / "topology-without-rcs.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("GIR_TOPOLOGY", str(path))
    caplog.set_level(logging.WARNING)

    bag = DagBag(dag_folder=str(DAG_FILE))

    assert bag.import_errors == {}
    assert bag.dags == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"{DAG_ID} is not defined: the topology has no RCS instance (data_centers[].rcs); add one to "
        "check its keystore"
    ]


# --- a keystore that never answers ---------------------------------------------------------------------


@pytest.fixture
def hang() -> Iterator[Callable[[Path], HungKeystore]]:
    """Keystore paths made FIFOs nobody writes to: open() blocks like a hung NFS/SMB mount."""
    with hung_keystores() as make:
        yield make


def test_a_keystore_that_never_answers_still_gives_the_report(
    gir_factory: Callable[..., Any], hang: Callable[[Path], HungKeystore], capsys: Any, caplog: Any
) -> None:
    gir = gir_factory({"keystore_check": {"read_timeout_seconds": 2}})
    assert gir.topology.keystore_check.read_timeout_seconds == 2
    paths = generate_keystores(gir.topology, gir.keystore_password)
    kept = [path for name, path in paths.items() if name != "rcs-dc2-a"]
    hang(paths["rcs-dc2-a"])

    run, logged = _run(capsys, caplog)

    assert str(run.state) == "failed"
    # The check ended in bounded time and recorded its report; the enforcement failed the run.
    assert _task_states(run) == {"check_replication": "success", "enforce_replication": "failed"}
    report = _report(run)
    assert report["states"] == {
        "rcs-dc1-a": "match",
        "rcs-dc1-b": "match",
        "rcs-dc2-a": "unreadable",
        "rcs-dc3-a": "match",
    }
    detail = {i["instance"]: i["detail"] for i in report["instances"]}
    assert detail["rcs-dc2-a"].startswith("no answer within 2 s: ")
    failure = logged[logged.index("AirflowFailException: RCS keystore replication check failed.") :]
    assert "- rcs-dc2-a (DC2): unreadable: no answer within 2 s" in failure
    events = _asset_events(run)
    assert len(events) == 1
    assert events[0]["ok"] is False
    assert events[0]["states"] == report["states"]
    _assert_nothing_secret(run, logged, [gir.keystore_password], kept)
