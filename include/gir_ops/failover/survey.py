"""Reading RWS, GETs only: which nodes answer (the target's first), the one genesys environment, the
eServices site each reports, and whether that changed since the approver was shown it.

Every answer (and every failure) is appended to the step's ``rws_answers`` list, without credentials, so
the audit can show what RWS said in each phase.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from include.gir_ops.failover.spec import FailoverRefused, Outcome
from include.gir_ops.rws import RetryPolicy, RwsAnswer, RwsClient, RwsError, eservices_site_of
from include.gir_ops.shared import OPS_API, iso_utc
from include.gir_ops.topology import DataCenter, Topology

# Reading the site is cheap and safe to repeat, but a dead DC must not stall pre-flight for long.
PROBE = RetryPolicy(attempts=2, initial_backoff_seconds=0.5, max_backoff_seconds=1.0)
PROBE_TIMEOUT = (3.0, 15.0)

_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def scrub(text: str) -> str:
    """Drop any user:password@ from URLs in error text before it is stored anywhere."""
    return _USERINFO.sub("***@", text)


class RwsSurveyError(RuntimeError):
    """No RWS answered at all: possibly transient, so the task may be retried."""


def site_field_of(topology: Topology) -> str | None:
    """``failover.site_field``: where RWS reports the site (None: top level or nested resource)."""
    return topology.failover.site_field if topology.failover is not None else None


def ordered_sites(topology: Topology, target_site: str) -> list[DataCenter]:
    """The target's RWS first (it must work after the switch), then the others in topology order."""
    return sorted(topology.data_centers, key=lambda dc: dc.site != target_site)


def answer_entry(phase: str, site: str, answer: RwsAnswer) -> dict[str, Any]:
    """One RWS answer as the audit keeps it: what was asked, the HTTP status, statusCode and each try."""
    return {
        "phase": phase,
        "site": site,
        **answer.summary(),
        "tries": [dict(h) for h in answer.history],
        "at": iso_utc(datetime.now(UTC)),
    }


def error_entry(phase: str, site: str, method: str, path: str, exc: RwsError) -> dict[str, Any]:
    """A call that failed, as the audit keeps it: whether the request left, and each try."""
    return {
        "phase": phase,
        "site": site,
        "method": method,
        "path": path,
        "http_status": exc.http_status,
        "statusCode": exc.status_code,
        "error": scrub(str(exc)),
        "request_sent": exc.request_sent,
        "tries": [{**h, "error": scrub(str(h["error"]))} if h.get("error") else dict(h) for h in exc.history],
        "at": iso_utc(datetime.now(UTC)),
    }


def observe_node(
    dc: DataCenter,
    *,
    target_site: str,
    phase: str,
    answers: list[dict[str, Any]],
    site_field: str | None = None,
) -> dict[str, Any]:
    """Ask one DC's RWS which genesys environments exist and which eServices site it reports.

    The site is read by ``rws.eservices_site_of``: at ``site_field`` (``failover.site_field``) when the
    topology names it, else at the top level or inside the nested resource; None when not reported.
    """
    observation: dict[str, Any] = {
        "site": dc.site,
        "role": "target" if dc.site == target_site else "other",
        "answered": False,
        "environment_ids": [],
        "eServicesSite": None,
        "error": None,
    }
    list_path = f"{OPS_API}/genesys-environments"
    with RwsClient(dc.site, dc.rws_conn_id, timeout=PROBE_TIMEOUT) as client:
        try:
            listing, listed = client.genesys_environments(policy=PROBE)
        except RwsError as exc:  # including an ID unfit for a URL path (RwsInvalidId)
            answers.append(error_entry(phase, dc.site, "GET", list_path, exc))
            observation["error"] = scrub(str(exc))
            return observation
        answers.append(answer_entry(phase, dc.site, listing))
        ids = sorted(set(listed))
        observation.update(answered=True, environment_ids=ids)
        if len(ids) != 1:
            return observation
        env_path = f"{list_path}/{ids[0]}"
        try:
            environment = client.genesys_environment(ids[0], policy=PROBE)
        except RwsError as exc:
            answers.append(error_entry(phase, dc.site, "GET", env_path, exc))
            observation.update(answered=False, error=scrub(str(exc)))
            return observation
        answers.append(answer_entry(phase, dc.site, environment))
        observation["eServicesSite"] = eservices_site_of(environment.body, site_field)
    return observation


