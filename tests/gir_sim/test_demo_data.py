"""The simulator's demo data must be what the shipping and keystore-check DAGs are tested against.

So: backups really contain the awkward cases (empty file, non-ASCII name, marker last), reruns are
byte-identical and write nothing, and keystores are real PKCS12 files with the aliases a check reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from include.gir_ops.shared import KEYSTORE_PASSWORD_ENV
from include.gir_ops.topology import Topology, parse_topology
from include.gir_sim import demo_data
from include.gir_sim.demo_data import (
    CURRENT_ALIAS,
    DRIFT_ALIAS,
    EMPTY_FILE,
    EXPIRED_ALIAS,
    EXPIRING_ALIAS,
    NON_ASCII_FILE,
    drift_keystore,
    generate_index_backups,
    generate_keystores,
    local_path,
    read_keystore_aliases,
    size_profile,
    write_incomplete_backup,
)

PASSWORD = "s3cr3t-Keystore-Pässwörd"
DAY = date(2026, 11, 20)


def _topology_yaml(root: Path) -> str:
    return f"""
primary_site: DC1
data_centers:
  - site: DC1
    speechminer:
      index_backup: file://{root}/dc1/speechminer/index-backup
    rcs:
      - name: rcs-dc1-a
        keystore: file://{root}/dc1/rcs-a/keystore.p12
      - name: rcs-dc1-b
        keystore: file://{root}/dc1/rcs-b/keystore.p12
  - site: DC2
    rcs:
      - name: rcs-dc2-a
        keystore: file://{root}/dc2/rcs-a/keystore.p12
shipping:
  from_site: DC1
  to_site: DC2
  destination: file://{root}/dc2/speechminer/index-backup-replica
  ready_marker: _BACKUP_COMPLETE
