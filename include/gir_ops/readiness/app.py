"""The readiness FastAPI app the plugin mounts in Airflow's API server under ``/gir-readiness``.

Behind Airflow's own authentication and authorization: every route depends on the core API's
``requires_access_dag("GET", DAG runs)``, which resolves the user from the ``Authorization: Bearer`` JWT
or the UI's session cookie (the same check ``GET /api/v2/dags/~/dagRuns`` makes) and asks the configured
auth manager. No valid token or session: HTTP 401/403 and no data. The re-index page triggers through
the public REST API in the user's own browser session, so Airflow authorizes that too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from include.gir_ops.readiness.probe import ProbeCache
from include.gir_ops.readiness.spec import COVERAGE_DAYS, URL_PREFIX


class ReindexGap(BaseModel):
    """One missing range of one contact center and kind, as the page's links carry it."""

    site: str
    contact_center_id: str
    kind: str
    from_: str = Field(alias="from")
    to: str


PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def airflow_base(request: Request) -> str:
    """The Airflow UI's base path as the browser sees it ("" or e.g. "/airflow"), from the mount point."""
    root = str(request.scope.get("root_path") or "")
    return root.removesuffix(URL_PREFIX).rstrip("/")


bearer = HTTPBearer(auto_error=False)


async def require_reader(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Airflow's own check, as ``GET /api/v2/dags/~/dagRuns`` makes it: the user from the bearer JWT or the
    UI's session cookie (``get_user``: 401 without one, 403 for an invalid one), then the auth manager's
    answer to "may this user read DAG runs?" (403 if not).

    Imported on the first request, not when the plugin loads: every task runner loads the plugins, and the
    core API's security module costs more than a second to import.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    user = await get_user(request, None, credentials)
    requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN)(request, user)


def create_app(probes: ProbeCache | None = None) -> FastAPI:
    """The app; ``probes`` is the RWS probe cache (one per app, so the 30 s cache is shared by all)."""
    app = FastAPI(
        title="GIR readiness",
        description="Can the standby DC take over? Read-only; needs read access to DAG runs.",
        dependencies=[Depends(require_reader)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.probes = probes or ProbeCache()

    def current_status(request: Request) -> dict[str, Any]:
        from airflow.utils.session import create_session

        from include.gir_ops.readiness.status import collect, judge
        from include.gir_ops.topology import load_topology

        topology = load_topology()
        now = datetime.now(UTC)
        with create_session() as session:
            inputs = collect(session, topology, now)
        probed = request.app.state.probes.probe_all(topology.data_centers)
        return judge(topology, inputs, probed, now=now, base=airflow_base(request))

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        from include.gir_ops.readiness.render import render_page

        return HTMLResponse(render_page(current_status(request), days=COVERAGE_DAYS))

    @app.get("/api/status")
    def api_status(request: Request) -> Response:
        body = json.dumps(current_status(request), default=str)
        return Response(body, media_type="application/json")

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        from include.gir_ops.readiness.render import render_metrics

        return Response(render_metrics(current_status(request)), media_type=PROMETHEUS_CONTENT_TYPE)

    @app.get("/reindex", response_class=HTMLResponse)
    def reindex(request: Request, gap: Annotated[ReindexGap, Query()]) -> HTMLResponse:
        """A confirmation page for a re-index of exactly one range; nothing is triggered by a GET."""
        from include.gir_ops.readiness.render import render_reindex_page
        from include.gir_ops.readiness.triggers import reindex_conf

        try:
            dag_id, conf = reindex_conf(gap.site, gap.contact_center_id, gap.kind, gap.from_, gap.to)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        page = render_reindex_page(
            site=gap.site,
            dag_id=dag_id,
            cc=gap.contact_center_id,
            kind=gap.kind,
            conf=conf,
            base=airflow_base(request),
        )
        return HTMLResponse(page)

    return app
