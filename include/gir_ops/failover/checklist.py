"""What must follow the switch by hand, per scenario: the checklist the on-call answers in ``confirm_switch``
and the ``outcome`` task prints, and the readiness items pre-flight shows before anyone approves.

From the guide (step 4 and the sections on screen recording, processing and SpeechMiner):
- WDE option ``[interaction-workspace] disaster-recovery.eservices-site`` set to the target site;
- screen recording: WDE >= 8.5.118.10 with SRS >= 8.5.340.97 fail SRS over by themselves only when
  ``screen-recording.htcc.peer_uri`` was set **in advance** (so pre-flight lists it as a readiness item);
  older WDE/WWE/SRS: SRS is pointed at the backup DC's RWS (desktop re-submit, DNS or HTTP load balancer);
- SpeechMiner: the backup index is promoted to primary in the backup DC (from the newest verified backup);
- Recording Processor Script / Voice Processor and Recording Muxer Script active in the target DC;
- switch back once the primary's Interaction Server is restored.

The scenario (trigger param ``scenario``) decides the set: SRS redirection, SpeechMiner promotion and moving
the processing are whole-DC steps. With only the Interaction Server down, the primary's SRS connection,
SpeechMiner and processing still run; doing them in the target too would create a second primary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from include.gir_ops.failover.spec import (
    CHECKLIST_ANSWERS,
    DAG_ID,
    INTERACTION_SERVER_ONLY,
    WHOLE_DC,
)
from include.gir_ops.topology import Topology


@dataclass(frozen=True)
class ChecklistItem:
    """One follow-up: ``key`` names its answer in the HITL form and the audit."""

    key: str
    title: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def switch_back_command(
    topology: Topology, change_ticket: str | None = None, scenario: str = INTERACTION_SERVER_ONLY
) -> str:
    """The REST API call that triggers the switch-back as the signed-in user (a CLI trigger cannot switch:
    it records the OS user, which proves nobody)."""
    conf = {
        "target_site": topology.primary_site,
        "reason": f"{topology.primary_site} repaired: switching eServices back",
        "change_ticket": change_ticket or "<ticket>",
        "scenario": scenario,
    }
    body = json.dumps({"logical_date": None, "conf": conf})
    return (
        f'curl -X POST "$AIRFLOW_URL/api/v2/dags/{DAG_ID}/dagRuns" -H "Authorization: Bearer $MY_TOKEN" '
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


def _screen_recording(topology: Topology) -> bool:
    return any(dc.rws.screen_recording for dc in topology.data_centers)


def readiness_items(topology: Topology, target_site: str, scenario: str) -> list[str]:
    """What must already be in place for the follow-ups to work; shown before anyone approves."""
    items = []
    if scenario == WHOLE_DC and target_site != topology.primary_site and _screen_recording(topology):
        items.append(
            "screen recording: with WDE >= 8.5.118.10 and SRS >= 8.5.340.97, SRS fails over to "
            f"{target_site}'s RWS by itself only if [interaction-workspace] screen-recording.htcc.peer_uri "
            "was set in the WDE application object BEFORE the outage; if it was not (or with older "
            f"WDE/WWE/SRS), plan to point SRS at {target_site}'s RWS (desktop re-submit, DNS or HTTP load "
            "balancer)"
        )
    return items


def _backup_text(backup: Mapping[str, Any] | None) -> str:
    """The newest verified backup and its age, from pre-flight's SpeechMiner finding."""
    data = backup or {}
    name = data.get("backup_name")
    if not name:
        return "the newest verified backup (pre-flight found none: check the backup destination first)"
    age = data.get("age_hours")
    when = f", {age:.1f} h old at pre-flight" if isinstance(age, int | float) else ""
    return f"the newest verified backup {name}{when}"


def checklist(
    topology: Topology,
    target_site: str,
    scenario: str,
    *,
    backup: Mapping[str, Any] | None = None,
    change_ticket: str | None = None,
) -> list[ChecklistItem]:
    """The follow-ups for a switch to ``target_site`` in ``scenario``, in the order to do them."""
    primary = topology.primary_site
    back = target_site == primary
    whole_dc = scenario == WHOLE_DC
    items = [
        ChecklistItem(
            "wde_eservices_site",
            "WDE eServices site",
            "Workspace Desktop Edition: set [interaction-workspace] disaster-recovery.eservices-site = "
            f"{target_site} in the WDE application object, and check that agent desktops connect to the "
            f"eServices of {target_site} (the same data center as RWS).",
        )
    ]
    if whole_dc and _screen_recording(topology):
        items.append(
            ChecklistItem(
                "srs_rws",
                "Screen Recording Service",
                f"Screen Recording Service: SRS uploads to the RWS nodes of {target_site}. WDE >= 8.5.118.10 "
                "with SRS >= 8.5.340.97 follow by themselves when screen-recording.htcc.peer_uri was set in "
                f"advance: check new screen recordings arrive in {target_site}. Older WDE/WWE/SRS: point SRS "
                f"at {target_site}'s RWS (desktop re-submits the data center address, RWS DNS name, or HTTP "
                "load balancer).",
            )
        )
    shipping = topology.shipping
    if whole_dc and shipping is not None:
        if not back and target_site == shipping.to_site:
            text = (
                f"SpeechMiner: promote the backup index in {target_site} to the primary instance (SMConfig > "
                f"Index), from {_backup_text(backup)} under {shipping.destination}."
            )
        elif back and target_site == shipping.from_site:
            text = (
                f"SpeechMiner: make the index in {target_site} the primary instance again (SMConfig > "
                f"Index), the one in {shipping.to_site} a backup again, and check that the Daily Index "
                f"Backup to {shipping.to_site} resumes."
            )
        else:
            text = (
                f"SpeechMiner: no index backup is shipped to {target_site}; SpeechMiner stays where it runs "
                f"({shipping.from_site}, backup in {shipping.to_site}): decide with its owner."
            )
        items.append(ChecklistItem("speechminer_index", "SpeechMiner index", text))
    if whole_dc:
        processing = (
            f"Recording Processor Script / Voice Processor and Recording Muxer Script: make the instances in "
            f"{target_site} active"
            + (
                " again and those in the other data centers backups again."
                if back
                else f" (the primary's are lost with {primary}), sending metadata to SpeechMiner's "
                f"Interaction Receiver in {target_site}."
            )
        )
    else:
        processing = (
            "Recording Processor Script / Voice Processor and Recording Muxer Script: leave the active "
            f"instances in {primary} as they are (only the Interaction Server moved; activating the "
            f"{target_site} ones as well would process recordings twice)."
        )
    items.append(ChecklistItem("recording_processing", "Recording processing", processing))
    if not back:
        items.append(
            ChecklistItem(
                "switch_back_plan",
                "Switch back",
                f"Switch back once the Interaction Server in {primary} is restored (running, and RWS in "
                f"{primary} answers), with the same DAG: Trigger gir_eservices_failover with "
                f"target_site={primary}, scenario={scenario} and a reason, then have another approver "
                "approve it under Required Actions; or through the REST API as yourself (token from POST "
                "/auth/token): "
                f"{switch_back_command(topology, change_ticket, scenario)}",
            )
        )
    return items


def checklist_params(items: list[ChecklistItem]) -> dict[str, Any]:
    """The HITL form of ``confirm_switch``: one answer per item (done / not done / not applicable)."""
    from airflow.sdk import Param

    return {
        item.key: Param(
            "not done",
            type="string",
            enum=list(CHECKLIST_ANSWERS),
            title=item.title,
            description=item.text,
        )
        for item in items
    }
