"""The doctor's report for people (a table: check, result, fix) and for machines (a dict)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from include.gir_ops.doctor.spec import Row, Status

_RESULT_WIDTH = 90
_FIX_WIDTH = 60


def failed(rows: Sequence[Row]) -> list[Row]:
    return [row for row in rows if row.status is Status.FAIL]


def summary(rows: Sequence[Row]) -> str:
    bad = failed(rows)
    unchecked = sum(row.status is Status.CANNOT_CHECK for row in rows)
    tail = f", {unchecked} could not be checked" if unchecked else ""
    if bad:
        return f"RED: {len(bad)} of {len(rows)} checks failed: {', '.join(r.check for r in bad)}{tail}"
    return f"GREEN: {len(rows)} checks, none failed{tail}"


def format_table(rows: Sequence[Row]) -> str:
    """A fixed-width table: check, result (status first), fix; long cells wrap in their column."""
    check_width = max([len("check"), *(len(r.check) for r in rows)])
    lines = [
        f"{'check'.ljust(check_width)}  {'result'.ljust(_RESULT_WIDTH)}  fix",
        f"{'-' * check_width}  {'-' * _RESULT_WIDTH}  {'-' * 3}",
    ]
    for row in rows:
        result = textwrap.wrap(f"{row.status}: {row.result}", _RESULT_WIDTH) or [""]
        fix = textwrap.wrap(row.fix, _FIX_WIDTH) if row.status is not Status.OK else []
        for index in range(max(len(result), len(fix))):
            name = row.check if index == 0 else ""
            cell = result[index] if index < len(result) else ""
            advice = fix[index] if index < len(fix) else ""
            lines.append(f"{name.ljust(check_width)}  {cell.ljust(_RESULT_WIDTH)}  {advice}".rstrip())
    return "\n".join(lines)


def to_dict(rows: Sequence[Row]) -> dict[str, Any]:
    return {
        "ok": not failed(rows),
        "summary": summary(rows),
        "failed": [row.check for row in failed(rows)],
        "rows": [row.to_dict() for row in rows],
        "table": format_table(rows),
    }


def triggerer_paths_missing(timeout_seconds: float) -> Row:
    """The row when the triggerer never ran the readability check (no triggerer, or it is stuck)."""
    return Row(
        "paths from the triggerer",
        Status.FAIL,
        f"the triggerer did not run the readability check within {timeout_seconds:g} s: no triggerer is "
        "running, or it is overloaded",
        "start a triggerer (`airflow triggerer`) with the same mounts as the workers",
    )
