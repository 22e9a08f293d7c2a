"""Put what the gir-ops DAGs need into an Airflow metadata DB: pools and connections. Safe to re-run.

A task in a pool that does not exist is never scheduled, so the pools must exist before the first run;
the DAGs cannot create them at parse time. Pools come from the topology (one per re-indexing DC, plus
``gir_rws_switch`` so two failover runs never POST a switch at the same time). An existing pool keeps its
size: an operator may have resized it on purpose.

Connections carry credentials, so in a real deployment an operator creates them (UI, CLI or a secrets
backend). ``demo`` creates them for the simulator that ``make run`` starts. Passwords come from the
environment, never from the command line (visible in the process list), and are never printed.

    python -m include.gir_ops.bootstrap pools [--topology FILE]
    python -m include.gir_ops.bootstrap demo --rws DC1=http://127.0.0.1:18801 --rws DC2=... [--topology FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from include.gir_ops.topology import Topology, TopologyError, load_topology

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

RWS_SWITCH_POOL = "gir_rws_switch"
RWS_SWITCH_POOL_SLOTS = 1
RWS_CONN_TYPE = "http"
KEYSTORE_CONN_TYPE = "generic"
DEMO_OPS_LOGIN = "ops"
OPS_PASSWORD_ENV = "GIR_SIM_OPS_PASSWORD"  # noqa: S105 - a variable name, not a password
KEYSTORE_PASSWORD_ENV = "GIR_RCS_KEYSTORE_PASSWORD"  # noqa: S105 - a variable name
MANAGED_BY = "managed by include.gir_ops.bootstrap"


class BootstrapError(ValueError):
    """The input cannot produce a usable pool or connection; the message says what to fix."""


@dataclass(frozen=True)
class Change:
    """What ensure_* did to one object; ``str()`` is the line shown to the operator (never a secret)."""

    kind: str  # "pool" or "connection"
    name: str
    action: str  # "created", "updated", "unchanged", "kept"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.action}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str


@dataclass(frozen=True)
class HttpTarget:
    """The parts of a base URL that an Airflow HTTP connection stores separately."""

    schema: str
    host: str
    port: int | None


def _log_change(change: Change) -> None:
    """A kept pool that differs from the topology deserves a warning; the rest is routine."""
    log.log(logging.WARNING if change.action == "kept" else logging.DEBUG, "%s", change)


@contextlib.contextmanager
def _session_scope(session: Session | None) -> Iterator[Session]:
    """Use the caller's session (the caller commits) or open one that commits on success."""
    if session is not None:
        yield session
        session.flush()
        return
    from airflow.utils.session import create_session

    with create_session() as new_session:
        yield new_session


# --- pools -------------------------------------------------------------------------------------------


def pool_specs(topology: Topology) -> list[PoolSpec]:
    """The pools the DAGs of this topology run in, in topology order, without duplicates."""
    specs: dict[str, PoolSpec] = {}
    for dc in topology.reindex_data_centers:
        specs.setdefault(
            dc.rws_pool,
            PoolSpec(
                dc.rws_pool,
                dc.reindex.pool_slots,
                f"Concurrent forceIndex POSTs to the RWS of {dc.site} ({MANAGED_BY})",
            ),
        )
    specs.setdefault(
        RWS_SWITCH_POOL,
        PoolSpec(
            RWS_SWITCH_POOL,
            RWS_SWITCH_POOL_SLOTS,
            f"One eServices multimedia switch POST at a time across all failover runs ({MANAGED_BY})",
        ),
    )
    return list(specs.values())


def ensure_pools(topology: Topology, session: Session | None = None) -> list[Change]:
    """Create each missing pool; leave an existing pool's size alone and say so."""
    from airflow.models import Pool
    from sqlalchemy import select

    changes: list[Change] = []
    with _session_scope(session) as db:
        for spec in pool_specs(topology):
            pool = db.scalar(select(Pool).where(Pool.pool == spec.name))
            if pool is None:
                Pool.create_or_update_pool(
                    name=spec.name,
                    slots=spec.slots,
                    description=spec.description,
                    include_deferred=False,
                    session=db,
                )
                change = Change("pool", spec.name, "created", f"{spec.slots} slot(s)")
            elif pool.slots == spec.slots:
                change = Change("pool", spec.name, "unchanged", f"{pool.slots} slot(s)")
            else:
                change = Change(
                    "pool",
                    spec.name,
                    "kept",
                    f"has {pool.slots} slot(s), the topology asks for {spec.slots}; an operator may have "
                    "resized it, so it is left alone: change it in the UI or with `airflow pools set`",
                )
            _log_change(change)
            changes.append(change)
    return changes


# --- connections -------------------------------------------------------------------------------------


