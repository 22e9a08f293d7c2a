"""``python -m include.gir_sim serve``: the GIR data centers for ``make run`` and engine tests.

The ops user's password comes from ``GIR_SIM_OPS_PASSWORD`` (never a command-line argument, which any
user of the machine can read in the process list).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from include.gir_ops.shared import OPS_PASSWORD_ENV
from include.gir_ops.topology import TopologyError, load_topology
from include.gir_sim.server import GirSimulator


def _port_mapping(values: list[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for value in values:
        site, sep, port = value.partition("=")
        if not sep or not port.isdigit():
            raise SystemExit(f"--port {value!r}: write SITE=PORT, e.g. --port DC1=18801")
        ports[site] = int(port)
    return ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.gir_sim")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve every data center's RWS on loopback")
    serve.add_argument("--topology", help="topology file (default: $GIR_TOPOLOGY or the bundled one)")
    serve.add_argument("--port", action="append", default=[], help="SITE=PORT; repeat per DC")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--dr-monitoring-delay", type=float, default=None, help="seconds (RWS setting)")
    serve.add_argument(
        "--site-report",
        choices=("nested", "top-level", "none"),
        default="nested",
        help="where GET genesys-environments/{id} reports eServicesSite (none: not at all)",
    )
    args = parser.parse_args(argv)

    password = os.environ.get(OPS_PASSWORD_ENV)
    if not password:
        print(
            f"{OPS_PASSWORD_ENV} is not set: export the ops password the simulator should accept",
            file=sys.stderr,
        )
        return 2
    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        print(exc, file=sys.stderr)
        return 2
    ports = _port_mapping(args.port)
    unknown = sorted(set(ports) - set(topology.sites))
    if unknown:
        print(f"--port names unknown sites {unknown}; the topology has {topology.sites}", file=sys.stderr)
        return 2

    simulator = GirSimulator(
        topology, ops_password=password, dr_monitoring_delay_seconds=args.dr_monitoring_delay, host=args.host
    )
    simulator.state.environment.report_site = args.site_report != "none"
    if args.site_report != "none":
        simulator.state.environment.site_format = args.site_report
    try:
        started = simulator.start(ports)
    except OSError as exc:
        print(exc, file=sys.stderr)
        simulator.stop()
        return 1
    for site, port in started.items():
        print(f"GIR simulator: {site} RWS at http://{args.host}:{port}", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    simulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
