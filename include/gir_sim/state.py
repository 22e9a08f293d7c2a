"""What the simulated GIR data centers remember: re-indexed hours, the eServices site, every request.

Pure Python and thread-safe, so it can be unit-tested without HTTP and shared by the per-DC RWS
servers of one process. It models RWS as the guide and the GWS conventions describe it, and says where
it goes beyond them:

From the GIR guide (``Multiple data center locations``):
- ``forceIndex`` takes ``operationName``, ``from`` (mandatory, ms since epoch), ``to`` and ``purgeOld``;
  both ends are "rounded to the nearest hour"; ``purgeOld`` deletes the old index first.
- ``multimedia-switch`` with ``{"eServicesSite": <siteName>}``; RWS "will monitor the eServicesSite value
  every drMonitoringDelay seconds" and switches when it changed, so the switch takes effect at some
  moment within ``drMonitoringDelay`` (here: a random one, never later), and every DC's RWS of the one
  Genesys environment sees it.

From the GWS API conventions (not the guide): every body carries ``statusCode`` (0 OK, 1 missing
parameter, 2 not valid for the state, 6 not found, 10 input validation); a single resource is answered
nested under its name (``{"statusCode": 0, "genesysEnvironment": {...}}``).

Assumptions of this simulator, which a real RWS may not share (the guide is silent on them):
- a forceIndex interval under one hour after rounding is refused with statusCode 2 (the guide only
  says the interval "is a minimum of one hour" because of the rounding);
- ``GET .../genesys-environments/{id}`` reports the site as ``eServicesSite`` inside the nested
  resource (``site_format="nested"``, the default), at the top level (``"top-level"``), or not at all
  (``report_site=False``): public docs show no body for it;
- a POST without ``Content-Type: application/json`` is answered HTTP 415 with statusCode 10 (the guide's
  every curl sends that header; the body code is our choice);
- the environment ID is a UUID.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

HOUR_MS = 3_600_000
REINDEX_KINDS = ("recordings", "screen-recordings")


def round_to_nearest_hour(ms: int) -> int:
    """RWS rounds both ends of a forceIndex interval to the nearest hour (half an hour rounds up)."""
    return ((ms + HOUR_MS // 2) // HOUR_MS) * HOUR_MS


@dataclass
class Fault:
    """Answer the next ``count`` matching API calls of a site with a failure instead of the real answer.

    ``mode``: ``status`` answers ``http_status`` with ``status_code``; ``drop`` closes the connection
    without answering; ``delay`` waits ``delay_ms`` and then answers normally (for client timeouts).
    ``count`` < 0 means every matching call until the faults are cleared.
    """

    count: int = 1
    mode: str = "status"
    http_status: int = 503
    status_code: int = 4
    delay_ms: int = 0
    path_contains: str | None = None
    method: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path_contains and self.path_contains not in path)


@dataclass
class SiteState:
    site: str
    contact_centers: list[str]
    screen_recording: bool
    latency_ms: int = 0
    faults: list[Fault] = field(default_factory=list)
    # (contact_center_id, kind) -> hour start (ms) -> how many times it was re-indexed
    indexed_hours: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)
    purges: list[tuple[str, str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EnvironmentState:
    """One Genesys environment seen by every DC's RWS; the eServices site RWS currently uses."""

    environment_id: str
    current_site: str
    dr_monitoring_delay_seconds: float
    report_site: bool = True
    # Where GET .../genesys-environments/{id} puts eServicesSite: "nested" (GWS: inside the resource
    # object "genesysEnvironment") or "top-level".
    site_format: str = "nested"
    pending_site: str | None = None
    pending_since: float | None = None
    # When the pending switch takes effect: a random moment within drMonitoringDelay of the POST.
    pending_effective_at: float | None = None
    switches: list[dict[str, Any]] = field(default_factory=list)