def parse_base_url(site: str, url: str) -> HttpTarget:
    """Split an RWS base URL into schema/host/port; refuse what an HTTP connection would silently drop."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BootstrapError(f"RWS URL for {site} {url!r}: write it as http(s)://host[:port]")
    if parts.username or parts.password:
        raise BootstrapError(
            f"RWS URL for {site}: remove the credentials from the URL; the login and password are "
            "stored in the connection's own fields"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BootstrapError(
            f"RWS URL for {site} {url!r}: give only scheme, host and port; the ops API paths "
            "(/api/v2/ops/...) are added by the DAGs"
        )
    try:
        port = parts.port
    except ValueError:
        raise BootstrapError(f"RWS URL for {site} {url!r}: the port is not a number 1-65535") from None
    return HttpTarget(schema=parts.scheme, host=parts.hostname, port=port)


def _upsert_connection(
    db: Session,
    conn_id: str,
    *,
    conn_type: str,
    description: str,
    host: str | None = None,
    port: int | None = None,
    schema: str | None = None,
    login: str | None = None,
    password: str | None = None,
) -> Change:
    # The ORM model of the metadata DB's connection table; airflow.sdk.Connection (what AIR311 suggests)
    # is the task-side read-only view and cannot be stored.
    from airflow.models.connection import Connection
    from sqlalchemy import select

    wanted = {
        "conn_type": conn_type,
        "description": description,
        "host": host,
        "port": port,
        "schema": schema,
        "login": login,
    }
    existing = db.scalar(select(Connection).where(Connection.conn_id == conn_id))
    if existing is None:
        db.add(Connection(conn_id=conn_id, password=password, **wanted))
        return Change("connection", conn_id, "created", _describe_target(conn_type, host, port, login))
    changed = sorted(field for field, value in wanted.items() if getattr(existing, field) != value)
    if existing.password != password:
        changed.append("password")
    if not changed:
        return Change("connection", conn_id, "unchanged", _describe_target(conn_type, host, port, login))
    for field, value in wanted.items():
        setattr(existing, field, value)
    existing.password = password
    return Change("connection", conn_id, "updated", "changed: " + ", ".join(changed))


def _describe_target(conn_type: str, host: str | None, port: int | None, login: str | None) -> str:
    where = f"{host}:{port}" if host and port else host or ""
    who = f"login {login}" if login else ""
    return ", ".join(part for part in (conn_type, where, who) if part)


def ensure_connections(
    topology: Topology,
    *,
    rws_urls: Mapping[str, str],
    ops_login: str,
    ops_password: str,
    keystore_password: str,
    session: Session | None = None,
) -> list[Change]:
    """Create or update each DC's RWS HTTP connection and every keystore password connection."""
    unknown = sorted(set(rws_urls) - set(topology.sites))
    missing = [site for site in topology.sites if site not in rws_urls]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown site(s) {unknown}")
        if missing:
            problems.append(f"no URL for {missing}")
        raise BootstrapError(
            f"RWS URLs: {'; '.join(problems)}; give one URL per site of the topology {topology.sites}"
        )
    if not ops_password:
        raise BootstrapError("the ops password is empty: the RWS connections would not authenticate")
    targets = {site: parse_base_url(site, url) for site, url in rws_urls.items()}
    keystore_conn_ids = sorted(
        {rcs.password_conn_id for _, rcs in topology.rcs_instances if rcs.password_conn_id}
    )
    if keystore_conn_ids and not keystore_password:
        raise BootstrapError("the keystore password is empty: the keystore checks could not open them")

    changes: list[Change] = []
    with _session_scope(session) as db:
        for dc in topology.data_centers:
            target = targets[dc.site]
            changes.append(
                _upsert_connection(
                    db,
                    dc.rws_conn_id,
                    conn_type=RWS_CONN_TYPE,
                    description=f"RWS ops API of {dc.site} ({MANAGED_BY})",
                    host=target.host,
                    port=target.port,
                    schema=target.schema,
                    login=ops_login,
                    password=ops_password,
                )
            )
        for conn_id in keystore_conn_ids:
            changes.append(
                _upsert_connection(
                    db,
                    conn_id,
                    conn_type=KEYSTORE_CONN_TYPE,
                    description=f"Password of the RCS keystores ({MANAGED_BY})",
                    password=keystore_password,
                )
            )
        for change in changes:
            _log_change(change)
    return changes


# --- CLI ---------------------------------------------------------------------------------------------


def _rws_mapping(values: list[str]) -> dict[str, str]:
    urls: dict[str, str] = {}
    for value in values:
        site, sep, url = value.partition("=")
        if not sep or not site or not url:
            raise BootstrapError(f"--rws {value!r}: write SITE=URL, e.g. --rws DC1=http://127.0.0.1:18801")
        if site in urls:
            raise BootstrapError(f"--rws {site} is given twice")
        urls[site] = url
    return urls


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m include.gir_ops.bootstrap",
        description="Create the Airflow pools (and, for the simulator, connections) the gir-ops DAGs need.",
    )
    parser.add_argument("--topology", help="topology file (default: $GIR_TOPOLOGY or the bundled one)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("pools", help="create the pools of the topology (for real deployments)")
    demo = commands.add_parser(
        "demo",
        help=f"pools + connections for the simulator; passwords from ${OPS_PASSWORD_ENV} and "
        f"${KEYSTORE_PASSWORD_ENV}",
    )
    demo.add_argument("--rws", action="append", default=[], metavar="SITE=URL", help="repeat per DC")
    demo.add_argument("--login", default=DEMO_OPS_LOGIN, help="RWS ops user (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        topology = load_topology(args.topology)
        urls: dict[str, str] = {}
        ops_password = keystore_password = ""
        if args.command == "demo":
            urls = _rws_mapping(args.rws)
            ops_password = os.environ.get(OPS_PASSWORD_ENV, "")
            keystore_password = os.environ.get(KEYSTORE_PASSWORD_ENV, "")
            unset = [
                name
                for name, value in (
                    (OPS_PASSWORD_ENV, ops_password),
                    (KEYSTORE_PASSWORD_ENV, keystore_password),
                )
                if not value
            ]
            if unset:
                print(f"set {' and '.join(unset)} in the environment first", file=sys.stderr)
                return 2
        changes = ensure_pools(topology)
        if args.command == "demo":
            changes += ensure_connections(
                topology,
                rws_urls=urls,
                ops_login=args.login,
                ops_password=ops_password,
                keystore_password=keystore_password,
            )
    except (TopologyError, BootstrapError) as exc:
        print(exc, file=sys.stderr)
        return 2
    for change in changes:
        print(change)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
