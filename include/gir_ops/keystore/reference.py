"""Which RCS instance the keystore check compares against, per run.

On a normal day the reference is ``keystore_check.reference`` (or the primary's first instance). During a
failover the primary DC may be lost, and with it that reference: the hourly check would then be red for
the whole outage ("nothing to compare against"). So by default the reference follows the DC whose
Interaction Server is current, as RWS reports it (``eServicesSite``); a run can also name one (param
``reference``). When no RWS reports the site (the guide documents no read-back), the configured reference
stays, and the report says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from include.gir_ops.topology import Topology

log = logging.getLogger(__name__)

SITE_FIELD = "eServicesSite"


@dataclass(frozen=True)
class ReferenceChoice:
    instance: str | None
    reason: str


def current_eservices_site(topology: Topology) -> tuple[str | None, str]:
    """The site whose Interaction Server RWS uses now, asked of each DC's RWS in turn (GETs only, one
    attempt each, short timeouts: a lost DC costs seconds); (None, what was tried) when none reports it."""
    from include.gir_ops.rws import RetryPolicy, RwsClient, RwsError, eservices_site_of

    once = RetryPolicy(attempts=1)
    site_field = topology.failover.site_field if topology.failover else None
    tried: list[str] = []
    for dc in topology.data_centers:
        try:
            with RwsClient(dc.site, dc.rws_conn_id, timeout=(3.0, 10.0)) as client:
                _, ids = client.genesys_environments(policy=once)
                if len(ids) != 1:
                    tried.append(f"{dc.site}: lists {len(ids)} environments")
                    continue
                site = eservices_site_of(client.genesys_environment(ids[0], policy=once).body, site_field)
        except RwsError as exc:
            tried.append(f"{dc.site}: {type(exc).__name__}")
            continue
        except Exception as exc:  # a missing connection is not a reason to stop the keystore check
            tried.append(f"{dc.site}: {type(exc).__name__}")
            continue
        if site in topology.sites:
            return site, f"RWS {dc.site} reports eServicesSite {site}"
        tried.append(f"{dc.site}: no eServicesSite in its answer" if site is None else f"{dc.site}: {site!r}")
    return None, "; ".join(tried)


def choose_reference(
    topology: Topology,
    requested: str | None,
    *,
    current_site: Callable[[Topology], tuple[str | None, str]] = current_eservices_site,
) -> ReferenceChoice:
    """The run's reference: ``requested`` (the run's param), else one in the DC whose Interaction Server
    is current, else the configured one."""
    configured = topology.keystore_reference
    if requested:
        names = [rcs.name for _, rcs in topology.rcs_instances]
        if requested not in names:
            raise ValueError(f"param reference {requested!r} is not an RCS instance; use one of {names}")
        return ReferenceChoice(requested, f"{requested}: chosen for this run (param reference)")
    site, how = current_site(topology)
    if site is None:
        return ReferenceChoice(
            configured,
            f"{configured}: the configured reference; the current eServices site is unknown ({how})",
        )
    in_site = {rcs.name for rcs in topology.site(site).rcs}
    if configured in in_site:
        return ReferenceChoice(
            configured, f"{configured}: the configured reference, in {site}, the current site ({how})"
        )
    if not in_site:
        return ReferenceChoice(
            configured,
            f"{configured}: the configured reference; {site}, the current site, has no RCS ({how})",
        )
    chosen = topology.site(site).rcs[0].name
    return ReferenceChoice(
        chosen,
        f"{chosen}: the first RCS of {site}, whose Interaction Server is current ({how}); the configured "
        f"reference {configured} is in another DC",
    )
