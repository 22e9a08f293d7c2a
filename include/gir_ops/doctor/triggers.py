"""The doctor's readability check, run inside the triggerer (it waits for backups and switches there).

Reads only: lists folders and reads the first bytes of keystores, each bounded by a timeout, in threads,
so a hung mount cannot block the triggerer's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

TRIGGER_CLASSPATH = "include.gir_ops.doctor.triggers.PathsReadableTrigger"


class PathsReadableTrigger(BaseTrigger):
    """Read every path (label, url, kind) from the triggerer; one event with the report rows."""

    def __init__(self, paths: list[dict[str, str]], timeout_seconds: float) -> None:
        super().__init__()
        self.paths = paths
        self.timeout_seconds = timeout_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return TRIGGER_CLASSPATH, {"paths": self.paths, "timeout_seconds": self.timeout_seconds}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from include.gir_ops.doctor.checks import path_rows

        rows = await asyncio.to_thread(path_rows, self.paths, "triggerer", timeout=self.timeout_seconds)
        yield TriggerEvent({"rows": [row.to_dict() for row in rows]})
