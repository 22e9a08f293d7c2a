"""`make test` on a clean clone: nothing beside the repository, and the browser test's programs set up.

The browser-deps target is run for real with a PATH holding only stand-ins (chromium, chromedriver,
id, apt-get), so what it would install, and the command it prints when it cannot, are checked without
touching the machine's packages.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
SKIPPED_DIRS = {".git", ".venv", ".local", "test-artifacts", ".pytest_cache", ".ruff_cache", "__pycache__"}
# A path out of the repository into a sibling folder: "../shared", REPO.parent / "shared", parents[3].
OUTSIDE = re.compile(r"\.\./shared\b|\.parent\s*/\s*[\"']shared[\"']|[\"']\.\.[\"']\s*,\s*[\"']shared[\"']")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".sh", ".example", ""}
INSTALL_HINT = "sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver"


def _repo_text_files() -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [name for name in dirs if name not in SKIPPED_DIRS]
        files += [Path(folder, name) for name in names if Path(name).suffix in TEXT_SUFFIXES]
    return files


def test_nothing_in_the_repository_reads_a_folder_beside_it() -> None:
    this_file = Path(__file__).resolve()
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _repo_text_files()
        if path.resolve() != this_file
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []
    scanned = {str(path.relative_to(REPO)) for path in _repo_text_files()}
    assert {"Makefile", ".ci/run", "tests/deploy/test_compose.py"} <= scanned


def test_the_pattern_above_finds_the_old_schema_path() -> None:
    assert OUTSIDE.search('COMPOSE_SCHEMA = REPO.parent / "shared" / "reference" / "compose-spec.json"')
    assert OUTSIDE.search("(<repo>/../shared/reference/compose-spec.json)")
    assert not OUTSIDE.search("from include.gir_ops.shared import OPS_API")


def test_ci_runs_exactly_make_test() -> None:
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line.strip() for line in lines[1:] if line.strip() and not line.lstrip().startswith("#")]
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "exec make test"]


def _stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _browser_deps(
    tmp_path: Path, *, programs: tuple[str, ...], uid: int, target: str = "browser-deps"
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `make <target>` (browser-deps, jdk-deps) with only the given programs on PATH, as user ``uid``."""
    assert MAKE, "make is what the README's `make test` runs"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "apt-get.calls"
    for name in programs:
        _stand_in(bin_dir, name, "exit 0")
    _stand_in(bin_dir, "id", f'[ "$1" = "-u" ] && echo {uid}')
    _stand_in(bin_dir, "apt-get", f'echo "$DEBIAN_FRONTEND $*" >> "{calls}"')
    result = subprocess.run(
        [MAKE, "--no-print-directory", "-C", str(REPO), target],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []


def test_browser_deps_does_nothing_when_both_programs_are_there(tmp_path: Path) -> None:
    result, apt_calls = _browser_deps(tmp_path, programs=("chromium", "chromedriver"), uid=1000)
    assert (result.returncode, apt_calls, result.stderr) == (0, [], "")


@pytest.mark.parametrize("present", [(), ("chromium",), ("chromedriver",)])
def test_browser_deps_installs_debian_packages_as_root(tmp_path: Path, present: tuple[str, ...]) -> None:
    result, apt_calls = _browser_deps(tmp_path, programs=present, uid=0)
    assert result.returncode == 0, result.stderr
    assert apt_calls == [
        "noninteractive update -qq",
        "noninteractive install -y -qq chromium chromium-driver",
    ]


def test_browser_deps_stops_with_the_command_when_not_root(tmp_path: Path) -> None:
    result, apt_calls = _browser_deps(tmp_path, programs=("chromium",), uid=1000)
    assert result.returncode != 0
    assert apt_calls == []
    assert INSTALL_HINT in result.stderr.splitlines()[1]
    assert "chromium and chromedriver" in result.stderr


def test_make_test_sets_up_the_browser_before_running_pytest() -> None:
    assert MAKE
    dry_run = subprocess.run(
        [MAKE, "--no-print-directory", "-n", "-C", str(REPO), "test"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "apt-get install -y -qq chromium chromium-driver" in dry_run
    assert dry_run.index("command -v chromium") < dry_run.index("bin/pytest")


@pytest.mark.parametrize("present", [(), ("keytool",), ("openssl",)])
def test_jdk_deps_installs_a_jdk_for_the_keystore_tests_as_root(
    tmp_path: Path, present: tuple[str, ...]
) -> None:
    result, apt_calls = _browser_deps(tmp_path, programs=present, uid=0, target="jdk-deps")
    assert result.returncode == 0, result.stderr
    assert apt_calls == [
        "noninteractive update -qq",
        "noninteractive install -y -qq default-jdk-headless openssl",
    ]


def test_jdk_deps_does_nothing_when_keytool_is_there_and_stops_when_not_root(tmp_path: Path) -> None:
    result, apt_calls = _browser_deps(
        tmp_path / "a", programs=("keytool", "openssl"), uid=1000, target="jdk-deps"
    )
    assert (result.returncode, apt_calls, result.stderr) == (0, [], "")
    result, apt_calls = _browser_deps(tmp_path / "b", programs=(), uid=1000, target="jdk-deps")
    assert result.returncode != 0
    assert apt_calls == []
    assert "apt-get install -y -qq default-jdk-headless openssl" in result.stderr


def test_make_test_installs_the_jdk_before_running_pytest() -> None:
    assert MAKE
    dry_run = subprocess.run(
        [MAKE, "--no-print-directory", "-n", "-C", str(REPO), "test"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "apt-get install -y -qq default-jdk-headless openssl" in dry_run
    assert dry_run.index("command -v keytool") < dry_run.index("bin/pytest")
