"""The check's outcome for people and machines: summary, table, JSON, the failure message, the Asset extra.

Digests and metadata only: the report is logged, returned as XCom and (in part) recorded on the Asset
``gir_rcs_keystore_check``, so nothing secret may ever be in it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from include.gir_ops.keystore.model import DRIFT, MATCH, MISSING, NOT_COMPARED, InstanceResult

log = logging.getLogger(__name__)


@dataclass
class KeystoreReport:
    """The outcome of one check: a table for people and ``to_dict()`` for machines (same data)."""

    checked_at: str
    reference: str | None
    reference_error: str | None
    results: list[InstanceResult]
    warnings: list[str]
    expired_kept: list[str]
    parallel_reads: int
    read_seconds: float

    @property
    def ok(self) -> bool:
        return self.reference_error is None and all(r.state == MATCH for r in self.results)

    @property
    def not_matching(self) -> list[InstanceResult]:
        return [r for r in self.results if r.state != MATCH]

    @property
    def states(self) -> dict[str, str]:
        return {r.instance: r.state for r in self.results}

    def summary(self) -> str:
        if self.reference_error:
            return f"FAILED: nothing to compare against: {self.reference_error}"
        bad = self.not_matching
        if not self.results:
            return "FAILED: no RCS instances in the topology"
        if bad:
            names = ", ".join(f"{r.instance} ({r.state})" for r in bad)
            count = f"{len(bad)} of {len(self.results)}"
            return f"FAILED: {count} RCS keystores do not match {self.reference}: {names}"
        tail = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return f"OK: all {len(self.results)} RCS keystores match {self.reference}{tail}"

    def table(self) -> str:
        return format_table(self.results)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: digests and metadata only."""
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "checked_at": self.checked_at,
            "reference": self.reference,
            "reference_error": self.reference_error,
            "states": self.states,
            "not_matching": [r.instance for r in self.not_matching],
            "warnings": list(self.warnings),
            "expired_kept": list(self.expired_kept),
            "instances": [
                {
                    "instance": r.instance,
                    "site": r.site,
                    "url": r.url,
                    "state": r.state,
                    "detail": r.detail,
                    "sha256": r.sha256,
                    "fingerprint_prefix": r.fingerprint_prefix,
                    "size": r.size,
                    "format": r.format,
                    "opened": r.opened,
                    "certificates": [asdict(c) for c in r.certificates],
                }
                for r in self.results
            ],
            "parallel_reads": self.parallel_reads,
            "read_seconds": round(self.read_seconds, 3),
            "table": self.table(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def asset_extra(self) -> dict[str, Any]:
        """The event extra of ``spec.RCS_KEYSTORE_CHECK_ASSET`` (the failover pre-flight reads it)."""
        return {
            "ok": self.ok,
            "checked_at": self.checked_at,
            "reference": self.reference,
            "states": self.states,
            "warnings": list(self.warnings),
            "summary": self.summary(),
        }


def failure_message(report: dict[str, Any]) -> str | None:
    """The run's failure reason from a report dict (as returned through XCom); None when all match.

    Names every instance that is not ``match``, with its DC, state and detail.
    """
    if report.get("ok"):
        return None
    lines = ["RCS keystore replication check failed."]
    instances = report.get("instances") or []
    if report.get("reference_error"):
        lines.append(f"Nothing to compare against: {report['reference_error']}.")
    elif not instances:
        lines.append("The topology lists no RCS instances; add data_centers[].rcs entries.")
    else:
        bad = [i for i in instances if i["state"] != MATCH]
        lines.append(
            f"{len(bad)} of {len(instances)} RCS keystore(s) do not match {report.get('reference')}:"
        )
    by_name = {item["instance"]: item for item in instances}
    reference = by_name.get(report.get("reference") or "")
    for item in instances:
        if item["state"] not in (MATCH, NOT_COMPARED):
            lines.append(f"- {item['instance']} ({item['site']}): {item['state']}: {item['detail']}")
            lines.append(f"  what to do: {what_to_do(item, reference, report.get('reference'))}")
    not_compared = [i["instance"] for i in instances if i["state"] == NOT_COMPARED]
    if not_compared:
        lines.append(f"Not compared (no reference): {', '.join(not_compared)}.")
    return "\n".join(lines)


def held_only_here(item: dict[str, Any], reference: dict[str, Any] | None) -> list[str]:
    """Aliases (or private keys) this instance holds that the reference lacks: never to be overwritten."""
    if reference is None or not item.get("opened") or not reference.get("opened"):
        return []
    theirs = {c["alias"]: c for c in reference.get("certificates") or []}
    held = []
    for cert in item.get("certificates") or []:
        other = theirs.get(cert["alias"])
        if other is None or (cert.get("has_private_key") and not other.get("has_private_key")):
            held.append(cert["alias"])
    return held


def what_to_do(item: dict[str, Any], reference_item: dict[str, Any] | None, reference: str | None) -> str:
    """Safe next steps for one instance that is not ``match``: never advice that could destroy a key."""
    name = item["instance"]
    replicate = (
        f"back up {name}'s keystore (file and password), copy {reference}'s keystore over it, restart RCS "
        f"on {name}, then trigger this check again"
    )
    if item["state"] == DRIFT:
        extra = held_only_here(item, reference_item)
        if extra:
            return (
                f"do not overwrite: this instance holds a key the reference does not ({', '.join(extra)}); "
                "replicating the reference over it would lose that key and the recordings encrypted with it. "
                f"Reconcile: back up both keystores, import the entries {', '.join(extra)} from {name} into "
                f"{reference}'s keystore (keytool -importkeystore -srcalias <alias>), replicate the merged "
                "keystore to every instance, restart RCS on each, then trigger this check again"
            )
        if not item.get("opened") or not (reference_item or {}).get("opened"):
            return (
                f"the aliases were not compared, so first list both keystores (keytool -list) and make sure "
                f"{name} holds no alias the reference lacks (if it does: do not overwrite, merge instead); "
                f"then {replicate}"
            )
        return replicate
    if item["state"] == MISSING:
        if "not mounted" in item.get("detail", ""):
            return (
                "mount the share on this worker (or fix the path in the topology); if "
                f"{name} really has no keystore: {replicate}"
            )
        return replicate
    return (
        "fix what the detail names (access, the password connection, the mount), then trigger this check "
        "again"
    )


_COLUMNS = ("instance", "DC", "state", "fingerprint", "detail")


def format_table(results: Sequence[InstanceResult]) -> str:
    """A fixed-width table an on-call engineer reads at a glance."""
    rows = [(r.instance, r.site, r.state, r.fingerprint_prefix, r.detail) for r in results]
    widths = [max([len(_COLUMNS[i])] + [len(row[i]) for row in rows]) for i in range(4)]
    lines = []
    for row in [_COLUMNS, *rows]:
        cells = [str(cell).ljust(widths[i]) for i, cell in enumerate(row[:4])]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(_COLUMNS[4]))
    return "\n".join(lines)


def log_report(report: KeystoreReport, logger: logging.Logger = log) -> None:
    """Log the summary, the table, warnings and the JSON: digests and metadata only."""
    level = logging.INFO if report.ok else logging.ERROR
    logger.log(level, "RCS keystore replication: %s", report.summary())
    logger.info("RCS keystores compared with %s:\n%s", report.reference or "(none)", report.table())
    for warning in report.warnings:
        logger.warning("RCS keystore warning: %s", warning)
    for note in report.expired_kept:
        logger.info("RCS keystore: %s", note)
    machine = {key: value for key, value in report.to_dict().items() if key != "table"}
    logger.info("RCS keystore report JSON: %s", json.dumps(machine, sort_keys=True))
