"""The audit record: complete, without credentials, one new file per write."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from include.gir_ops.failover import audit, spec
from include.gir_ops.failover.triggers import VERIFIED
from include.gir_ops.topology import load_topology
from tests.include.failover.failover_support import NOW, approved, obs, preflight_record


@dataclass
class FakeDagRun:
    dag_id: str = spec.DAG_ID
    run_id: str = "manual__2026-11-20T03:00:00+00:00"
    triggering_user_name: str = "oncall"
    start_date: datetime = NOW
    conf: dict[str, Any] = field(default_factory=dict)


def test_audit_record_is_complete_and_holds_no_credentials(tmp_path: Path) -> None:
    steps = {
        "preflight": {**preflight_record(), "rws_answers": [{"phase": "preflight", "site": "DC1"}]},
        "approval": approved(),
        "recheck": {"decision": "switch", "detail": "x", "current_site": "DC1", "rws_answers": []},
        "switch": {
            "posted": True,
            "answer": "accepted",
            "via_site": "DC2",
            "http_status": 200,
            "statusCode": 0,
        },
        "verification": {
            "outcome": VERIFIED,
            "detail": "ok",
            "last_observations": [obs("DC1", "DC2"), obs("DC2", "DC2")],
            "answers": [{"site": "DC1", "http_status": 200, "statusCode": 0}],
        },
        "states": {"switch_eservices_site": "success"},
    }
    record = audit.build_audit_record(steps, topology=load_topology(), dag_run=FakeDagRun(), written_at=NOW)
    assert record["outcome"] == "verified"
    assert (record["site_before"], record["site_after"]) == ("DC1", "DC2")
    assert record["decision"] == {
        "chosen": "Approve",
        "by": {"id": "second", "name": "second"},
        "at": NOW.isoformat(),
        "timed_out": False,
    }
    assert [a["phase"] for a in record["rws_answers"]] == ["preflight", "verify"]
    assert record["follow_ups"] and record["triggered_by"] == "oncall"

    audit_log = f"file://{tmp_path}/audit"
    first = audit.write_audit_record(audit_log, record, started_at=NOW, try_number=1)
    again = audit.write_audit_record(audit_log, record, started_at=NOW, try_number=1)
    retry = audit.write_audit_record(audit_log, record, started_at=NOW, try_number=2)
    names = sorted(p.name for p in (tmp_path / "audit").iterdir())
    assert names == [
        "20261120T030000Z_manual__2026-11-20T03_00_00_00_00_try1-2.json",
        "20261120T030000Z_manual__2026-11-20T03_00_00_00_00_try1.json",
        "20261120T030000Z_manual__2026-11-20T03_00_00_00_00_try2.json",
    ], "each write adds a file; none is overwritten"
    assert len({first, again, retry}) == 3
    assert json.loads((tmp_path / "audit" / names[1]).read_text()) == json.loads(json.dumps(record))


def test_a_refused_preflight_is_audited_from_the_one_record_shape() -> None:
    refused = {"outcome": "not-authorized", "message": "this run was triggered via cli, not by a person"}
    steps = {"preflight": {**preflight_record(), "refused": refused, "error": None, "rws_answers": []}}
    record = audit.build_audit_record(steps, topology=load_topology(), dag_run=FakeDagRun(), written_at=NOW)
    assert (record["outcome"], record["outcome_ok"]) == ("not-authorized", False)
    assert record["detail"] == refused["message"]
    assert record["preflight"]["refused"] == refused and record["preflight"]["error"] is None
    assert record["follow_ups"] == []
