"""The words of every notification: one function per event, plain data in, a scrubbed message out.

Each message says what happened, where (DAG, run), what to look at, and links to it. Every piece of text
that came from a run (error lines, reasons, details) goes through :func:`scrub.scrub` here, once more,
whatever its source did: a notification leaves the deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from include.gir_ops.notifications.scrub import one_line, scrub

# Apprise's notify types: info, success, warning, failure.
INFO, SUCCESS, WARNING, FAILURE = "info", "success", "warning", "failure"


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    notify_type: str = INFO
    # The facts the body was made of, for the log line and the tests; already scrubbed.
    facts: dict[str, Any] = field(default_factory=dict)


def _clean(message: Message, secrets: Iterable[str]) -> Message:
    secrets = list(secrets)
    return Message(
        title=one_line(message.title, secrets, limit=200),
        body=scrub(message.body, secrets),
        notify_type=message.notify_type,
        facts=message.facts,
    )


def run_failed(
    *,
    dag_id: str,
    run_id: str,
    run_link: str,
    failed: Sequence[Mapping[str, Any]],
    reason: str | None = None,
    secrets: Iterable[str] = (),
) -> Message:
    """A DAG run of this project failed: the failed tasks, each one's error line, a link to the run."""
    secrets = list(secrets)
    lines = [f"DAG: {dag_id}", f"Run: {run_id}"]
    if failed:
        lines.append("Failed task(s):")
        for ti in failed:
            name = ti["task_id"] + (
                f"[{ti['map_index']}]" if ti.get("map_index", -1) not in (-1, None) else ""
            )
            error = one_line(ti.get("error") or "", secrets) or "(no error line recorded: see the task log)"
            lines.append(f"- {name}: {error}")
    else:
        lines.append(
            f"No task failed: the run was stopped ({one_line(reason or 'unknown reason', secrets)})."
        )
    lines += ["", f"Open the run: {run_link}"]
    names = ", ".join(ti["task_id"] for ti in failed) or "no task"
    return _clean(
        Message(
            title=f"[gir-ops] FAILED: {dag_id} ({names})",
            body="\n".join(lines),
            notify_type=FAILURE,
            facts={"event": "run_failed", "dag_id": dag_id, "run_id": run_id, "failed": list(failed)},
        ),
        secrets,
    )


def approval_waiting(
    *,
    dag_id: str,
    run_id: str,
    subject: str,
    requester: str | None,
    target: str | None,
    reason: str | None,
    warnings: Sequence[str],
    approvers: Sequence[str],
    timeout_minutes: float | None,
    action_link: str,
    secrets: Iterable[str] = (),
) -> Message:
    """An approval waits: who asks, for what, why, what pre-flight warned about, and where to answer."""
    secrets = list(secrets)
    lines = [
        one_line(subject, secrets, limit=300),
        "",
        f"Requested by: {requester or 'unknown'}",
        f"Target: {target or 'see the request'}",
        f"Reason: {one_line(reason or 'not given', secrets, limit=600)}",
        f"Approvers: {', '.join(approvers) or 'see the task'} (never the requester)",
    ]
    if timeout_minutes:
        lines.append(f"No answer within {timeout_minutes:g} min counts as a rejection.")
    if warnings:
        lines += ["", "Pre-flight warnings:", *(f"- {one_line(w, secrets)}" for w in warnings)]
    else:
        lines += ["", "Pre-flight warnings: none"]
    lines += ["", f"Approve or reject: {action_link}", f"DAG {dag_id}, run {run_id}"]
    return _clean(
        Message(
            title=f"[gir-ops] APPROVAL WAITING: {one_line(subject, secrets, limit=160)}",
            body="\n".join(lines),
            notify_type=WARNING,
            facts={"event": "approval_waiting", "dag_id": dag_id, "run_id": run_id, "target": target},
        ),
        secrets,
    )


def failover_outcome(
    *,
    dag_id: str,
    run_id: str,
    outcome: str | None,
    ok: bool,
    detail: str | None,
    requester: str | None,
    target: str | None,
    audit_location: str | None,
    run_link: str,
    secrets: Iterable[str] = (),
) -> Message:
    """How a failover run ended: the outcome the audit recorded, what it means, where the record is."""
    secrets = list(secrets)
    shown = outcome or "unknown (no audit record: see the audit and outcome tasks)"
    lines = [
        f"Outcome: {shown}",
        f"Target: {target or 'unknown'}",
        f"Requested by: {requester or 'unknown'}",
        f"Detail: {one_line(detail or '-', secrets, limit=800)}",
        f"Audit record: {audit_location or 'not written'}",
        "",
        f"Open the run (outcome task lists the follow-ups): {run_link}",
    ]
    return _clean(
        Message(
            title=f"[gir-ops] FAILOVER {shown.split(' ')[0].upper()}: {dag_id} to {target or '?'}",
            body="\n".join(lines),
            notify_type=SUCCESS if ok else FAILURE,
            facts={"event": "failover_outcome", "dag_id": dag_id, "run_id": run_id, "outcome": outcome},
        ),
        secrets,
    )


def deadline_missed(
    *,
    dag_id: str,
    run_id: str,
    what: str,
    deadline: str,
    queued_at: str | None,
    state: str | None,
    run_link: str,
    secrets: Iterable[str] = (),
) -> Message:
    """A Deadline Alert fired: the run is still not finished when it should have been."""
    lines = [
        what,
        "",
        f"DAG: {dag_id}",
        f"Run: {run_id} (state {state or 'unknown'})",
        f"Queued at: {queued_at or 'unknown'}",
        f"Deadline: {deadline}",
        "",
        f"Open the run: {run_link}",
    ]
    return _clean(
        Message(
            title=f"[gir-ops] DEADLINE MISSED: {dag_id}",
            body="\n".join(lines),
            notify_type=WARNING,
            facts={"event": "deadline_missed", "dag_id": dag_id, "run_id": run_id},
        ),
        secrets,
    )
