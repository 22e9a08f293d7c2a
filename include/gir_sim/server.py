"""Run one simulated RWS per data center of a topology, each on its own loopback port.

All servers live in one background thread with one event loop and share one ``SimState``, so the
Genesys environment (the eServices site) is the same whichever DC's RWS is asked, as in the guide. A
single site can be stopped and started again to simulate a DC whose RWS is down (connection refused).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from include.gir_ops.topology import Topology
from include.gir_sim.app import create_app
from include.gir_sim.state import SimState


def simulated_contact_centers(site: str, count: int = 3) -> list[str]:
    """The IDs a DC reports when the topology leaves its list empty (to be discovered).

    Dashed UUIDs, as real RWS deployments address contact centers (the guide only says "in hex format"),
    the same for a site on every start.
    """
    return [
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"gir-sim:{site}/contact-center/{index}"))
        for index in range(count)
    ]


def _protocol_for(state: SimState, site: str) -> type[H11Protocol]:
    """An HTTP protocol that can close the socket on an armed "drop" fault before answering."""

    class DroppingProtocol(H11Protocol):
        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:
                request_line = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                if len(request_line) == 3 and request_line[1].startswith("/api/"):
                    method, path = request_line[0], request_line[1].split("?", 1)[0]
                    if state.take_fault(site, method, path, modes=("drop",)) is not None:
                        state.record_request(
                            site,
                            {"method": method, "path": path, "body": None, "fault": "drop"}
                            | {"http_status": None, "status_code": None},
                        )
                        self.transport.close()
                        return
            super().data_received(data)

    return DroppingProtocol


class GirSimulator:
    """The simulated GIR data centers of ``topology``; ``start()`` serves them on loopback."""

    def __init__(
        self,
        topology: Topology,
        *,
        ops_password: str,
        ops_user: str = "ops",
        dr_monitoring_delay_seconds: float | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        delay = dr_monitoring_delay_seconds
        if delay is None:
            delay = topology.failover.dr_monitoring_delay_seconds if topology.failover else 30.0
        self.topology = topology
        self.host = host
        self._ops_user = ops_user
        self._ops_password = ops_password
        self.state = SimState(
            [
                (
                    dc.site,
                    dc.rws.contact_centers or simulated_contact_centers(dc.site),
                    dc.rws.screen_recording,
                )
                for dc in topology.data_centers
            ],
            primary_site=topology.primary_site,
            dr_monitoring_delay_seconds=delay,
        )
        self.ports: dict[str, int] = {}
        self._servers: dict[str, uvicorn.Server] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self, ports: Mapping[str, int] | None = None) -> dict[str, int]:
        """Serve every DC; a port of 0 (or none given) picks a free one. Returns site -> port."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run_loop, args=(ready,), name="gir-simulator", daemon=True
        )
        self._thread.start()
        ready.result(timeout=30)
        for dc in self.topology.data_centers:
            self.start_site(dc.site, (ports or {}).get(dc.site, 0))
        return dict(self.ports)

    def _run_loop(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        ready.set_result(None)
        loop.run_forever()
        loop.close()

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        assert self._loop is not None, "the simulator is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def start_site(self, site: str, port: int | None = None) -> int:
        """(Re)start one DC's RWS, on its previous port unless told otherwise."""
        port = self.ports.get(site, 0) if port is None else port
        # proto=IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted connections (it checks the proto):
        # without it every answer waits ~40 ms for a delayed ACK (Nagle), 100 s for a 400-day re-index.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"GIR simulator: cannot listen on {self.host}:{port} for {site} ({exc.strerror}); "
                "is another stack still running? stop it or choose other ports"
            ) from None
        sock.listen(128)
        sock.setblocking(False)
        self.ports[site] = sock.getsockname()[1]
        app = create_app(self.state, site, ops_user=self._ops_user, ops_password=self._ops_password)
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            http=_protocol_for(self.state, site),
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._servers[site] = server

        async def serve() -> None:
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            self._tasks[site] = task
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if task.done():
                task.result()

        self._call(serve())
        return self.ports[site]

    def stop_site(self, site: str) -> None:
        """Stop one DC's RWS: clients then get "connection refused", as when the node is down."""
        server = self._servers.pop(site, None)
        task = self._tasks.pop(site, None)
        if server is None or task is None:
            return
        server.should_exit = True

        async def wait() -> None:
            await asyncio.wait_for(task, timeout=10)

        self._call(wait(), timeout=15)

    def stop(self) -> None:
        if self._loop is None:
            return
        for site in list(self._servers):
            self.stop_site(site)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None
        self._stopped.set()

    def __enter__(self) -> GirSimulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, site: str) -> str:
        return f"http://{self.host}:{self.ports[site]}"

    def wait_stopped(self) -> None:
        self._stopped.wait()
