"""Benchmarks of gir-ops: ratios measured side by side in one run, never absolute timings.

The machine these run on is shared and noisy, so every row compares our code with a baseline measured in
the same run, under the same conditions, and shows the absolute figures behind the ratio. ``make bench``
runs them all (``python -m benchmarks``); ``make test`` only runs a tiny smoke case of each
(``tests/benchmarks/test_bench_smoke.py``) so they cannot rot, and never asserts a speed.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One line of the table: a ratio, its target, whether it was met, and the figures behind it."""

    benchmark: str  # the module that produced it: parse_cost, shipping, reindex_overhead, keystore_fanout
    name: str
    ratio: float | None
    target: str  # human-readable, e.g. "<= 1.5"
    passed: bool | None  # None: not judged (smoke mode, or the run failed before a ratio existed)
    figures: str  # the absolute numbers behind the ratio
    details: dict[str, object] = field(default_factory=dict)  # machine-readable figures, for tests
    timing: bool = True  # a speed ratio (not judged in smoke mode); False for counts that are exact
    info: bool = False  # a breakdown row explaining another row: never judged
    # Where the time goes, from this run's own profile figures: printed under the table when the target
    # is missed, so a miss is always explained by the run that measured it.
    why_missed: str = ""

    @property
    def verdict(self) -> str:
        if self.info:
            return "info"
        if self.passed is None:
            return "n/a"
        return "pass" if self.passed else "FAIL"


def at_most(ratio: float | None, limit: float) -> bool | None:
    return None if ratio is None else ratio <= limit


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(size_bytes: float) -> str:
    return f"{size_bytes / 1024 / 1024:.1f} MiB"


def human(size_bytes: float) -> str:
    """0.5 GiB, 2 GiB, 2 MiB: sizes as the issue states them."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size_bytes >= factor:
            return f"{size_bytes / factor:.4g} {unit}"
    return f"{size_bytes:g} B"


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s" if value >= 0.1 else ms(value)


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3f}" if ratio < 0.1 else f"{ratio:.2f}"


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table: readable in a terminal and in docs/benchmarks.md."""
    header = "| Benchmark | Ratio | Target | Result | Figures behind the ratio |"
    lines = [header, "|---|---:|---|---|---|"]
    for row in rows:
        figures = row.figures.replace("|", "/").replace("\n", " ")
        lines.append(f"| {row.name} | {format_ratio(row.ratio)} | {row.target} | {row.verdict} | {figures} |")
    return "\n".join(lines)


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark child process: this repo importable, its plugins found (they
    register the re-index DAGs' custom timetable, as in every deployment; Airflow loads them lazily, in
    the first process step that needs them), plus ``extra``."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
    env.update(extra or {})
    return env


PYTHON = sys.executable