"""


@pytest.fixture
def topology_file(tmp_path: Path) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(_topology_yaml(tmp_path), encoding="utf-8")
    return path


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    return parse_topology(_topology_yaml(tmp_path), "test-topology")


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """ctime cannot be set from user space, so an unchanged ctime proves nothing was rewritten."""
    return {
        rel: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ctime_ns)
        for rel, p in _files(folder).items()
    }


# --- size profile ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "files"), [(2 * 1024 * 1024, 12), (2 * 1024**3, 300), (100, 5), (0, 4), (10, 1), (10, 2)]
)
def test_size_profile_sums_exactly(total: int, files: int) -> None:
    sizes = size_profile(total, files)
    assert len(sizes) == files
    assert sum(sizes) == total
    assert all(size >= 0 for size in sizes)
    assert size_profile(total, files) == sizes


def test_size_profile_spans_bytes_to_megabytes() -> None:
    sizes = size_profile(2 * 1024 * 1024, 12)
    assert 0 in sizes
    assert any(0 < size < 100 for size in sizes)
    assert max(sizes) >= 1024 * 1024


def test_size_profile_for_benchmarks_reaches_tens_of_megabytes() -> None:
    sizes = size_profile(2 * 1024**3, 300)
    assert min(sizes) == 0
    assert any(0 < size < 1024 for size in sizes)
    assert max(sizes) >= 50 * 1024 * 1024


def test_size_profile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="files"):
        size_profile(10, 0)
    with pytest.raises(ValueError, match="negative"):
        size_profile(-1, 3)


# --- index backups -----------------------------------------------------------------------------------


def test_backups_one_folder_per_day_newest_last(tmp_path: Path) -> None:
    folders = generate_index_backups(tmp_path, days=3, end_day=DAY, total_bytes_per_backup=4096)
    assert [f.name for f in folders] == ["index-2026-11-18", "index-2026-11-19", "index-2026-11-20"]
    mtimes = [f.stat().st_mtime for f in folders]
    assert mtimes == sorted(mtimes)
    newest_files = _files(folders[-1])
    assert datetime.fromtimestamp(newest_files[EMPTY_FILE].stat().st_mtime, UTC).date() == DAY


def test_backup_contents(tmp_path: Path) -> None:
    total = 64 * 1024
    (folder,) = generate_index_backups(
        tmp_path, days=1, end_day=DAY, total_bytes_per_backup=total, files_per_backup=10
    )
    files = _files(folder)
    assert files[EMPTY_FILE].stat().st_size == 0
    assert NON_ASCII_FILE in files
    assert (folder / "meta" / "índice-ñ.idx").is_file()
    assert {rel.split("/")[0] for rel in files} >= {"meta", "segments"}
    marker = files.pop("_BACKUP_COMPLETE")
    assert sum(p.stat().st_size for p in files.values()) == total
    assert len(files) == 10
    assert all(marker.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in files.values())


def test_backup_without_marker(tmp_path: Path) -> None:
    (folder,) = generate_index_backups(
        tmp_path, days=1, end_day=DAY, total_bytes_per_backup=1000, ready_marker=None
    )
    assert "_BACKUP_COMPLETE" not in _files(folder)
    before = _snapshot(folder)
    generate_index_backups(tmp_path, days=1, end_day=DAY, total_bytes_per_backup=1000, ready_marker=None)
    assert _snapshot(folder) == before


def test_backup_rerun_same_seed_same_bytes(tmp_path: Path) -> None:
    kwargs = {"days": 2, "end_day": DAY, "total_bytes_per_backup": 3 * 1024 * 1024 + 17, "seed": 7}
    first = generate_index_backups(tmp_path / "a", **kwargs)
    second = generate_index_backups(tmp_path / "b", **kwargs)
    other_seed = generate_index_backups(tmp_path / "c", **{**kwargs, "seed": 8})
    for one, two, three in zip(first, second, other_seed, strict=True):
        ones, twos, threes = _files(one), _files(two), _files(three)
        assert ones.keys() == twos.keys() == threes.keys()
        for rel, path in ones.items():
            assert path.read_bytes() == twos[rel].read_bytes(), rel
        biggest = max(ones, key=lambda rel: ones[rel].stat().st_size)
        assert ones[biggest].read_bytes() != threes[biggest].read_bytes()


def test_backup_idempotent(tmp_path: Path) -> None:
    folders = generate_index_backups(tmp_path, days=2, end_day=DAY, total_bytes_per_backup=8192)
    before = {f: _snapshot(f) for f in folders}
    assert generate_index_backups(tmp_path, days=2, end_day=DAY, total_bytes_per_backup=8192) == folders
    assert {f: _snapshot(f) for f in folders} == before


def test_incomplete_backup_has_no_marker_and_is_finished_later(tmp_path: Path) -> None:
    folder = write_incomplete_backup(tmp_path, DAY, total_bytes=64 * 1024, files=10, seed=3)
    partial = _files(folder)
    assert "_BACKUP_COMPLETE" not in partial
    assert 0 < len(partial) < 10
    # Still being written: recent mtimes, not the day's backup window.
    assert max(p.stat().st_mtime for p in partial.values()) > datetime.now(UTC).timestamp() - 60

    (finished,) = generate_index_backups(
        tmp_path, days=1, end_day=DAY, total_bytes_per_backup=64 * 1024, files_per_backup=10, seed=3
    )
    (reference,) = generate_index_backups(
        tmp_path / "ref", days=1, end_day=DAY, total_bytes_per_backup=64 * 1024, files_per_backup=10, seed=3
    )
    assert finished == folder
    done, ref = _files(finished), _files(reference)
    assert done.keys() == ref.keys()
    assert all(done[rel].read_bytes() == ref[rel].read_bytes() for rel in ref)


def test_backup_of_today_never_in_the_future(tmp_path: Path) -> None:
    (folder,) = generate_index_backups(tmp_path, days=1, total_bytes_per_backup=100)
    now = datetime.now(UTC).timestamp()
    assert all(p.stat().st_mtime <= now for p in _files(folder).values())


def test_local_path() -> None:
    assert local_path("file:///var/lib/gir/dc1") == Path("/var/lib/gir/dc1")
    with pytest.raises(ValueError, match=r"file://"):
        local_path("s3://bucket/x")


# --- keystores ---------------------------------------------------------------------------------------


def test_keystores_identical_and_list_aliases(topology: Topology, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    paths = generate_keystores(topology, PASSWORD, expiring_in_days=10, now=now)
    assert set(paths) == {"rcs-dc1-a", "rcs-dc1-b", "rcs-dc2-a"}
    assert paths["rcs-dc2-a"] == tmp_path / "dc2" / "rcs-a" / "keystore.p12"
    contents = {path.read_bytes() for path in paths.values()}
    assert len(contents) == 1

    store = pkcs12.load_pkcs12(contents.pop(), PASSWORD.encode())
    assert store.key is not None
    assert store.cert is not None
    assert store.cert.friendly_name == CURRENT_ALIAS.encode()
    names = {cert.friendly_name for cert in store.additional_certs}
    assert names == {EXPIRED_ALIAS.encode(), EXPIRING_ALIAS.encode()}

    aliases = read_keystore_aliases(paths["rcs-dc1-a"], PASSWORD)
    assert set(aliases) == {CURRENT_ALIAS, EXPIRED_ALIAS, EXPIRING_ALIAS}
    assert aliases[CURRENT_ALIAS].has_private_key
    assert aliases[CURRENT_ALIAS].not_valid_after_utc > now + timedelta(days=300)
    assert aliases[EXPIRED_ALIAS].not_valid_after_utc < now
    assert now < aliases[EXPIRING_ALIAS].not_valid_after_utc <= now + timedelta(days=10)
    assert len({alias.sha256_fingerprint for alias in aliases.values()}) == 3


def test_keystore_without_expiring_alias(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    assert set(read_keystore_aliases(paths["rcs-dc1-a"], PASSWORD)) == {CURRENT_ALIAS, EXPIRED_ALIAS}


def test_wrong_password_fails(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(paths["rcs-dc1-a"].read_bytes(), b"not-the-password")


def test_drift_differs_in_bytes_and_aliases(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    assert paths["rcs-dc1-a"].read_bytes() == paths["rcs-dc1-b"].read_bytes()
    assert paths["rcs-dc2-a"].read_bytes() != paths["rcs-dc1-a"].read_bytes()
    reference = read_keystore_aliases(paths["rcs-dc1-a"], PASSWORD)
    drifted = read_keystore_aliases(paths["rcs-dc2-a"], PASSWORD)
    assert set(reference) - set(drifted) == {CURRENT_ALIAS}
    assert set(drifted) - set(reference) == {DRIFT_ALIAS}
    assert drifted[EXPIRED_ALIAS] == reference[EXPIRED_ALIAS]


def test_unknown_drift_instance(topology: Topology) -> None:
    with pytest.raises(ValueError, match="rcs-nowhere"):
        generate_keystores(topology, PASSWORD, drift=["rcs-nowhere"])


def test_keystores_idempotent_unless_forced(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    first = {name: path.read_bytes() for name, path in paths.items()}
    generate_keystores(topology, PASSWORD, drift=["rcs-dc2-a"])
    assert {name: path.read_bytes() for name, path in paths.items()} == first

    # A different request (no drift now) rewrites: the set no longer matches.
    generate_keystores(topology, PASSWORD)
    assert len({path.read_bytes() for path in paths.values()}) == 1
    assert paths["rcs-dc1-a"].read_bytes() != first["rcs-dc1-a"]

    again = paths["rcs-dc1-a"].read_bytes()
    generate_keystores(topology, PASSWORD, force=True)
    assert paths["rcs-dc1-a"].read_bytes() != again  # new salts
    assert len({path.read_bytes() for path in paths.values()}) == 1


def test_keystores_regenerated_for_a_new_password(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD)
    generate_keystores(topology, "another-password")
    assert set(read_keystore_aliases(paths["rcs-dc1-b"], "another-password")) == {
        CURRENT_ALIAS,
        EXPIRED_ALIAS,
    }


def test_drift_keystore_after_the_fact(topology: Topology) -> None:
    paths = generate_keystores(topology, PASSWORD, expiring_in_days=5)
    before = read_keystore_aliases(paths["rcs-dc1-b"], PASSWORD)
    assert drift_keystore(topology, "rcs-dc1-b", PASSWORD) == paths["rcs-dc1-b"]
    after = read_keystore_aliases(paths["rcs-dc1-b"], PASSWORD)
    assert set(after) == {DRIFT_ALIAS, EXPIRED_ALIAS, EXPIRING_ALIAS}
    assert after[EXPIRING_ALIAS] == before[EXPIRING_ALIAS]
    assert paths["rcs-dc1-a"].read_bytes() != paths["rcs-dc1-b"].read_bytes()

    drifted = paths["rcs-dc1-b"].read_bytes()
    drift_keystore(topology, "rcs-dc1-b", PASSWORD)
    assert paths["rcs-dc1-b"].read_bytes() == drifted
    with pytest.raises(ValueError, match="rcs-nowhere"):
        drift_keystore(topology, "rcs-nowhere", PASSWORD)


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_writes_files_and_never_prints_the_password(
    topology_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEYSTORE_PASSWORD_ENV, PASSWORD)
    code = demo_data.main(
        [
            "--topology",
            str(topology_file),
            "--days",
            "2",
            "--backup-bytes",
            "5000",
            "--drift",
            "rcs-dc2-a",
            "--expiring-in-days",
            "7",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert PASSWORD not in out
    assert PASSWORD not in err
    backups = sorted((tmp_path / "dc1" / "speechminer" / "index-backup").iterdir())
    assert len(backups) == 2
    assert all((folder / "_BACKUP_COMPLETE").is_file() for folder in backups)
    for name in ("dc1/rcs-a", "dc1/rcs-b", "dc2/rcs-a"):
        assert (tmp_path / name / "keystore.p12").is_file()
        assert str(tmp_path / name / "keystore.p12") in out
    assert "rcs-dc2-a" in out
    drifted = read_keystore_aliases(tmp_path / "dc2/rcs-a/keystore.p12", PASSWORD)
    assert set(drifted) == {DRIFT_ALIAS, EXPIRED_ALIAS, EXPIRING_ALIAS}


def test_cli_requires_the_password(
    topology_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEYSTORE_PASSWORD_ENV, raising=False)
    assert demo_data.main(["--topology", str(topology_file)]) == 2
    assert KEYSTORE_PASSWORD_ENV in capsys.readouterr().err
    assert not (tmp_path / "dc1").exists()


def test_cli_as_a_module(topology_file: Path, tmp_path: Path) -> None:
    env = {**os.environ, KEYSTORE_PASSWORD_ENV: PASSWORD}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "include.gir_sim.demo_data",
            "--topology",
            str(topology_file),
            "--days",
            "1",
            "--backup-bytes",
            "1000",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert (tmp_path / "dc1/rcs-a/keystore.p12").is_file()
