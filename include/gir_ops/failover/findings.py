"""What the approver reads before deciding: the last RCS keystore check and SpeechMiner backup (the other
DAGs' Asset events), the warnings, and the approval request itself.

Findings never stop a failover: a failed, stale or missing check becomes a warning the approver weighs.
The approval request's subject names the target and the dry-run flag; :func:`approval_subject_target`
reads them back, so the approval rule can check the approver was asked about this run's switch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from include.gir_ops.failover.spec import INTERACTION_SERVER_ONLY, SCENARIOS, failover_settings
from include.gir_ops.shared import format_age, iso_utc, parse_iso_utc
from include.gir_ops.topology import Topology

# --- what the other DAGs last said -------------------------------------------------------------------


def event_time(event: Any, key: str) -> datetime | None:
    """When the event says it happened (``extra[key]``, ISO-8601), else when Airflow recorded it."""
    extra = getattr(event, "extra", None) or {}
    value = extra.get(key)
    if isinstance(value, str) and (parsed := parse_iso_utc(value)) is not None:
        return parsed
    stamp = getattr(event, "timestamp", None)
    return stamp if isinstance(stamp, datetime) else None


def cron_interval(cron: str) -> timedelta:
    """The gap between two runs of a schedule, for "stale after two missed runs"."""
    from croniter import croniter

    it = croniter(cron, datetime(2026, 1, 1, tzinfo=UTC))
    first = it.get_next(datetime)
    return it.get_next(datetime) - first


def keystore_finding(
    event: Any | None, topology: Topology, now: datetime, read_error: str | None = None
) -> dict[str, Any]:
    """The last RCS keystore replication check, as a warning when it failed, warned or is stale."""
    if read_error:
        return {"level": "unknown", "text": f"RCS keystore check: could not be read ({read_error})"}
    if event is None:
        return {
            "level": "unknown",
            "text": "RCS keystore check: no information yet (gir_rcs_keystore_check has not reported)",
        }
    extra = dict(getattr(event, "extra", None) or {})
    checked_at = event_time(event, "checked_at")
    stale_after = 2 * cron_interval(topology.keystore_check.schedule)
    data = {
        "checked_at": iso_utc(checked_at),
        "ok": extra.get("ok"),
        "reference": extra.get("reference"),
        "states": extra.get("states"),
        "warnings": list(extra.get("warnings") or []),
    }
    when = format_age(checked_at, now)
    if extra.get("ok") is not True:
        bad = {k: v for k, v in (extra.get("states") or {}).items() if v not in ("ok", "match", "identical")}
        return {
            "level": "warning",
            "text": f"RCS keystore check {when} found problems: {bad or extra.get('states')} — recordings "
            "encrypted at the target may not play back",
            **data,
        }
    if checked_at is not None and now - checked_at > stale_after:
        return {"level": "warning", "text": f"RCS keystore check is stale: last run {when}", **data}
    if data["warnings"]:
        return {
            "level": "warning",
            "text": f"RCS keystore check {when}: replicated, with warnings: {'; '.join(data['warnings'])}",
            **data,
        }
    return {"level": "ok", "text": f"RCS keystore check {when}: keystores replicated", **data}


def backup_finding(  # noqa: PLR0911 - one return per situation the approver must read
    event: Any | None,
    topology: Topology,
    target_site: str,
    now: datetime,
    read_error: str | None = None,
) -> dict[str, Any]:
    """Age of the newest verified SpeechMiner backup at the target, or why none applies."""
    shipping = topology.shipping
    if shipping is None:
        return {"level": "unknown", "text": "SpeechMiner backup: no shipping is configured in the topology"}
    if target_site == shipping.from_site:
        return {
            "level": "ok",
            "text": f"SpeechMiner backup: {target_site} holds the primary SpeechMiner index; no shipped "
            "backup is needed there",
        }
    if target_site != shipping.to_site:
        return {
            "level": "warning",
            "text": f"SpeechMiner backup: none is shipped to {target_site} (shipping.to_site is "
            f"{shipping.to_site}); SpeechMiner cannot be promoted at {target_site}",
        }
    if read_error:
        return {
            "level": "unknown",
            "text": f"SpeechMiner backup at {target_site}: could not be read ({read_error})",
        }
    if event is None:
        return {
            "level": "unknown",
            "text": f"SpeechMiner backup at {target_site}: no information yet (no verified backup has been "
            "shipped by gir_speechminer_backup_ship)",
        }
    extra = dict(getattr(event, "extra", None) or {})
    shipped_at = event_time(event, "shipped_at")
    data = {
        "backup_name": extra.get("backup_name"),
        "shipped_at": iso_utc(shipped_at),
        "files": extra.get("files"),
        "bytes": extra.get("bytes"),
    }
    when = format_age(shipped_at, now)
    age_hours = (now - shipped_at).total_seconds() / 3600 if shipped_at else None
    if age_hours is None or age_hours > shipping.max_age_hours:
        return {
            "level": "warning",
            "text": f"SpeechMiner backup at {target_site} is stale: newest verified backup "
            f"{data['backup_name']} shipped {when} (limit {shipping.max_age_hours:g} h)",
            "age_hours": age_hours,
            **data,
        }
    return {
        "level": "ok",
        "text": f"SpeechMiner backup at {target_site}: newest verified backup {data['backup_name']} "
        f"shipped {when}",
        "age_hours": age_hours,
        **data,
    }


def latest_event(inlet_events: Any, asset: Any) -> tuple[Any | None, str | None]:
    """The newest event of ``asset`` through the task's ``inlet_events``, or why it could not be read."""
    try:
        events = list(inlet_events[asset].ascending(False).limit(1))
    except Exception as exc:  # a missing Asset row must not stop a failover; it is a finding
        return None, f"{type(exc).__name__}: {exc}"
    return (events[0] if events else None), None


