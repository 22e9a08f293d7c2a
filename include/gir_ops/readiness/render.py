"""The status as a page (HTML, Jinja2 with autoescape) and as Prometheus text (prometheus_client)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)

OK_STATES = frozenset({"ok", "match", "identical", "reference"})
NEUTRAL_STATES = frozenset({"n/a"})
WARN_STATES = frozenset({"warning", "stale", "unknown", "not reported"})


def state_class(state: Any) -> str:
    """The CSS class (and the Prometheus 1/0) of a state word: ok, warn, muted or bad."""
    if state is True or state in OK_STATES:
        return "ok"
    if state in NEUTRAL_STATES:
        return "muted"
    if state is None or state in WARN_STATES:
        return "warn"
    return "bad"


def render_page(status: Mapping[str, Any], *, days: int) -> str:
    return _ENV.get_template("page.html").render(s=status, cls=state_class, days=days)


def render_reindex_page(
    *, site: str, dag_id: str, cc: str, kind: str, conf: Mapping[str, Any], base: str
) -> str:
    """The confirmation page; its button POSTs the run through the public REST API (``tojson`` keeps the
    values safe inside the script element)."""
    quoted = quote(dag_id, safe="")
    return _ENV.get_template("reindex.html").render(
        site=site,
        dag_id=dag_id,
        cc=cc,
        kind=kind,
        conf=dict(conf),
        conf_json=json.dumps(dict(conf), indent=2),
        post_url=f"{base}/api/v2/dags/{quoted}/dagRuns",
        runs_base=f"{base}/dags/{quoted}/runs/",
    )


# --- Prometheus ----------------------------------------------------------------------------------------


def render_metrics(status: Mapping[str, Any]) -> bytes:
    """Gauges an existing Prometheus can scrape and alert on (one registry per scrape: no stale series)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    ready = gauge("gir_readiness_ready", "1 when the standby DC is ready to take over", ("standby_site",))
    ready.labels(status.get("standby_site") or "").set(1 if status["verdict"]["ready"] else 0)
    reasons = gauge("gir_readiness_reasons", "How many reasons the standby DC is not ready")
    reasons.set(len(status["verdict"]["reasons"]))

    rws_up = gauge("gir_readiness_rws_up", "1 when the DC's RWS answered the last probe", ("site",))
    current = gauge(
        "gir_readiness_eservices_site",
        "1 for the eServices site each DC's RWS reports as current",
        ("site", "eservices_site"),
    )
    ks_instance = gauge(
        "gir_readiness_keystore_instance_ok",
        "1 when the RCS instance's keystore matches the reference in the latest check",
        ("site", "instance", "state"),
    )
    backup_age = gauge("gir_readiness_backup_age_hours", "Age of the newest verified backup", ("site",))
    backup_max = gauge("gir_readiness_backup_max_age_hours", "shipping.max_age_hours", ("site",))
    cov_site = gauge(
        "gir_readiness_reindex_coverage_ratio", "Hours re-indexed / hours expected, last 30 days", ("site",)
    )
    cov_pair = gauge(
        "gir_readiness_reindex_pair_coverage_ratio",
        "Hours re-indexed / hours expected, last 30 days, per contact center and kind",
        ("site", "contact_center_id", "kind"),
    )
    for dc in status["data_centers"]:
        site = dc["site"]
        rws = dc.get("rws") or {}
        rws_up.labels(site).set(1 if rws.get("reachable") else 0)
        if rws.get("eservices_site"):
            current.labels(site, rws["eservices_site"]).set(1)
        for instance, state in dc["keystore"]["instances"].items():
            ks_instance.labels(site, instance, state).set(1 if state_class(state) == "ok" else 0)
        backup = dc["backup"]
        if backup.get("applies"):
            backup_max.labels(site).set(backup["max_age_hours"])
            if backup.get("age_hours") is not None:
                backup_age.labels(site).set(backup["age_hours"])
        reindex = dc["reindex"]
        if reindex.get("enabled") and reindex.get("ratio") is not None:
            cov_site.labels(site).set(reindex["ratio"])
            for pair in reindex["pairs"]:
                cov_pair.labels(site, pair["contact_center_id"], pair["kind"]).set(pair["ratio"])

    keystore = status["keystore"]
    ks_ok = gauge("gir_readiness_keystore_ok", "1 when the latest check found every keystore replicated")
    ks_ok.set(1 if keystore.get("ok") else 0)
    ks_state = gauge("gir_readiness_keystore_state", "1 for the latest keystore check's state", ("state",))
    ks_state.labels(keystore["state"]).set(1)
    if keystore.get("age_hours") is not None:
        gauge("gir_readiness_keystore_check_age_hours", "Age of the latest keystore check").set(
            keystore["age_hours"]
        )
    failover = status["failover"]
    if failover.get("configured"):
        gauge("gir_readiness_failover_approvals_waiting", "Failover approvals waiting for an answer").set(
            len(failover["approvals_waiting"])
        )
        gauge("gir_readiness_failover_in_progress", "Failover runs queued or running").set(
            len(failover["active"])
        )
    return generate_latest(registry)
