"""The HTTP face of one simulated data center's RWS ops API, plus ``/_sim`` control endpoints.

``/api/v2/ops/...`` behaves like the guide (basic auth with the ops user, GWS ``statusCode`` bodies, a
single resource nested under its name); a POST without ``Content-Type: application/json`` (the header
every curl of the guide sends) is refused with HTTP 415, as a JSON web service does (the body's
statusCode 10 is this simulator's choice). ``state.py`` lists what comes from the guide and what is
assumed.
``/_sim/...`` is for tests and demos only: inject faults, add latency, read what was received. It is
deliberately outside ``/api`` so no DAG can call it by accident.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from include.gir_sim.state import Fault, SimError, SimState

OPS = "/api/v2/ops"


def _gws(http_status: int, status_code: int, message: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"statusCode": status_code}
    if message:
        body["statusMessage"] = message
    return JSONResponse(body, status_code=http_status)


def _authorized(request: Request, user: str, password: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given_user, _, given_password = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return secrets.compare_digest(given_user, user) and secrets.compare_digest(given_password, password)


def _is_json(content_type: str | None) -> bool:
    """``application/json``, with or without parameters such as ``; charset=utf-8``."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


def create_app(state: SimState, site: str, *, ops_user: str, ops_password: str) -> FastAPI:
    """One RWS node for ``site``; every node of the process shares ``state``."""
    app = FastAPI(title=f"GIR simulator: RWS {site}", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def ops_api_gate(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if not path.startswith("/api/"):
            return await call_next(request)
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        entry: dict[str, Any] = {"method": request.method, "path": path, "body": body}
        site_state = state.site(site)
        if site_state.latency_ms:
            await asyncio.sleep(site_state.latency_ms / 1000)
        if not _authorized(request, ops_user, ops_password):
            entry.update(http_status=401, status_code=20, authorized=False)
            state.record_request(site, entry)
            return _gws(401, 20, "not authenticated: use the RWS ops user")
        entry["authorized"] = True
        if request.method == "POST" and not _is_json(request.headers.get("content-type")):
            entry.update(http_status=415, status_code=10)
            state.record_request(site, entry)
            return _gws(415, 10, "unsupported media type: send Content-Type: application/json")
        # "drop" faults are taken earlier, by the server's protocol, which can close the socket.
        fault = state.take_fault(site, request.method, path, modes=("status", "delay"))
        if fault is not None:
            entry["fault"] = fault.mode
            if fault.mode == "delay":
                await asyncio.sleep(fault.delay_ms / 1000)
            else:
                entry.update(http_status=fault.http_status, status_code=fault.status_code)
                state.record_request(site, entry)
                return _gws(fault.http_status, fault.status_code, "injected fault")
        request.state.json_body = body
        request.state.gws_status = 0
        response = await call_next(request)
        entry.update(http_status=response.status_code, status_code=request.state.gws_status)
        state.record_request(site, entry)
        return response

    def answer(request: Request, fn: Any, *args: Any) -> JSONResponse:
        try:
            body = fn(*args)
        except SimError as exc:
            request.state.gws_status = exc.status_code
            return _gws(exc.http_status, exc.status_code, exc.message)
        return JSONResponse(body)

    # --- the RWS ops API ------------------------------------------------------------------------------

    @app.get(f"{OPS}/contact-centers")
    def list_contact_centers(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        ids = state.contact_center_uris(site)
        return JSONResponse(
            {
                "statusCode": 0,
                "paths": [f"/contact-centers/{cc}" for cc in ids],
                "uris": [f"{base}{OPS}/contact-centers/{cc}" for cc in ids],
            }
        )

    @app.post(f"{OPS}/contact-centers/{{contact_center_id}}/{{kind}}")
    def force_index(contact_center_id: str, kind: str, request: Request) -> JSONResponse:
        return answer(request, state.force_index, site, contact_center_id, kind, request.state.json_body)

    @app.get(f"{OPS}/genesys-environments")
    def list_environments(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        env_id = state.environment.environment_id
        return JSONResponse(
            {
                "statusCode": 0,
                "paths": [f"/genesys-environments/{env_id}"],
                "uris": [f"{base}{OPS}/genesys-environments/{env_id}"],
            }
        )

    @app.get(f"{OPS}/genesys-environments/{{environment_id}}")
    def get_environment(environment_id: str, request: Request) -> JSONResponse:
        return answer(request, state.environment_body, environment_id)

    @app.post(f"{OPS}/genesys-environments/{{environment_id}}/multimedia-switch")
    def multimedia_switch(environment_id: str, request: Request) -> JSONResponse:
        return answer(request, state.multimedia_switch, site, environment_id, request.state.json_body)

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown(rest: str, request: Request) -> JSONResponse:
        request.state.gws_status = 6
        return _gws(404, 6, f"no such ops resource /api/{rest}")

    # --- /_sim: inspection and fault injection ------------------------------------------------------

    @app.get("/_sim/health")
    def health() -> dict[str, Any]:
        return {"site": site, "ok": True}

    @app.get("/_sim/requests")
    def received() -> list[dict[str, Any]]:
        return state.requests(site)

    @app.get("/_sim/indexed")
    def indexed() -> dict[str, Any]:
        return {
            cc: {kind: {str(hour): n for hour, n in hours.items()} for kind, hours in kinds.items()}
            for cc, kinds in state.indexed(site).items()
        }

    @app.post("/_sim/faults")
    async def add_fault(request: Request) -> dict[str, Any]:
        payload = await request.json()
        fault = Fault(**payload)
        state.add_fault(site, fault)
        return {"armed": asdict(fault)}

    @app.post("/_sim/latency")
    async def set_latency(request: Request) -> dict[str, Any]:
        payload = await request.json()
        state.site(site).latency_ms = int(payload.get("ms", 0))
        return {"latency_ms": state.site(site).latency_ms}

    @app.post("/_sim/reset")
    def reset(all_sites: bool = False) -> dict[str, Any]:
        state.reset(None if all_sites else site)
        return {"reset": "all" if all_sites else site}

    @app.get("/_sim/environment")
    def environment() -> dict[str, Any]:
        current = state.current_site()
        env = state.environment
        return {
            "environment_id": env.environment_id,
            "current_site": current,
            "pending_site": env.pending_site,
            "dr_monitoring_delay_seconds": env.dr_monitoring_delay_seconds,
            "report_site": env.report_site,
            "site_format": env.site_format,
            "switches": env.switches,
        }

    @app.post("/_sim/environment")
    async def configure_environment(request: Request) -> dict[str, Any]:
        payload = await request.json()
        env = state.environment
        if "report_site" in payload:
            env.report_site = bool(payload["report_site"])
        if "site_format" in payload:
            if payload["site_format"] not in ("nested", "top-level"):
                raise ValueError("site_format must be 'nested' or 'top-level'")
            env.site_format = payload["site_format"]
        if "dr_monitoring_delay_seconds" in payload:
            env.dr_monitoring_delay_seconds = float(payload["dr_monitoring_delay_seconds"])
        if "current_site" in payload:
            state.site(payload["current_site"])
            env.current_site = payload["current_site"]
            env.pending_site = env.pending_since = env.pending_effective_at = None
        return environment()

    return app
