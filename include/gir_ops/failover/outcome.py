"""The run's verdict: what happened, decided from what each step recorded, and what must follow by hand.

Every step records the same shape in XCom key ``record`` (``steps.step_record``): ``started_at``,
``rws_answers``, ``refused`` ({outcome, message} or None), ``error`` (text or None) and the step's own
fields. :func:`decide_outcome` reads that shape, and judges the approval with the same function that
authorized (or refused) the switch, ``authorization.judge_approval``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from include.gir_ops.failover.authorization import judge_approval
from include.gir_ops.failover.spec import (
    APPROVE_FAILOVER,
    DAG_ID,
    PREFLIGHT,
    RECHECK,
    SWITCH,
    VERIFY,
    Outcome,
    Verdict,
)
from include.gir_ops.failover.triggers import UNVERIFIED, VERIFIED
from include.gir_ops.topology import Topology


def refusal_of(record: Mapping[str, Any] | None) -> Verdict | None:
    """The refusal a step recorded, if it refused."""
    refused = (record or {}).get("refused")
    return Verdict(Outcome(refused["outcome"]), refused["message"]) if refused else None


def decide_outcome(  # noqa: PLR0911, PLR0912 - a decision table, read top to bottom
    *,
    preflight: Mapping[str, Any] | None,
    approval: Mapping[str, Any] | None,
    recheck: Mapping[str, Any] | None,
    switch: Mapping[str, Any] | None,
    verification: Mapping[str, Any] | None,
    states: Mapping[str, Any],
) -> Verdict:
    """What happened, from what each step recorded (and the task states where a step left no record).

    ``approval`` is Airflow's record of the answer (``audit.recorded_answer``): None when nobody answered,
    ``{"unreadable": ...}`` when it could not be read (then the re-check's and the switch's own reading of
    it decide, through their recorded refusals).
    """
    preflight, recheck, switch = preflight or {}, recheck or {}, switch or {}
    refusal = refusal_of(preflight)
    if refusal is not None and refusal.outcome != Outcome.PREFLIGHT_FAILED:
        return refusal
    if refusal or preflight.get("error") or "request" not in preflight or "environment_id" not in preflight:
        why = (
            (refusal.detail if refusal else None)
            or preflight.get("error")
            or f"the preflight task ended {states.get(PREFLIGHT) or 'without a record'}"
        )
        return Verdict(Outcome.PREFLIGHT_FAILED, f"pre-flight failed: {why}; nothing was asked or switched")
    target = preflight["request"]["target_site"]
    if preflight.get("already_current"):
        return Verdict(
            Outcome.ALREADY_CURRENT,
            f"RWS already reports {target}: no approval was asked and nothing was switched",
        )
    if approval is None:
        if states.get(APPROVE_FAILOVER) == "success":
            return Verdict(
                Outcome.NOT_AUTHORIZED,
                "approve_failover succeeded without an answer (marked success by hand?); "
                "nothing was switched",
            )
        return Verdict(
            Outcome.ERROR,
            f"the approval step ended {states.get(APPROVE_FAILOVER) or 'without running'} without an answer; "
            "nothing was switched",
        )
    if not approval.get("unreadable") and (verdict := judge_approval(approval)) is not None:
        return verdict
    for step in (recheck, switch):
        if (refusal := refusal_of(step)) is not None:
            return refusal
    if recheck.get("decision") is None:
        return Verdict(
            Outcome.ERROR,
            f"the re-check ended {states.get(RECHECK) or 'without running'}; nothing was switched",
        )
    if recheck["decision"] == "nothing-to-do":
        return Verdict(Outcome.ALREADY_CURRENT, recheck["detail"])
    if switch.get("decision") == "nothing-to-do":
        return Verdict(Outcome.ALREADY_CURRENT, switch["detail"])
    if switch.get("decision") == "dry-run":
        return Verdict(Outcome.DRY_RUN, switch["detail"])
    if not switch.get("posted"):
        return _not_posted(switch, states)
    return _posted(switch, verification or {}, states)


def _not_posted(switch: Mapping[str, Any], states: Mapping[str, Any]) -> Verdict:
    """The switch step recorded no POST that reached RWS: whether one may have, and why not."""
    if switch.get("answer") == "pending":
        return Verdict(
            Outcome.SWITCH_UNKNOWN,
            f"the switch task ended {states.get(SWITCH) or 'abruptly'} while its POST to RWS "
            f"{switch.get('via_site')} was in flight: whether it applied is unknown. Check the eServices "
            "site by hand before triggering again",
        )
    if switch.get("post_attempted"):
        return Verdict(Outcome.SWITCH_FAILED, switch.get("detail") or "the POST failed; nothing was switched")
    if not switch and states.get(SWITCH) not in (None, "skipped", "upstream_failed", "removed"):
        return Verdict(
            Outcome.SWITCH_UNKNOWN,
            f"the switch task ended {states.get(SWITCH)} without recording anything (killed?): whether "
            "a POST was sent is unknown. Check the eServices site by hand before triggering again",
        )
    return Verdict(
        Outcome.ERROR,
        f"the switch task ended {states.get(SWITCH) or 'without running'} before sending anything",
    )


def _posted(switch: Mapping[str, Any], verification: Mapping[str, Any], states: Mapping[str, Any]) -> Verdict:
    """A POST reached RWS: verification decides whether it took effect."""
    if not verification:
        return Verdict(
            Outcome.UNVERIFIED,
            f"{switch.get('detail')}; verification did not complete (verify_switch "
            f"{states.get(VERIFY) or 'did not run'}): check the site by hand",
        )
    result = verification.get("outcome")
    if result == VERIFIED:
        lost = (
            " (the POST's answer was lost, but RWS now reports the target)"
            if switch.get("answer") == "lost"
            else ""
        )
        return Verdict(Outcome.VERIFIED, f"{switch.get('detail')}; {verification.get('detail')}{lost}")
    if switch.get("answer") == "lost":
        return Verdict(
            Outcome.SWITCH_UNKNOWN,
            f"{switch.get('detail')}; verification: {verification.get('detail')}. Whether the switch applied "
            "is unknown: check RWS by hand before triggering again",
        )
    if result == UNVERIFIED or switch.get("answer") == "unknown":
        return Verdict(
            Outcome.UNVERIFIED,
            f"{switch.get('detail')}; NOT verified: {verification.get('detail')}. Check the eServices site "
            "by hand",
        )
    return Verdict(
        Outcome.VERIFY_FAILED,
        f"{switch.get('detail')}; but {verification.get('detail')}. The switch did not take effect",
    )


# --- what follows by hand -------------------------------------------------------------------------------


def switch_back_command(topology: Topology, change_ticket: str | None = None) -> str:
    """The REST API call that triggers the switch-back as the signed-in user (a CLI trigger cannot switch:
    it records the OS user, which proves nobody)."""
    conf = {
        "target_site": topology.primary_site,
        "reason": f"{topology.primary_site} repaired: switching eServices back",
        "change_ticket": change_ticket or "<ticket>",
    }
    body = json.dumps({"logical_date": None, "conf": conf})
    return (
        f'curl -X POST "$AIRFLOW_URL/api/v2/dags/{DAG_ID}/dagRuns" -H "Authorization: Bearer $MY_TOKEN" '
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


def follow_ups(
    topology: Topology, target_site: str, *, backup_name: str | None = None, change_ticket: str | None = None
) -> list[str]:
    """What the guide says must follow by hand once RWS uses ``target_site``, and how to switch back."""
    items = [
        "Workspace Desktop Edition: set [interaction-workspace] disaster-recovery.eservices-site = "
        f"{target_site} in the WDE application object, so agent desktops use the same eServices site as RWS.",
    ]
    if any(dc.rws.screen_recording for dc in topology.data_centers):
        items.append(
            f"Screen Recording Service: make SRS connect to the RWS nodes of {target_site}. With WDE >= "
            "8.5.118.10 and SRS >= 8.5.340.97, check [interaction-workspace] screen-recording.htcc.peer_uri; "
            "with older versions re-submit the data center address from the agent desktop, update the RWS "
            "DNS name, or redirect the HTTP load balancer."
        )
    shipping = topology.shipping
    if shipping is not None and target_site == shipping.to_site:
        items.append(
            f"SpeechMiner: promote the backup index in {target_site} to the primary instance (SMConfig > "
            f"Index), from the newest verified backup {backup_name or '(see the pre-flight findings)'} under "
            f"{shipping.destination}."
        )
    elif shipping is not None and target_site == shipping.from_site:
        items.append(
            f"SpeechMiner: make the index in {target_site} the primary instance again (SMConfig > Index) and "
            f"check that the Daily Index Backup to {shipping.to_site} resumes."
        )
    elif shipping is not None:
        items.append(
            f"SpeechMiner: no index backup is shipped to {target_site}; SpeechMiner stays where it runs "
            f"({shipping.from_site}, backup in {shipping.to_site})."
        )
    if target_site != topology.primary_site:
        items.append(
            f"Switch back when {topology.primary_site} is repaired, with the same DAG: in the UI, Trigger "
            f"gir_eservices_failover with target_site={topology.primary_site} and a reason, then have "
            "another approver approve it under Required Actions; or through the REST API as yourself "
            "(token from POST /auth/token): "
            f"{switch_back_command(topology, change_ticket)}"
        )
    else:
        items.append(f"This run switched back to the primary {target_site}: no further switch is needed.")
    return items
