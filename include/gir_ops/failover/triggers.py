"""Verify an eServices switch without holding a worker slot: a trigger that only reads.

After the one ``multimedia-switch`` POST, RWS applies the new site within ``drMonitoringDelay`` seconds.
Waiting for that in a worker would hold a slot for a minute or more in the worst hour of the year, so the
``verify_switch`` task (``operators.VerifyEServicesSiteOperator``) defers to :class:`EServicesSiteTrigger`,
which runs in the triggerer and polls ``GET /api/v2/ops/genesys-environments/{id}`` on every DC's RWS. It
never POSTs: a triggerer restart re-runs it from its serialized arguments, and repeating a GET is harmless
(a deferred POST could be sent twice). The verdict comes from :func:`judge_verification`, a pure function.

Public docs do not show whether that GET body carries ``eServicesSite``: it is read at the top level,
inside the nested resource (GWS: ``{"statusCode": 0, "genesysEnvironment": {...}}``) or at the
topology's ``failover.site_field`` (``rws.eservices_site_of``). When no RWS reports it, the trigger waits
``drMonitoringDelay`` and then calls the switch ``unverified``: it never claims success it could not
see; the person's confirmation (``confirm_switch``) may then make it ``confirmed``.

The triggerer imports the trigger as ``include.gir_ops.failover.triggers.EServicesSiteTrigger`` (triggers
stored under the old path ``include.gir_ops.failover_triggers`` still load).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.gir_ops.shared import OPS_API

# The verification verdicts (the trigger event's ``outcome``); the run's outcome is decided from them.
VERIFIED = "verified"
UNVERIFIED = "unverified"
NOT_SWITCHED = "not-switched"


def judge_verification(
    observations: Sequence[dict[str, Any]],
    *,
    target_site: str,
    elapsed_seconds: float,
    dr_monitoring_delay_seconds: float,
    verify_margin_seconds: float,
) -> tuple[str, str] | None:
    """The verdict on one round of observations, or None to keep polling.

    An observation is ``{"site", "ok", "eServicesSite"}``; ``ok`` means RWS answered HTTP 2xx with
    statusCode 0. Verified: every RWS that answered reports the target (at least one answered).
    Unverified: after the delay no answering RWS reports a site at all, or at the deadline some do not
    report it (or none answers). Not switched: at the deadline an RWS still reports another site.
    """
    answered = [o for o in observations if o.get("ok")]
    reporting = [o for o in answered if o.get("eServicesSite") is not None]
    others = sorted(
        {f"{o['site']} reports {o['eServicesSite']}" for o in reporting if o["eServicesSite"] != target_site}
    )
    if answered and len(reporting) == len(answered) and not others:
        sites = ", ".join(o["site"] for o in answered)
        return VERIFIED, f"every RWS that answers ({sites}) reports eServicesSite {target_site}"
    if elapsed_seconds >= dr_monitoring_delay_seconds and answered and not reporting:
        return (
            UNVERIFIED,
            f"RWS does not report eServicesSite in its genesys-environment answer; waited the "
            f"drMonitoringDelay ({dr_monitoring_delay_seconds:g}s), so the switch to {target_site} could "
            "not be confirmed",
        )
    if elapsed_seconds < dr_monitoring_delay_seconds + verify_margin_seconds:
        return None
    waited = dr_monitoring_delay_seconds + verify_margin_seconds
    if others:
        return NOT_SWITCHED, f"after {waited:g}s {'; '.join(others)} instead of {target_site}"
    if not answered:
        return UNVERIFIED, f"no RWS answered during the last poll after {waited:g}s; cannot confirm"
    silent = ", ".join(o["site"] for o in answered if o.get("eServicesSite") is None)
    return UNVERIFIED, f"after {waited:g}s RWS {silent} still does not report eServicesSite"


class EServicesSiteTrigger(BaseTrigger):
    """Poll every DC's RWS until the environment reports ``target_site`` or the deadline passes.

    Arguments are plain JSON (site names and connection ids, never credentials): the triggerer stores
    them in its database and re-creates the trigger from them after a restart. ``switched_at`` is the
    POST's epoch time, so a restarted trigger keeps the original deadline.
    """

    def __init__(
        self,
        *,
        rws_nodes: list[dict[str, str]],
        environment_id: str,
        target_site: str,
        switched_at: float,
        dr_monitoring_delay_seconds: float,
        verify_margin_seconds: float,
        poll_interval_seconds: float = 5.0,
        site_field: str | None = None,
    ) -> None:
        super().__init__()
        self.site_field = site_field
        self.rws_nodes = [{"site": n["site"], "conn_id": n["conn_id"]} for n in rws_nodes]
        self.environment_id = environment_id
        self.target_site = target_site
        self.switched_at = float(switched_at)
        self.dr_monitoring_delay_seconds = float(dr_monitoring_delay_seconds)
        self.verify_margin_seconds = float(verify_margin_seconds)
        self.poll_interval_seconds = float(poll_interval_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "rws_nodes": self.rws_nodes,
                "environment_id": self.environment_id,
                "target_site": self.target_site,
                "switched_at": self.switched_at,
                "dr_monitoring_delay_seconds": self.dr_monitoring_delay_seconds,
                "verify_margin_seconds": self.verify_margin_seconds,
                "poll_interval_seconds": self.poll_interval_seconds,
                "site_field": self.site_field,
            },
        )

    async def _observe(self, hook: Any, site: str) -> dict[str, Any]:
        """One GET of the environment at one DC; every failure becomes part of the observation."""
        import aiohttp

        path = f"{OPS_API}/genesys-environments/{self.environment_id}"
        observation: dict[str, Any] = {
            "site": site,
            "method": "GET",
            "path": path,
            "ok": False,
            "http_status": None,
            "statusCode": None,
            "eServicesSite": None,
            "error": None,
        }
        try:
            async with hook.session() as http:
                response = await http.run(
                    endpoint=path,
                    extra_options={"check_response": False, "timeout": aiohttp.ClientTimeout(total=10)},
                )
                observation["http_status"] = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            observation["error"] = f"RWS {site} unreachable ({type(exc).__name__})"
            return observation
        except Exception as exc:  # a missing connection must not end verification for the others
            observation["error"] = f"RWS {site} could not be asked: {type(exc).__name__}: {exc}"
            return observation
        if not isinstance(body, dict) or not isinstance(body.get("statusCode"), int):
            observation["error"] = "answer without a GWS statusCode"
            return observation
        observation["statusCode"] = body["statusCode"]
        observation["ok"] = 200 <= observation["http_status"] < 300 and body["statusCode"] == 0
        # Imported here: the DAG file imports this module while it is parsed, and must not load the client.
        from include.gir_ops.rws import eservices_site_of

        observation["eServicesSite"] = eservices_site_of(body, self.site_field)
        return observation

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.http.hooks.http import HttpAsyncHook

        hooks = {
            n["site"]: HttpAsyncHook(method="GET", http_conn_id=n["conn_id"], retry_limit=1)
            for n in self.rws_nodes
        }
        polls = 0
        answers: list[dict[str, Any]] = []
        while True:
            observations = list(
                await asyncio.gather(*(self._observe(hook, site) for site, hook in hooks.items()))
            )
            polls += 1
            elapsed = time.time() - self.switched_at
            for observation in observations:
                answers.append({**observation, "elapsed_seconds": round(elapsed, 3)})
            verdict = judge_verification(
                observations,
                target_site=self.target_site,
                elapsed_seconds=elapsed,
                dr_monitoring_delay_seconds=self.dr_monitoring_delay_seconds,
                verify_margin_seconds=self.verify_margin_seconds,
            )
            if verdict is not None:
                outcome, detail = verdict
                self.log.info("eServices switch to %s: %s (%s)", self.target_site, outcome, detail)
                yield TriggerEvent(
                    {
                        "outcome": outcome,
                        "detail": detail,
                        "target_site": self.target_site,
                        "elapsed_seconds": round(elapsed, 3),
                        "polls": polls,
                        "last_observations": observations,
                        # Every answer: about a dozen rounds, since the interval is 1/12 of the window.
                        "answers": answers,
                    }
                )
                return
            self.log.info(
                "eServices switch to %s not confirmed yet after %.1fs: %s",
                self.target_site,
                elapsed,
                ", ".join(
                    f"{o['site']}={o['eServicesSite'] or o['error'] or 'no site'}" for o in observations
                ),
            )
            deadline = self.switched_at + self.dr_monitoring_delay_seconds + self.verify_margin_seconds
            await asyncio.sleep(max(0.05, min(self.poll_interval_seconds, deadline - time.time())))
