"""What the failover DAG tests share: the simulated deployment they run against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import SimulatedGir


def fast_failover_gir(
    gir_factory: Callable[..., SimulatedGir], tmp_path: Path, approvers: list[dict[str, Any]]
) -> SimulatedGir:
    """The default three DCs with a short drMonitoringDelay, a one-minute approval timeout, and the audit
    log under ``tmp_path``."""
    return gir_factory(
        {
            "failover": {
                "approvers": approvers,
                "dr_monitoring_delay_seconds": 1,
                "verify_margin_seconds": 2,
                "response_timeout_minutes": 1,
                "audit_log": f"file://{tmp_path}/audit/failover",
            }
        },
        dr_monitoring_delay_seconds=0.5,
    )
