"""The run's verdict: what happened, decided from what each step recorded, and what must follow by hand.

Every step records the same shape in XCom key ``record`` (``steps.step_record``): ``started_at``,
``rws_answers``, ``refused`` ({outcome, message} or None), ``error`` (text or None) and the step's own
fields. :func:`decide_outcome` reads that shape, and judges the approval with the same function that
authorized (or refused) the switch, ``authorization.judge_approval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from include.gir_ops.failover import checklist
from include.gir_ops.failover.authorization import judge_approval, user_label
from include.gir_ops.failover.spec import (
    APPROVE_FAILOVER,
    CONFIRM,
    CONFIRMED_OPTION,
    INTERACTION_SERVER_ONLY,
    PREFLIGHT,
    RECHECK,
    SWITCH,
    VERIFY,
    Outcome,
    Verdict,
)
from include.gir_ops.failover.triggers import NOT_SWITCHED, UNVERIFIED, VERIFIED
from include.gir_ops.shared import OPS_API, iso_utc
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
    confirmation: Mapping[str, Any] | None = None,
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
    return _posted(switch, verification or {}, states, confirmation)


def confirmed_by(confirmation: Mapping[str, Any] | None) -> str | None:
    """Who confirmed the switch and when, if a person chose "Confirmed" (a timeout answers nobody)."""
    if not confirmation or not confirmation.get("response_received"):
        return None
    responder = confirmation.get("responded_by_user")
    if not responder or list(confirmation.get("chosen_options") or []) != [CONFIRMED_OPTION]:
        return None
    return f"{user_label(responder)} at {iso_utc(confirmation.get('responded_at'))}"


def check_by_hand(switch: Mapping[str, Any]) -> str:
    """What to check when neither RWS nor a person confirmed the switch."""
    environment = switch.get("environment_id") or "<environment id>"
    target = switch.get("target_site") or "<target>"
    return (
        "Check by hand: `curl -u <ops user> "
        f"http://<RWS>:<port>{OPS_API}/genesys-environments/{environment}` "
        f"on each RWS (if it reports eServicesSite, it must be {target}; set failover.site_field if it is "
        f"elsewhere in the answer), and that agent desktops (WDE) reach the eServices of {target}. Do not "
        "trigger another switch blindly: RWS accepted this one"
    )


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


def _posted(
    switch: Mapping[str, Any],
    verification: Mapping[str, Any],
    states: Mapping[str, Any],
    confirmation: Mapping[str, Any] | None = None,
) -> Verdict:
    """A POST reached RWS: verification decides whether it took effect, else a person's confirmation."""
    person = confirmed_by(confirmation)
    result = verification.get("outcome")
    if result == VERIFIED:
        lost = (
            " (the POST's answer was lost, but RWS now reports the target)"
            if switch.get("answer") == "lost"
            else ""
        )
        also = f"; also confirmed by {person}" if person else ""
        return Verdict(Outcome.VERIFIED, f"{switch.get('detail')}; {verification.get('detail')}{lost}{also}")
    if person and result != NOT_SWITCHED:
        seen = verification.get("detail") or f"verify_switch {states.get(VERIFY) or 'did not run'}"
        return Verdict(
            Outcome.CONFIRMED,
            f"{switch.get('detail')}; RWS did not confirm it ({seen}); confirmed by hand by {person}",
        )
    nobody = (
        " and nobody confirmed it under Required Actions (confirm_switch) in time"
        if states.get(CONFIRM) != "skipped"
        else ""
    )
    if not verification:
        return Verdict(
            Outcome.UNVERIFIED,
            f"{switch.get('detail')}; verification did not complete (verify_switch "
            f"{states.get(VERIFY) or 'did not run'}){nobody}. {check_by_hand(switch)}",
        )
    if switch.get("answer") == "lost":
        return Verdict(
            Outcome.SWITCH_UNKNOWN,
            f"{switch.get('detail')}; verification: {verification.get('detail')}. Whether the switch applied "
            "is unknown: check RWS by hand before triggering again",
        )
    if result == UNVERIFIED or switch.get("answer") == "unknown":
        return Verdict(
            Outcome.UNVERIFIED,
            f"{switch.get('detail')}; NOT verified: {verification.get('detail')}{nobody}. "
            f"{check_by_hand(switch)}",
        )
    return Verdict(
        Outcome.VERIFY_FAILED,
        f"{switch.get('detail')}; but {verification.get('detail')}. The switch did not take effect",
    )


# --- what follows by hand -------------------------------------------------------------------------------


def switch_back_command(
    topology: Topology, change_ticket: str | None = None, scenario: str = INTERACTION_SERVER_ONLY
) -> str:
    """The REST API call that triggers the switch-back (``checklist.switch_back_command``)."""
    return checklist.switch_back_command(topology, change_ticket, scenario)


def follow_ups(
    topology: Topology,
    target_site: str,
    *,
    backup: Mapping[str, Any] | None = None,
    backup_name: str | None = None,
    change_ticket: str | None = None,
    scenario: str = INTERACTION_SERVER_ONLY,
) -> list[str]:
    """What must follow by hand once RWS uses ``target_site``, for the scenario: the checklist's texts."""
    if backup is None and backup_name is not None:
        backup = {"backup_name": backup_name}
    items = checklist.checklist(topology, target_site, scenario, backup=backup, change_ticket=change_ticket)
    return [item.text for item in items]
