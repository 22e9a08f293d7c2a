"""The replication's decisions without a scheduler: request, check freshness, reference, subject, verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops import approvals
from include.gir_ops.keystore import replicate
from include.gir_ops.keystore.model import CertificateInfo, KeystoreReading, KeystoreTarget
from include.gir_ops.keystore.replicate import ReplicationRefused
from include.gir_ops.topology import Topology, parse_topology
from tests.include.keystore.keystore_support import topology_yaml

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    text = topology_yaml(tmp_path) + (
        "  schedule: '0 * * * *'\n"
        "keystore_replication:\n"
        "  approvers: [{id: approver}, {id: second}]\n"
        f"  audit_log: file://{tmp_path}/audit\n"
        "  check_grace_minutes: 15\n"
    )
    return parse_topology(text, "test")


@dataclass
class Event:
    extra: dict[str, Any]
    timestamp: datetime = NOW


def test_request_is_validated_at_the_edge(topology: Topology) -> None:
    ok = replicate.read_request(
        {}, {"reason": "rebuilt rcs-dc3-a", "targets": ["rcs-dc3-a"]}, "oncall", topology
    )
    assert (ok.targets, ok.dry_run, ok.triggered_by) == (["rcs-dc3-a"], False, "oncall")
    for conf, params, words in [
        ({"dryrun": True}, {"reason": "x" * 12}, "unknown trigger conf key(s) ['dryrun']"),
        ({}, {"reason": "x" * 12, "targets": ["rcs-dc9"]}, "'rcs-dc9' is not an RCS instance"),
        ({}, {"reason": "x" * 12, "targets": ["rcs-dc1-a"]}, "is the reference"),
        ({}, {"reason": "short"}, "at least 10 characters"),
    ]:
        with pytest.raises(
            ReplicationRefused, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
        ):
            replicate.read_request(conf, params, "oncall", topology)


def test_the_latest_check_must_be_recent_enough_for_its_schedule(topology: Topology) -> None:
    # Hourly schedule: one period (60 min) plus 15 min grace.
    assert replicate.allowed_check_age(topology, NOW) == timedelta(minutes=75)
    fresh = Event({"checked_at": (NOW - timedelta(minutes=70)).isoformat(), "states": {"rcs-dc2-a": "drift"}})
    assert replicate.latest_check(fresh, topology, NOW)["states"] == {"rcs-dc2-a": "drift"}
    stale = Event({"checked_at": (NOW - timedelta(minutes=80)).isoformat(), "states": {}})
    with pytest.raises(
        ReplicationRefused, match=r"80 min ago.*allows 75 min. Trigger gir_rcs_keystore_check"
    ):
        replicate.latest_check(stale, topology, NOW)
    with pytest.raises(ReplicationRefused, match="no keystore check on record"):
        replicate.latest_check(None, topology, NOW)


def _reading(**fields: Any) -> KeystoreReading:
    return KeystoreReading(target=KeystoreTarget("rcs-dc1-a", "DC1", "file:///ks"), **fields)


def _key(alias: str, expiry: str) -> CertificateInfo:
    return CertificateInfo(alias, True, "AA", "2020-01-01T00:00:00+00:00", expiry, -5, "private_key", "CN=x")


def test_only_a_readable_opened_unexpired_reference_is_copied() -> None:
    cases = [
        (_reading(missing=True, error="file does not exist: file:///ks"), "is missing"),
        (_reading(error="corrupt: 40 unexpected bytes"), "is unreadable (corrupt"),
        (_reading(sha256="ab", not_opened_reason="no password_conn_id"), "set its password_conn_id"),
        (_reading(sha256="ab", opened=True, certificates=[_key("old", "expired")]), "no private key with an"),
    ]
    for reading, words in cases:
        with pytest.raises(ReplicationRefused, match=re.escape(words)) as caught:
            replicate.refuse_bad_reference("rcs-dc1-a", reading)
        assert caught.value.outcome == replicate.PREFLIGHT_FAILED
    good = _reading(sha256="ab", opened=True, certificates=[_key("old", "expired"), _key("new", "valid")])
    replicate.refuse_bad_reference("rcs-dc1-a", good)


def test_the_subject_names_targets_and_reference_digest_and_is_read_back() -> None:
    plan = {
        "reference": {"instance": "rcs-dc1-a", "sha256": "0123456789abcdef" * 4},
        "targets": [{"instance": "rcs-dc2-a"}, {"instance": "rcs-dc3-a"}],
    }
    subject = replicate.approval_subject(plan)
    assert subject == (
        "RCS keystore replication: replace 2 keystore(s) [rcs-dc2-a, rcs-dc3-a] with rcs-dc1-a's "
        "(sha256 0123456789abcdef)?"
    )
    assert replicate.subject_plan(subject) == (["rcs-dc2-a", "rcs-dc3-a"], "0123456789abcdef")
    assert replicate.subject_plan("approve?") is None


def test_the_approval_rule_is_the_failovers(topology: Topology) -> None:
    """Same implementation: the shared module, with this action's words."""
    answer = {
        "response_received": True,
        "chosen_options": ["Approve"],
        "responded_by_user": {"id": "approver", "name": "approver"},
        "responded_at": NOW.isoformat(),
        "subject": "RCS keystore replication: replace 1 keystore(s) [rcs-dc2-a] with rcs-dc1-a's "
        "(sha256 ab)?",
    }

    def authorize(approval: dict[str, Any], by: str, names: list[str]) -> dict[str, Any]:
        return approvals.authorize(
            approval,
            by,
            ["approver", "second"],
            gate=replicate.GATE,
            triggered_via="rest_api",
            trusted_trigger_needed=True,
            untrusted_consequence="",
            subject_matches=lambda shown: replicate.subject_plan(shown) == (names, "ab"),
            requested="that",
        )

    assert authorize(answer, "oncall", ["rcs-dc2-a"])["approved_by"]["id"] == "approver"
    with pytest.raises(approvals.ApprovalRefused, match="two-person rule") as caught:
        authorize(answer, "approver", ["rcs-dc2-a"])
    assert caught.value.kind == approvals.SELF_APPROVAL_REFUSED
    with pytest.raises(approvals.ApprovalRefused, match="no keystore was replaced") as caught:
        authorize(answer, "oncall", ["rcs-dc2-a", "rcs-dc3-a"])  # the approver was shown fewer targets
    assert caught.value.kind == approvals.NOT_AUTHORIZED