def survey_rws(
    topology: Topology, target_site: str, *, phase: str, answers: list[dict[str, Any]]
) -> dict[str, Any]:
    """Every DC's RWS (target first): reachability, the environment ID and the eServices site reported."""
    nodes = [
        observe_node(
            dc, target_site=target_site, phase=phase, answers=answers, site_field=site_field_of(topology)
        )
        for dc in ordered_sites(topology, target_site)
    ]
    answering = [n for n in nodes if n["answered"]]
    if not answering:
        raise RwsSurveyError(
            "no RWS answered ("
            + "; ".join(f"{n['site']}: {n['error']}" for n in nodes)
            + "); nothing can be switched. Check the RWS nodes and the gir_rws_* connections"
        )
    environment_ids = sorted({i for n in answering for i in n["environment_ids"]})
    if len(environment_ids) != 1:
        raise FailoverRefused(
            Outcome.PREFLIGHT_FAILED,
            f"RWS lists {len(environment_ids)} genesys environments ({environment_ids}); the guide's "
            "procedure needs exactly one. Switch by hand and fix this DAG's assumption",
        )
    reported = {n["site"]: n["eServicesSite"] for n in answering if n["eServicesSite"] is not None}
    distinct = sorted(set(reported.values()))
    return {
        "environment_id": environment_ids[0],
        "nodes": nodes,
        "reported": reported,
        "current_site": distinct[0] if len(distinct) == 1 else None,
        "consistent": len(distinct) <= 1,
        "site_reported": bool(reported),
    }


def site_decision(
    preflight: Mapping[str, Any], survey: Mapping[str, Any], target_site: str
) -> dict[str, Any]:
    """Compare the site now with what the approver was shown; any definite change stops the switch."""
    before, now = preflight.get("current_site"), survey.get("current_site")
    if now == target_site:
        return {
            "decision": "nothing-to-do",
            "detail": f"the site changed while waiting: RWS already reports {target_site} (pre-flight saw "
            f"{before or 'no site'}); nothing to switch",
        }
    if not survey.get("consistent") and preflight.get("consistent", True):
        raise FailoverRefused(
            Outcome.SITE_CHANGED,
            f"RWS nodes now disagree on the eServices site ({survey.get('reported')}) although they agreed "
            "at pre-flight; something changed while waiting. Nothing was switched: trigger again",
        )
    if before is not None and now is not None and now != before:
        raise FailoverRefused(
            Outcome.SITE_CHANGED,
            f"the eServices site changed while waiting for approval: pre-flight saw {before}, RWS now "
            f"reports {now}. The approval was for another situation; nothing was switched. Trigger again",
        )
    return {"decision": "switch", "detail": f"site still {now or 'not reported'}; switching to {target_site}"}


def one_environment_id(site: str, node: Mapping[str, Any], preflight: Mapping[str, Any]) -> str:
    """The one genesys-environment ID this RWS lists now: the one pre-flight saw, shown to the approver."""
    ids = node["environment_ids"]
    if len(ids) != 1:
        raise FailoverRefused(
            Outcome.SITE_CHANGED,
            f"RWS {site} now lists {len(ids)} genesys environments ({ids}); the procedure needs exactly one. "
            "Nothing was switched",
        )
    shown = preflight.get("environment_id")
    if shown is not None and shown != ids[0]:
        raise FailoverRefused(
            Outcome.SITE_CHANGED,
            f"RWS {site} lists genesys environment {ids[0]}, not {shown} as at pre-flight; nothing was "
            "switched. Trigger again",
        )
    return ids[0]
