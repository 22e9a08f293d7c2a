"""The DAG's task bodies on local folders: already present, damaged, foreign folders, forged names."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.gir_ops.backup.errors import BackupRefused, SourceChanged, WriteFailed
from include.gir_ops.backup.route import ShippingRoute
from include.gir_ops.backup.tasks import copy_task, manifest_task, retention_task, verify_and_publish_task
from include.gir_ops.backup.tree import SourceFile, scan_backup
from tests.include.backup.backup_support import (
    CHUNK,
    NAME,
    NON_ASCII,
    make_tree,
    osp,
    route_for,
    sample_files,
    sha256,
    ship,
)


def test_a_published_backup_that_still_verifies_is_not_copied_again(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / "index-2026-11-01", sample_files())
    route = route_for(tmp_path)
    ship(route, "index-2026-11-01")
    plan = manifest_task(route, "index-2026-11-01", chunk_size=CHUNK)
    assert plan["already_present"] is True
    with pytest.raises(AirflowSkipException, match="already present and verified at DC2"):
        copy_task(route, plan)


def test_a_damaged_published_backup_is_withdrawn_and_only_the_damage_reshipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = sample_files()
    make_tree(tmp_path / "src" / "index-2026-11-01", files)
    route = route_for(tmp_path)
    ship(route, "index-2026-11-01")
    damaged = tmp_path / "dst" / "index-2026-11-01" / NON_ASCII
    damaged.write_bytes(b"X" * len(files[NON_ASCII]))

    plan = manifest_task(route, "index-2026-11-01", chunk_size=CHUNK)

    assert plan["already_present"] is False
    assert plan["repaired"] == [NON_ASCII]
    assert not (tmp_path / "dst" / "index-2026-11-01").exists(), "withdrawn before anything else happens"
    assert any(r.levelno == logging.ERROR and NON_ASCII in r.getMessage() for r in caplog.records)
    copied = copy_task(route, plan, chunk_size=CHUNK)
    assert copied["files_copied"] == [NON_ASCII]
    assert copied["bytes_copied"] == len(files[NON_ASCII])
    verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert (tmp_path / "dst" / "index-2026-11-01" / NON_ASCII).read_bytes() == files[NON_ASCII]


def test_a_final_folder_without_a_manifest_is_never_overwritten(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / "index-2026-11-01", {"a.dat": b"x"})
    make_tree(tmp_path / "dst" / "index-2026-11-01", {"a.dat": b"someone else's"})
    with pytest.raises(AirflowFailException, match=r"without a MANIFEST\.json"):
        manifest_task(route_for(tmp_path), "index-2026-11-01")
    assert (tmp_path / "dst" / "index-2026-11-01" / "a.dat").read_bytes() == b"someone else's"


def test_verify_and_publish_refuses_a_staged_file_damaged_after_copying(tmp_path: Path) -> None:
    files = sample_files()
    make_tree(tmp_path / "src" / "index-2026-11-01", files)
    route = route_for(tmp_path)
    plan = manifest_task(route, "index-2026-11-01", chunk_size=CHUNK)
    copied = copy_task(route, plan, chunk_size=CHUNK)
    staged = tmp_path / "dst" / "index-2026-11-01.partial" / "segments/shard-1/seg-00001.dat"
    staged.write_bytes(b"\0" * staged.stat().st_size)
    with pytest.raises(AirflowFailException, match=r"segments/shard-1/seg-00001\.dat \(SHA-256"):
        verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert not (tmp_path / "dst" / "index-2026-11-01").exists()


def test_route_from_the_default_topology_reads_the_shipping_section(gir_factory: Callable[..., Any]) -> None:
    gir = gir_factory({"shipping": {"keep": 3, "quiet_minutes": 0.05}})
    route = ShippingRoute.from_topology(gir.topology)
    assert (route.from_site, route.to_site, route.keep, route.quiet_minutes) == ("DC1", "DC2", 3, 0.05)
    assert route.backup_name_pattern == gir.topology.shipping.backup_name_pattern
    assert route.destination_may_be_link is False
    assert route.source_root == gir.topology.site("DC1").speechminer.index_backup


def test_source_file_listing_round_trips_through_the_plan(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / "index-2026-11-01", sample_files())
    plan = manifest_task(route_for(tmp_path), "index-2026-11-01")
    restored = [SourceFile(*row) for row in json.loads(json.dumps(plan["files"]))]
    assert restored == scan_backup(osp(tmp_path / "src" / "index-2026-11-01"))


@pytest.mark.parametrize("forged", ["../escape", "..", ".", "a/b", f"{NAME}/../../escape", f"{NAME}.partial"])
def test_a_backup_name_from_xcom_never_leads_outside_the_destination(tmp_path: Path, forged: str) -> None:
    """XCom is writable through the REST API: every task re-checks the name it is given."""
    make_tree(tmp_path / "src" / NAME, {"a.dat": b"x"})
    make_tree(tmp_path / "src" / "escape", {"a.dat": b"x"})
    route = route_for(tmp_path)
    plan = manifest_task(route, NAME)
    forged_plan = {**plan, "backup_name": forged}
    copied = {"entries": [["a.dat", 1, sha256(b"x")]], "backup_name": forged}
    for task in (
        lambda: manifest_task(route, forged),
        lambda: copy_task(route, forged_plan),
        lambda: verify_and_publish_task(route, forged_plan, copied),
        lambda: retention_task(route, forged_plan),
    ):
        with pytest.raises(AirflowFailException, match=r"refused|not a backup folder name|reserves"):
            task()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"], "nothing created beside the destination"
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["escape", NAME]


# --- what is retried -----------------------------------------------------------------------------------


def test_a_source_still_being_written_is_retried_while_a_refusal_fails_at_once(tmp_path: Path) -> None:
    """SourceChanged and WriteFailed say retryable: the task raises them as they are, for Airflow's retry;
    any other BackupError becomes AirflowFailException with the same message."""
    source = make_tree(tmp_path / "src" / NAME, {"seg.dat": b"s" * 100})
    route = route_for(tmp_path)
    plan = manifest_task(route, NAME, chunk_size=CHUNK)
    with (source / "seg.dat").open("ab") as handle:  # SpeechMiner appends after the listing
        handle.write(b"more")

    with pytest.raises(SourceChanged, match="SpeechMiner is still writing this backup") as changed:
        copy_task(route, plan, chunk_size=CHUNK)
    assert not isinstance(changed.value, AirflowFailException)
    assert SourceChanged.retryable is True and WriteFailed.retryable is True

    (source / "link.dat").symlink_to(source / "seg.dat")
    with pytest.raises(AirflowFailException, match=r"link\.dat in .* is a symbolic link") as refused:
        manifest_task(route, NAME, chunk_size=CHUNK)
    assert isinstance(refused.value.__cause__, BackupRefused)
