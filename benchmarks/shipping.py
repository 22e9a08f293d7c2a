"""Benchmark 2, shipping throughput: our verified copy of a backup against the shell's verified copy.

Ours is the shipping DAG's own code path, the same public functions its tasks call, in order
(``include/gir_ops/backup/tasks.py``): ``manifest_task`` (list), ``copy_task`` (stream into
``<name>.partial``, hashing the source while copying, fsync per file), ``verify_and_publish_task`` (read
back, compare, write MANIFEST.json, rename). It runs in a child process, timed from the first call to the
last return (the imports a task process already has are outside), and reports its own peak RSS
(``ru_maxrss``).

The shell's way, run with ``bash -c``: ``sha256sum`` of every source file, ``cp -r``, ``sha256sum`` of
every copied file, and a comparison of the two lists.

Page cache, fairly: before every measured run, the previous destination is deleted, ``sync`` writes out
everything dirty, and the source files are dropped from the page cache (``posix_fadvise(DONTNEED)``, which
needs no root): every run starts from the same cold source, as a backup written hours earlier would be.
The sides alternate shell, ours, ours, shell, so a drift in the machine's load hits both alike; the ratio
is the mean of ours over the mean of the shell's.

The backup comes from the demo data generator (``generate_index_backups``): an empty file, a 7-byte
file, a non-ASCII name, then sizes growing geometrically up to the largest segment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import PYTHON, REPO_ROOT, Row, at_most, human, mib, seconds, subprocess_env

GIB = 1024**3
MIB = 1024**2
FULL_SIZES = (GIB // 2, 2 * GIB)  # the RSS comparison's two sizes; the throughput ratio uses the larger
FULL_FILES = 200  # "a few hundred files"; with 2 GiB the largest is ~145 MB (300 files: ~98 MB)
QUICK_SIZES = (MIB, 2 * MIB)
QUICK_FILES = 12
TARGET_RATIO = 1.0
RSS_TARGET = 1.10  # peak RSS at the larger size over the smaller: must not grow with the backup
SPACE_MARGIN = 1.2

SHELL_PIPELINE = r"""
set -euo pipefail
src="$1"; dst="$2"; sums="$3"
(cd "$src" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) > "$sums/source.sha256"
cp -r "$src" "$dst"
(cd "$dst" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) > "$sums/copy.sha256"
cmp -s "$sums/source.sha256" "$sums/copy.sha256"
"""


# --- the shipping child process -------------------------------------------------------------------


def ship(source_root: str, destination: str, backup_name: str) -> dict[str, Any]:
    """In the child: the DAG's manifest -> copy -> verify_and_publish, timed, with the peak RSS."""
    from airflow.sdk import ObjectStoragePath  # noqa: F401 - a task process has it imported already

    from include.gir_ops.backup.manifest import read_manifest
    from include.gir_ops.backup.route import ShippingRoute
    from include.gir_ops.backup.tasks import copy_task, manifest_task, verify_and_publish_task
    from include.gir_sim.demo_data import DEFAULT_READY_MARKER

    route = ShippingRoute(
        from_site="DC1",
        to_site="DC2",
        source_root=f"file://{source_root}",
        destination=f"file://{destination}",
        keep=7,
        ready_marker=DEFAULT_READY_MARKER,
        quiet_minutes=30,
        max_age_hours=26,
        wait_timeout_minutes=360,
        poll_seconds=60,
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    plan = manifest_task(route, backup_name)
    listed = time.perf_counter()
    copied = copy_task(route, plan)
    copied_at = time.perf_counter()
    published = verify_and_publish_task(route, plan, copied)
    done = time.perf_counter()
    manifest = read_manifest(route.final(backup_name))
    if manifest is None or manifest.manifest_sha256 != published["manifest_sha256"]:
        raise RuntimeError("the shipped backup has no valid MANIFEST.json")
    return {
        "seconds": done - started,
        "manifest_seconds": listed - started,
        "copy_seconds": copied_at - listed,
        "verify_publish_seconds": done - copied_at,
        "files": published["files"],
        "bytes": published["bytes"],
        "rss_before_kib": rss_before,
        "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


# --- the benchmark -----------------------------------------------------------------------------


def _drop_from_page_cache(folder: Path) -> None:
    """Write out dirty pages, then drop the folder's files from the page cache (no root needed)."""
    os.sync()
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _fresh(source: Path, destination: Path) -> None:
    """The same starting state for every run: no destination, nothing dirty, a cold source."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    _drop_from_page_cache(source)


def _run_shell(source_folder: Path, destination: Path, sums: Path) -> float:
    _fresh(source_folder.parent, destination)
    copy = destination / source_folder.name
    started = time.perf_counter()
    result = subprocess.run(
        ["bash", "-c", SHELL_PIPELINE, "bash", str(source_folder), str(copy), str(sums)],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the shell pipeline failed ({result.returncode}): {result.stderr[-500:]}")
    return elapsed


def _run_ours(source_folder: Path, destination: Path) -> dict[str, Any]:
    _fresh(source_folder.parent, destination)
    started = time.perf_counter()
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "benchmarks.shipping",
            "--ship",
            str(source_folder.parent),
            str(destination),
            source_folder.name,
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO_ROOT,
        check=False,
    )
    process_seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the shipping child failed ({result.returncode}): {result.stderr[-1500:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["process_seconds"] = process_seconds
    return report


def _check_space(workdir: Path, sizes: tuple[int, ...]) -> None:
    needed = int((sum(sizes) + max(sizes)) * SPACE_MARGIN)
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise RuntimeError(
            f"{workdir} has {free / GIB:.1f} GiB free; the shipping benchmark needs {needed / GIB:.1f} GiB "
            "(the backups plus one copy at a time): pass --workdir on a disk with more room"
        )


def run(
    *,
    quick: bool = False,
    workdir: Path | None = None,
    sizes: tuple[int, int] | None = None,
    files: int | None = None,
) -> list[Row]:
    from include.gir_sim.demo_data import generate_index_backups, size_profile

    small, large = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    file_count = files or (QUICK_FILES if quick else FULL_FILES)
    base = Path(workdir or os.environ.get("GIR_BENCH_WORKDIR") or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    _check_space(base, (small, large))
    with tempfile.TemporaryDirectory(prefix="gir-bench-shipping-", dir=base) as tmp:
        root = Path(tmp)
        sums = root / "sums"
        sums.mkdir()
        destination = root / "destination"
        folders = {}
        for size in (small, large):
            (folder,) = generate_index_backups(
                root / f"source-{size}", days=1, total_bytes_per_backup=size, files_per_backup=file_count
            )
            folders[size] = folder
        shell_seconds: list[float] = []
        ours: list[dict[str, Any]] = []
        # ABBA at the larger size (one pair in quick mode), then ours once at the smaller size for RSS.
        order = ["shell", "ours"] if quick else ["shell", "ours", "ours", "shell"]
        for side in order:
            if side == "shell":
                shell_seconds.append(_run_shell(folders[large], destination, sums))
            else:
                ours.append(_run_ours(folders[large], destination))
        small_run = _run_ours(folders[small], destination)
        largest_file = max(size_profile(large, file_count))
        hashing = _hash_speeds(max(folders[large].rglob("*"), key=lambda p: p.stat().st_size))
    return _rows(
        large=large,
        small=small,
        file_count=file_count,
        largest_file=largest_file,
        shell_seconds=shell_seconds,
        ours=ours,
        small_run=small_run,
        base=base,
        hashing=hashing,
    )


def _rows(
    *,
    large: int,
    small: int,
    file_count: int,
    largest_file: int,
    shell_seconds: list[float],
    ours: list[dict[str, Any]],
    small_run: dict[str, Any],
    base: Path,
    hashing: dict[str, float],
) -> list[Row]:
    shell_mean = sum(shell_seconds) / len(shell_seconds)
    ours_mean = sum(r["seconds"] for r in ours) / len(ours)
    ratio = ours_mean / shell_mean
    mb = large / 1e6
    phases = ours[-1]
    ours_list = ", ".join(seconds(r["seconds"]) for r in ours)
    shell_list = ", ".join(seconds(value) for value in shell_seconds)
    throughput = Row(
        benchmark="shipping",
        name=f"shipping {human(large)} ({file_count} files) vs sha256sum + cp -r + sha256sum",
        ratio=ratio,
        target=f"<= {TARGET_RATIO}",
        passed=at_most(ratio, TARGET_RATIO),
        figures=(
            f"ours {ours_list} (mean {seconds(ours_mean)}, {mb / ours_mean:.0f} MB/s; last run: manifest "
            f"{seconds(phases['manifest_seconds'])} + copy {seconds(phases['copy_seconds'])} + verify and "
            f"publish {seconds(phases['verify_publish_seconds'])}) vs shell {shell_list} (mean "
            f"{seconds(shell_mean)}, {mb / shell_mean:.0f} MB/s); largest file {human(largest_file)}; "
            f"cold source every run; on the disk of {base}"
        ),
        details={
            "bytes": large,
            "files": file_count,
            "ours_seconds": [r["seconds"] for r in ours],
            "shell_seconds": shell_seconds,
            "shipped_files": [r["files"] for r in ours],
            "shipped_bytes": [r["bytes"] for r in ours],
        },
    )
    peak_large = max(r["rss_peak_kib"] for r in ours) * 1024
    peak_small = small_run["rss_peak_kib"] * 1024
    before = small_run["rss_before_kib"] * 1024
    rss_ratio = peak_large / peak_small
    rss = Row(
        benchmark="shipping",
        name=f"shipping peak RSS, {human(large)} vs {human(small)} backup",
        ratio=rss_ratio,
        target=f"<= {RSS_TARGET}",
        passed=at_most(rss_ratio, RSS_TARGET),
        figures=(
            f"peak RSS {mib(peak_large)} at {human(large)} vs {mib(peak_small)} at {human(small)} "
            f"({(peak_large - peak_small) / MIB:+.1f} MiB for {large / small:g}x the data); "
            f"{mib(before)} after imports, before shipping"
        ),
        details={
            "rss_peak_large_bytes": peak_large,
            "rss_peak_small_bytes": peak_small,
            "rss_before_bytes": before,
            "small_shipped_files": small_run["files"],
        },
    )
    size = hashing["bytes"]
    speed = Row(
        benchmark="shipping",
        name="shipping breakdown: SHA-256 of the largest file, Python hashlib / coreutils sha256sum",
        ratio=hashing["hashlib"] / hashing["sha256sum"],
        target="-",
        passed=None,
        figures=(
            f"hashlib (OpenSSL, what the shipping code uses) {size / hashing['hashlib'] / 1e6:.0f} MB/s vs "
            f"sha256sum {size / hashing['sha256sum'] / 1e6:.0f} MB/s on {human(size)} in the page cache "
            "(median of 3): how much of the shipping ratio is the hash function rather than the single read"
        ),
        info=True,
        details=hashing,
    )
    return [throughput, rss, speed]


def _hash_speeds(path: Path, samples: int = 3) -> dict[str, float]:
    """Seconds to SHA-256 one file (already in the page cache) with hashlib and with sha256sum."""
    import hashlib

    from include.gir_ops.backup.transfer import CHUNK_SIZE

    def with_hashlib() -> float:
        buffer = bytearray(CHUNK_SIZE)
        view = memoryview(buffer)
        digest = hashlib.sha256()
        started = time.perf_counter()
        with path.open("rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                digest.update(view[:count])
        return time.perf_counter() - started

    def with_sha256sum() -> float:
        started = time.perf_counter()
        subprocess.run(["sha256sum", str(path)], capture_output=True, check=True)
        return time.perf_counter() - started

    with_hashlib()  # into the page cache
    timings: dict[str, list[float]] = {"hashlib": [], "sha256sum": []}
    for _ in range(samples):
        timings["sha256sum"].append(with_sha256sum())
        timings["hashlib"].append(with_hashlib())
    return {name: sorted(values)[len(values) // 2] for name, values in timings.items()} | {
        "bytes": float(path.stat().st_size)
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ship", nargs=3, metavar=("SOURCE_ROOT", "DESTINATION", "BACKUP_NAME"))
    arguments = parser.parse_args()
    if not arguments.ship:
        parser.error("--ship is required (the benchmark itself runs through `python -m benchmarks`)")
    print(json.dumps(ship(*arguments.ship)))
