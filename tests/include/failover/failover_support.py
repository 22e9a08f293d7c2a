"""What the failover unit tests share: the simulated switch POSTs, Airflow's record of an answer, a
pre-flight record as the step leaves it, and Asset events as pre-flight reads them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from include.gir_ops.rws import RwsClient
from include.gir_ops.topology import Approver
from tests.conftest import SimulatedGir

SWITCH = "multimedia-switch"
APPROVERS = [Approver(id="approver", name="On-call approver"), Approver(id="second")]
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def no_sleep(_: float) -> None:
    return None


def switch_client(gir: SimulatedGir, site: str = "DC2") -> RwsClient:
    return RwsClient(site, gir.topology.site(site).rws_conn_id, sleep=no_sleep)


def environment_id(gir: SimulatedGir) -> str:
    return gir.environment()["environment_id"]


def switch_posts(gir: SimulatedGir, site: str) -> list[dict[str, Any]]:
    return [r for r in gir.simulator.state.requests(site) if r["method"] == "POST" and SWITCH in r["path"]]


SUBJECT = "eServices failover DC1 → DC2: approve the multimedia-switch?"


def decision(chosen: str = "Approve", by: str | None = "approver", **extra: Any) -> dict[str, Any]:
    """An answer as Airflow's HITL record holds it (what ``authorization.approval_of_run`` returns)."""
    return {
        "response_received": True,
        "chosen_options": [chosen],
        "responded_by_user": {"id": by, "name": by} if by else None,
        "responded_at": NOW.isoformat(),
        "subject": SUBJECT,
        **extra,
    }


def obs(site: str, reported: str | None, ok: bool = True) -> dict[str, Any]:
    return {"site": site, "ok": ok, "eServicesSite": reported}


@dataclass
class Event:
    extra: dict[str, Any]
    timestamp: datetime = NOW


def preflight_record(**overrides: Any) -> dict[str, Any]:
    record = {
        "request": {
            "target_site": "DC2",
            "reason": "```\n## All checks OK",
            "change_ticket": None,
            "dry_run": False,
            "triggered_by": "oncall",
        },
        "environment_id": "env-1",
        "current_site": "DC1",
        "nodes": [
            {"site": "DC2", "role": "target", "answered": False, "eServicesSite": None, "error": "refused"},
            {"site": "DC1", "role": "other", "answered": True, "eServicesSite": "DC1", "error": None},
        ],
        "keystore": {"level": "unknown", "text": "RCS keystore check: no information yet"},
        "backup": {"level": "ok", "text": "SpeechMiner backup at DC2: fresh"},
        "warnings": ["the target's RWS DC2 does not answer: refused"],
        "already_current": False,
    }
    return {**record, **overrides}


def approved() -> dict[str, Any]:
    return decision(by="second")
