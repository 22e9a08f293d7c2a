"""What the readiness tests share: real DAG runs against the simulator, and the API app with the plugin.

Every status the tests read is made by the project's own DAGs run with ``dag.test()`` against the GIR
simulator (keystore check, backup shipping, re-index, failover), then read through the plugin's HTTP
routes in Airflow's API app, exactly as the page and a Prometheus scrape read them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from include.gir_ops.readiness.spec import URL_PREFIX
from tests.conftest import SimulatedGir, parse_dags

SMALL_BACKUP = 256 * 1024


def clean_project_metadata() -> None:
    """Forget every run, task, XCom, approval and Asset event of the project's DAGs left by other tests."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    with create_session() as session:
        tis = select(TaskInstance.id).where(TaskInstance.dag_id.like("gir_%"))
        session.execute(delete(HITLDetail).where(HITLDetail.ti_id.in_(tis)))
        session.execute(delete(XComModel).where(XComModel.dag_id.like("gir_%")))
        session.execute(delete(TaskInstance).where(TaskInstance.dag_id.like("gir_%")))
        session.execute(delete(DagRun).where(DagRun.dag_id.like("gir_%")))
        gir_assets = select(AssetModel.id).where(AssetModel.name.like("gir_%"))
        session.execute(delete(AssetEvent).where(AssetEvent.asset_id.in_(gir_assets)))


class Dags:
    """The project's DAGs parsed against the test's topology, run with dag.test()."""

    def __init__(self, gir: SimulatedGir) -> None:
        self.gir = gir
        bag = parse_dags()
        assert not bag.import_errors, bag.import_errors
        self.bag = bag
        for dag in bag.dags.values():
            for task in dag.tasks:  # retries stay on; no test sits out a 5-minute delay
                task.retry_delay = timedelta(0)

    def run(self, dag_id: str, **kwargs: Any) -> Any:
        return self.bag.dags[dag_id].test(**kwargs)

    def keystore_check(self, *, drift: tuple[str, ...] = ()) -> Any:
        from include.gir_sim.demo_data import generate_keystores

        generate_keystores(self.gir.topology, self.gir.keystore_password, drift=drift, force=True)
        return self.run("gir_rcs_keystore_check")

    def ship_backup(self) -> Any:
        from include.gir_ops.backup.route import ShippingRoute
        from include.gir_sim.demo_data import generate_index_backups, local_path

        topology = self.gir.topology
        route = ShippingRoute.from_topology(topology)
        generate_index_backups(
            local_path(route.source_root),
            days=1,
            total_bytes_per_backup=SMALL_BACKUP,
            files_per_backup=4,
            ready_marker=topology.shipping.ready_marker,
        )
        return self.run("gir_speechminer_backup_ship")

    def reindex(self, site: str, start: datetime, end: datetime, **conf: Any) -> Any:
        from include.gir_ops.shared import format_utc

        dc = self.gir.topology.site(site)
        # A logical date per range: dag.test() deletes an earlier run with the same logical date (also None).
        return self.run(
            f"gir_es_reindex_{dc.site_slug}",
            logical_date=end,
            run_conf={"from": format_utc(start), "to": format_utc(end), **conf},
        )


def bearer(username: str = "admin", role: str = "admin") -> dict[str, str]:
    """A JWT for ``username`` from the configured auth manager, as POST /auth/token would issue it."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))
    return {"Authorization": f"Bearer {token}"}


def readiness_app(app: Any) -> Any:
    """The plugin's sub-app as mounted in Airflow's API app."""
    from starlette.routing import Mount

    for route in app.routes:
        if isinstance(route, Mount) and route.path == URL_PREFIX:
            return route.app
    raise AssertionError(f"no app mounted at {URL_PREFIX}: the plugin did not load")


def now_utc() -> datetime:
    return datetime.now(UTC)
