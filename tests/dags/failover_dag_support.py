"""What the failover DAG tests share: the simulated deployment they run against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import SimulatedGir


def fast_failover_gir(
    gir_factory: Callable[..., SimulatedGir],
    tmp_path: Path,
    approvers: list[dict[str, Any]],
    *,
    site_field: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> SimulatedGir:
    """The default three DCs with a short drMonitoringDelay, one-minute approval and confirmation
    timeouts, and the audit log under ``tmp_path``."""
    failover: dict[str, Any] = {
        "approvers": approvers,
        "dr_monitoring_delay_seconds": 1,
        "verify_margin_seconds": 2,
        "response_timeout_minutes": 1,
        "confirm_timeout_minutes": 1,
        "audit_log": f"file://{tmp_path}/audit/failover",
    }
    if site_field:
        failover["site_field"] = site_field
    return gir_factory({"failover": failover, **(overrides or {})}, dr_monitoring_delay_seconds=0.5)
