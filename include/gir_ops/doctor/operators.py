"""``TriggererChecksOperator``: hand the readability check to the triggerer and bring its rows back."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from include.gir_ops.doctor.spec import PATH_TIMEOUT_SECONDS, TRIGGERER_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from airflow.sdk import Context


class TriggererChecksOperator(BaseOperator):
    """Defers at once; the triggerer reads every path and the task returns its rows.

    When no triggerer picks the check up within ``TRIGGERER_TIMEOUT_SECONDS`` the task fails on its
    deferral timeout, and the report says the triggerer did not answer.
    """

    def execute(self, context: Context) -> None:
        from include.gir_ops.doctor.checks import checked_paths
        from include.gir_ops.doctor.triggers import PathsReadableTrigger
        from include.gir_ops.topology import load_topology

        paths = checked_paths(load_topology())
        self.defer(
            trigger=PathsReadableTrigger(paths, PATH_TIMEOUT_SECONDS),
            method_name="execute_complete",
            timeout=timedelta(seconds=TRIGGERER_TIMEOUT_SECONDS),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        return list(event["rows"])
