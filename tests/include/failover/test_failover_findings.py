"""What the approver reads: the keystore and backup findings, and the approval request's text."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from include.gir_ops.failover import findings
from include.gir_ops.topology import load_topology
from tests.include.failover.failover_support import NOW, Event, preflight_record

# --- findings from the other DAGs ----------------------------------------------------------------------


def test_keystore_findings() -> None:
    topology = load_topology()
    assert "no information yet" in findings.keystore_finding(None, topology, NOW)["text"]
    ok = Event({"ok": True, "checked_at": (NOW - timedelta(minutes=30)).isoformat(), "warnings": []})
    assert findings.keystore_finding(ok, topology, NOW)["level"] == "ok"
    stale = Event({"ok": True, "checked_at": (NOW - timedelta(hours=5)).isoformat()})
    assert "stale" in findings.keystore_finding(stale, topology, NOW)["text"]
    bad = Event({"ok": False, "checked_at": NOW.isoformat(), "states": {"rcs-dc2-a": "differs"}})
    finding = findings.keystore_finding(bad, topology, NOW)
    assert finding["level"] == "warning" and "rcs-dc2-a" in finding["text"]
    warned = Event({"ok": True, "checked_at": NOW.isoformat(), "warnings": ["expires in 10 days"]})
    assert "expires in 10 days" in findings.keystore_finding(warned, topology, NOW)["text"]
    assert "could not be read" in findings.keystore_finding(None, topology, NOW, "KeyError")["text"]


def test_backup_findings() -> None:
    topology = load_topology()
    assert "no information yet" in findings.backup_finding(None, topology, "DC2", NOW)["text"]
    fresh = Event({"backup_name": "2026-11-19", "shipped_at": (NOW - timedelta(hours=2)).isoformat()})
    finding = findings.backup_finding(fresh, topology, "DC2", NOW)
    assert finding["level"] == "ok" and "2026-11-19" in finding["text"] and "2.0 h ago" in finding["text"]
    old = Event({"backup_name": "2026-11-17", "shipped_at": (NOW - timedelta(hours=30)).isoformat()})
    assert "stale" in findings.backup_finding(old, topology, "DC2", NOW)["text"]
    assert "none is shipped to DC3" in findings.backup_finding(None, topology, "DC3", NOW)["text"]
    assert findings.backup_finding(None, topology, "DC1", NOW)["level"] == "ok"


def test_latest_event_read_errors_become_findings() -> None:
    class Broken:
        def __getitem__(self, _: Any) -> Any:
            raise KeyError("asset not registered")

    event, error = findings.latest_event(Broken(), object())
    assert event is None and "asset not registered" in error


def test_approval_text_shows_findings_and_keeps_the_reason_inert() -> None:
    subject, body = findings.approval_text(preflight_record(), load_topology())
    assert subject.startswith("eServices failover DC1 → DC2")
    assert "| DC2 (target) | **no**: refused | — |" in body and "| DC1 | yes | DC1 |" in body
    assert "```text\n'''\n## All checks OK\n```" in body, "user text cannot close the fence"
    assert "no information yet" in body and "⚠ the target's RWS DC2 does not answer" in body
    assert "two-person rule" in body
