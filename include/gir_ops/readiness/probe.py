"""Live RWS reachability and the eServices site each DC's RWS reports: GETs only, one short try, cached.

Every DC is asked at the same time (one thread each), with a short timeout and no retry, so a dead DC
costs the page at most one timeout; each answer is kept ``RWS_CACHE_SECONDS`` so a page refresh, the
JSON status and the Prometheus scrape do not hammer RWS. Errors are kept without credentials.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from include.gir_ops.readiness.spec import RWS_CACHE_SECONDS, RWS_TIMEOUT
from include.gir_ops.topology import DataCenter

_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")
SITE_KEY = "eServicesSite"


@dataclass(frozen=True)
class RwsProbe:
    """What one DC's RWS said just now (or ``cached_for`` seconds ago)."""

    site: str
    reachable: bool
    eservices_site: str | None
    environment_ids: tuple[str, ...]
    error: str | None
    checked_at: datetime
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "eservices_site": self.eservices_site,
            "environment_ids": list(self.environment_ids),
            "error": self.error,
            "checked_at": self.checked_at.isoformat(),
            "cached": self.cached,
        }


def reported_site(body: Mapping[str, Any]) -> str | None:
    """The eServices site in a genesys-environment body: top level, or nested under the resource's name
    (GWS puts a single resource under its name, e.g. ``{"statusCode": 0, "genesysEnvironment": {...}}``)."""
    candidates: list[Any] = [body.get(SITE_KEY)]
    candidates += [value.get(SITE_KEY) for value in body.values() if isinstance(value, Mapping)]
    for value in candidates:
        if isinstance(value, str) and value:
            return value
    return None


def probe_rws(dc: DataCenter, *, timeout: tuple[float, float] = RWS_TIMEOUT) -> RwsProbe:
    """GET the genesys environments, then the one environment's eServices site; one try each."""
    from include.gir_ops.rws import RetryPolicy, RwsClient, RwsError

    once = RetryPolicy(attempts=1)
    now = datetime.now(UTC)
    try:
        with RwsClient(dc.site, dc.rws_conn_id, timeout=timeout) as client:
            _, ids = client.genesys_environments(policy=once)
            site = None
            if len(set(ids)) == 1:
                site = reported_site(client.genesys_environment(ids[0], policy=once).body)
    except RwsError as exc:
        return RwsProbe(dc.site, False, None, (), _USERINFO.sub("***@", str(exc)), now)
    except Exception as exc:  # a missing connection, a bad URL: the page must still render
        error = f"{type(exc).__name__}: {_USERINFO.sub('***@', str(exc))}"
        return RwsProbe(dc.site, False, None, (), error, now)
    return RwsProbe(dc.site, True, site, tuple(sorted(set(ids))), None, now)


class ProbeCache:
    """Probe results per site, reused for ``ttl`` seconds; concurrent askers of one site share one probe."""

    def __init__(
        self,
        probe: Callable[[DataCenter], RwsProbe] = probe_rws,
        *,
        ttl: float = RWS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._site_locks: dict[str, threading.Lock] = {}
        self._results: dict[str, tuple[float, RwsProbe]] = {}

    def clear(self) -> None:
        with self._lock:
            self._results.clear()

    def _one(self, dc: DataCenter) -> RwsProbe:
        with self._lock:
            site_lock = self._site_locks.setdefault(dc.site, threading.Lock())
        with site_lock:
            cached = self._results.get(dc.site)
            if cached is not None and self._clock() - cached[0] < self.ttl:
                return replace(cached[1], cached=True)
            result = self._probe(dc)
            self._results[dc.site] = (self._clock(), result)
            return result

    def probe_all(self, data_centers: list[DataCenter]) -> dict[str, RwsProbe]:
        """Every DC at once; the slowest DC bounds the wait, not their sum."""
        if not data_centers:
            return {}
        with ThreadPoolExecutor(max_workers=len(data_centers), thread_name_prefix="gir-rws-probe") as pool:
            results = list(pool.map(self._one, data_centers))
        return {r.site: r for r in results}