class SimError(Exception):
    """A GWS-style refusal: HTTP status plus statusCode and statusMessage."""

    def __init__(self, http_status: int, status_code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status_code = status_code
        self.message = message


class SimState:
    """All simulated data centers of one Genesys environment."""

    def __init__(
        self,
        sites: Iterable[tuple[str, list[str], bool]],
        *,
        primary_site: str,
        dr_monitoring_delay_seconds: float = 30.0,
        environment_id: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        # Where within drMonitoringDelay a switch lands; a seeded Random makes a test repeatable.
        self._rng = rng or random.Random()  # noqa: S311 - timing of a simulation, not security
        self.sites: dict[str, SiteState] = {
            site: SiteState(site=site, contact_centers=[c.lower() for c in ccs], screen_recording=screen)
            for site, ccs, screen in sites
        }
        self.environment = EnvironmentState(
            environment_id=environment_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, "gir-ops-simulator")),
            current_site=primary_site,
            dr_monitoring_delay_seconds=dr_monitoring_delay_seconds,
        )

    def site(self, site: str) -> SiteState:
        try:
            return self.sites[site]
        except KeyError:
            raise SimError(404, 6, f"unknown site {site!r}") from None

    # --- faults and inspection -------------------------------------------------------------------------

    def add_fault(self, site: str, fault: Fault) -> None:
        with self._lock:
            self.site(site).faults.append(fault)

    def take_fault(
        self, site: str, method: str, path: str, modes: tuple[str, ...] = ("status", "delay", "drop")
    ) -> Fault | None:
        """The first armed fault of one of ``modes`` matching this call, consumed by one use."""
        with self._lock:
            state = self.site(site)
            for fault in state.faults:
                if fault.count != 0 and fault.mode in modes and fault.matches(method, path):
                    if fault.count > 0:
                        fault.count -= 1
                    return fault
            state.faults = [f for f in state.faults if f.count != 0]
            return None

    def record_request(self, site: str, entry: dict[str, Any]) -> None:
        with self._lock:
            entry.setdefault("time", self._clock())
            self.site(site).requests.append(entry)

    def requests(self, site: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.site(site).requests]

    def reset(self, site: str | None = None) -> None:
        """Forget requests, faults, latency and indexes (of one site, or all); keep the environment."""
        with self._lock:
            for state in [self.site(site)] if site else list(self.sites.values()):
                state.requests.clear()
                state.faults.clear()
                state.indexed_hours.clear()
                state.purges.clear()
                state.latency_ms = 0

    def indexed(self, site: str) -> dict[str, dict[str, dict[int, int]]]:
        """contact center -> kind -> hour start (ms) -> times re-indexed."""
        with self._lock:
            result: dict[str, dict[str, dict[int, int]]] = {}
            for (cc, kind), hours in self.site(site).indexed_hours.items():
                result.setdefault(cc, {})[kind] = dict(sorted(hours.items()))
            return result

    # --- the ops API ----------------------------------------------------------------------------------

    def contact_center_uris(self, site: str) -> list[str]:
        return list(self.site(site).contact_centers)

    def force_index(self, site: str, contact_center_id: str, kind: str, body: Any) -> dict[str, Any]:
        """Validate a forceIndex body as the guide's table says, then mark the hours as re-indexed."""
        state = self.site(site)
        if kind not in REINDEX_KINDS:
            raise SimError(404, 6, f"unknown index {kind!r}")
        if contact_center_id.lower() not in state.contact_centers:
            raise SimError(404, 6, f"contact center {contact_center_id} not found")
        if kind == "screen-recordings" and not state.screen_recording:
            raise SimError(400, 2, "screen recording is not enabled in this data center")
        if not isinstance(body, dict):
            raise SimError(400, 10, "body must be a JSON object")
        if "operationName" not in body:
            raise SimError(400, 1, "operationName is mandatory")
        if body["operationName"] != "forceIndex":
            raise SimError(400, 2, f"unsupported operationName {body['operationName']!r}")
        if "from" not in body:
            raise SimError(400, 1, "from is mandatory")
        from_ms = _as_long(body["from"], "from")
        to_ms = _as_long(body["to"], "to") if body.get("to") is not None else int(self._clock() * 1000)
        purge_old = body.get("purgeOld", False)
        if not isinstance(purge_old, bool):
            raise SimError(400, 10, "purgeOld must be a boolean")
        start, end = round_to_nearest_hour(from_ms), round_to_nearest_hour(to_ms)
        if end - start < HOUR_MS:
            raise SimError(400, 2, "the re-index interval is under one hour after rounding")
        with self._lock:
            key = (contact_center_id.lower(), kind)
            if purge_old:
                state.indexed_hours.pop(key, None)
                state.purges.append(key)
            hours = state.indexed_hours.setdefault(key, Counter())
            for hour in range(start, end, HOUR_MS):
                hours[hour] += 1
        return {"statusCode": 0, "from": start, "to": end, "hours": (end - start) // HOUR_MS}

    def current_site(self) -> str:
        """The eServices site RWS uses now: a pending switch counts from its (random) moment within
        drMonitoringDelay of the POST, as RWS notices the change at its next monitoring tick."""
        with self._lock:
            env = self.environment
            if (
                env.pending_site is not None
                and env.pending_effective_at is not None
                and self._clock() >= env.pending_effective_at
            ):
                env.current_site = env.pending_site
                env.pending_site = env.pending_since = env.pending_effective_at = None
            return env.current_site

    def environment_body(self, environment_id: str) -> dict[str, Any]:
        """GET .../genesys-environments/{id}: the resource nested under its name, as GWS answers one."""
        env = self.environment
        if environment_id != env.environment_id:
            raise SimError(404, 6, f"genesys environment {environment_id} not found")
        resource: dict[str, Any] = {"id": env.environment_id}
        current = self.current_site()
        if env.report_site:
            resource["eServicesSite"] = current
        if env.site_format == "top-level":
            return {"statusCode": 0, **resource}
        return {"statusCode": 0, "genesysEnvironment": resource}

    def multimedia_switch(self, site: str, environment_id: str, body: Any) -> dict[str, Any]:
        env = self.environment
        if environment_id != env.environment_id:
            raise SimError(404, 6, f"genesys environment {environment_id} not found")
        if not isinstance(body, dict) or "eServicesSite" not in body:
            raise SimError(400, 1, "eServicesSite is mandatory")
        target = body["eServicesSite"]
        if target not in self.sites:
            raise SimError(400, 2, f"eServicesSite {target!r} is not a configured siteName")
        with self._lock:
            env.pending_site = target
            env.pending_since = self._clock()
            env.pending_effective_at = env.pending_since + self._rng.uniform(
                0.0, max(env.dr_monitoring_delay_seconds, 0.0)
            )
            env.switches.append({"via": site, "eServicesSite": target, "time": env.pending_since})
        return {"statusCode": 0}


def _as_long(value: Any, name: str) -> int:
    """The guide's example sends milliseconds as strings; accept both, refuse anything else."""
    if isinstance(value, bool):
        raise SimError(400, 10, f"{name} must be milliseconds since epoch")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise SimError(400, 10, f"{name} must be milliseconds since epoch")