def test_the_verdict_table() -> None:
    pre = {"targets": [{"instance": "rcs-dc2-a"}], "request": {"dry_run": False}}
    replaced = {
        "instance": "rcs-dc2-a",
        "url": "file:///k",
        "status": "replaced",
        "backup": "file:///k.bak-1",
    }
    assert replicate.decide({})[0] == replicate.ERROR
    assert replicate.decide({"preflight": {**pre, "nothing_to_do": True}})[0] == replicate.NOTHING_TO_DO
    rejected = {
        "response_received": True,
        "chosen_options": ["Reject"],
        "responded_by_user": {"id": "second"},
    }
    assert replicate.decide({"preflight": pre, "approval": rejected})[0] == approvals.REJECTED
    outcome, _, follow_ups = replicate.decide(
        {"preflight": pre, "replicate": {"results": [replaced]}, "verify": {"states": {"rcs-dc2-a": "match"}}}
    )
    assert outcome == replicate.REPLICATED
    assert follow_ups == [
        "restart RCS instance rcs-dc2-a (file:///k): RCS reads its keystore at start",
        "previous keystore of rcs-dc2-a kept as file:///k.bak-1",
    ]
    still_drift = {"states": {"rcs-dc2-a": "drift"}}
    assert replicate.decide({"preflight": pre, "replicate": {"results": [replaced]}, "verify": still_drift})[
        0
    ] == (replicate.VERIFY_FAILED)