# --- the approval request ----------------------------------------------------------------------------


def _fence(text: str) -> str:
    """User text inside a code block, so it cannot pose as findings in the approval request."""
    return "```text\n" + text.replace("```", "'''") + "\n```"


_SUBJECT_TARGET = re.compile(
    r"→ (?P<site>[^\s:()→]+)(?P<dry> \(DRY RUN\))?: approve the multimedia-switch\?$"
)


def approval_subject_target(subject: str) -> tuple[str, bool] | None:
    """(target site, dry run) as the approval request's subject named them to the approver."""
    match = _SUBJECT_TARGET.search(subject or "")
    return (match["site"], bool(match["dry"])) if match else None


def approval_text(record: Mapping[str, Any], topology: Topology) -> tuple[str, str]:
    """Subject and Markdown body of the approval request: what will happen, why, and what pre-flight saw."""
    settings = failover_settings(topology)
    request = record["request"]
    target = request["target_site"]
    current = str(record.get("current_site") or "unknown").replace("→", "-")
    dry = " (DRY RUN)" if request["dry_run"] else ""
    subject = f"eServices failover {current} → {target}{dry}: approve the multimedia-switch?"
    ticket = request.get("change_ticket")
    scenario = request.get("scenario") or INTERACTION_SERVER_ONLY
    lines = [
        f"## eServices failover: {current} → {target}{dry}",
        "",
        f"**Scenario:** `{scenario}`: {SCENARIOS.get(scenario, '?')}"
        + (
            " (follow-ups: WDE only; no SRS redirection, SpeechMiner promotion or processing move)  "
            if scenario == INTERACTION_SERVER_ONLY
            else " (follow-ups include SRS redirection, SpeechMiner promotion, processing in the target)  "
        ),
        f"**Triggered by:** `{(request.get('triggered_by') or 'unknown').replace('`', '')}`  ",
        f"**Change ticket:** {('`' + ticket.replace('`', '') + '`') if ticket else 'none'}  ",
        f"**Genesys environment:** `{record.get('environment_id')}`",
        "",
        "**Reason given:**",
        "",
        _fence(request["reason"]),
        "",
        "### What approving does",
        "",
        (
            "Nothing is sent: this is a dry run. Approving only records the decision in the audit."
            if request["dry_run"]
            else f"One `POST .../genesys-environments/{record.get('environment_id')}/multimedia-switch` "
            f'with `{{"eServicesSite": "{target}"}}` to the first RWS that answers ({target} first). '
            "RWS then moves to the Interaction Server of "
            f"{target} within drMonitoringDelay ({settings.dr_monitoring_delay_seconds}s)."
        ),
        "",
        "The user who triggered this run cannot approve it (two-person rule). Reject, or no answer within "
        f"{settings.response_timeout_minutes} min, switches nothing.",
        "",
        "### Pre-flight findings",
        "",
        "| RWS | answers | reports eServicesSite |",
        "|---|---|---|",
    ]
    for node in record["nodes"]:
        role = " (target)" if node["role"] == "target" else ""
        answered = "yes" if node["answered"] else f"**no**: {str(node['error']).replace('|', '/')}"
        site = node["eServicesSite"] or ("not reported" if node["answered"] else "—")
        lines.append(f"| {node['site']}{role} | {answered} | {site} |")
    lines += ["", *(f"- {f['text']}" for f in (record["keystore"], record["backup"]))]
    if record.get("readiness"):
        lines += [
            "",
            "### Readiness (must be in place before the switch)",
            "",
            *(f"- {r}" for r in record["readiness"]),
        ]
    if record["warnings"]:
        lines += ["", "### Warnings", "", *(f"- ⚠ {w}" for w in record["warnings"])]
    return subject, "\n".join(lines)


def preflight_warnings(record: Mapping[str, Any]) -> list[str]:
    """What the approver must weigh: RWS nodes that do not answer or disagree, findings that are not ok."""
    request = record["request"]
    warnings = []
    for node in record["nodes"]:
        if not node["answered"]:
            role = "the target's RWS" if node["role"] == "target" else "RWS"
            warnings.append(f"{role} {node['site']} does not answer: {node['error']}")
    if not record["consistent"]:
        warnings.append(f"RWS nodes disagree on the eServices site: {record['reported']}")
    elif not record["site_reported"]:
        warnings.append(
            "RWS does not report eServicesSite (set failover.site_field if it is elsewhere in the answer): "
            f"pre-flight cannot tell whether {request['target_site']} is already current (nothing is "
            "assumed), and the switch will be recorded as unverified unless a person confirms it "
            "(confirm_switch)"
        )
    for finding in (record["keystore"], record["backup"]):
        if finding["level"] != "ok":
            warnings.append(finding["text"])
    warnings += [f"readiness: {item}" for item in record.get("readiness") or []]
    if request["dry_run"]:
        warnings.append("dry run: nothing will be POSTed")
    return warnings
