"""Airflow plugin: "GIR readiness" in the UI navigation: can the standby DC take over now?

Thin: the FastAPI app (``include/gir_ops/readiness/app.py``) is mounted in the API server under
``/gir-readiness`` and shown as an external view (an embedded page, reached from the navigation).
Operator docs: docs/readiness.md.

Every Airflow process loads the plugins (each task runner does, for macros), but only the API server
asks for ``fastapi_apps``: the app, and FastAPI with it, is built on that first request for it, so a task
start does not pay for importing a web framework it never serves.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from include.gir_ops.readiness.spec import NAV_NAME, NAV_ROUTE, URL_PREFIX


class GirReadinessPlugin(AirflowPlugin):
    name = "gir_readiness"
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": NAV_NAME,
            # Relative (no leading slash), so it also works under an [api] base_url with a path.
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": NAV_ROUTE,
            "destination": "nav",
        }
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from include.gir_ops.readiness.app import create_app

        return [{"name": "gir_readiness", "app": create_app(), "url_prefix": URL_PREFIX}]
