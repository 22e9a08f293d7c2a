"""Put what the gir-ops DAGs need into an Airflow metadata DB: pools and connections. Safe to re-run.

A task in a pool that does not exist is never scheduled, so the pools must exist before the first run;
the DAGs cannot create them at parse time. Pools come from the topology (one per re-indexing DC, plus
``gir_rws_switch`` so two failover runs never POST a switch at the same time). An existing pool keeps its
size: an operator may have resized it on purpose.

Connections carry credentials, so in a real deployment an operator creates them (UI, CLI or a secrets
backend). ``demo`` creates them for the simulator that ``make run`` starts. Passwords come from the
environment, never from the command line (visible in the process list), and are never printed.

The DAGs check their pools through Airflow's REST API (``include.gir_ops.pools``), as a service user that
may read pools, through the connection ``gir_airflow_api``. ``airflow-api`` stores that connection;
``airflow-api-user`` creates its user in the auth manager (SimpleAuthManager: its passwords file; FAB:
``airflow users create --role User``, the password on stdin).

    python -m include.gir_ops.bootstrap pools [--topology FILE]
    python -m include.gir_ops.bootstrap demo --rws DC1=http://127.0.0.1:18801 --rws DC2=... [--topology FILE]
        [--airflow-api http://127.0.0.1:8080]
    python -m include.gir_ops.bootstrap airflow-api --url https://airflow.example.com [--login USER]
    python -m include.gir_ops.bootstrap airflow-api-user
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from include.gir_ops.airflow_api import (
    AIRFLOW_API_CONN_ID,
    FAB_ROLE,
    SERVICE_USER,
    SIMPLE_AUTH_MANAGER_ROLE,
)
from include.gir_ops.shared import (
    AIRFLOW_API_PASSWORD_ENV,
    KEYSTORE_PASSWORD_ENV,
    OPS_PASSWORD_ENV,
    RWS_SWITCH_POOL,
    RWS_SWITCH_POOL_SLOTS,
)
from include.gir_ops.topology import Topology, TopologyError, load_topology

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

RWS_CONN_TYPE = "http"
KEYSTORE_CONN_TYPE = "generic"
DEMO_OPS_LOGIN = "ops"
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
    # Every DC has a re-index DAG (manual-only where reindex.enabled is false), so every DC has its pool.
    for dc in topology.data_centers:
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


# --- the Airflow REST API connection and its service user -------------------------------------------


def parse_airflow_api_url(url: str) -> HttpTarget:
    """The API server's base URL as an HTTP connection stores it; a path prefix (behind a proxy) is kept."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BootstrapError(f"Airflow API URL {url!r}: write it as http(s)://host[:port][/prefix]")
    if parts.username or parts.password:
        raise BootstrapError(
            "Airflow API URL: remove the credentials from the URL; the login and password are stored in "
            "the connection's own fields"
        )
    if parts.query or parts.fragment or parts.path.rstrip("/").endswith(("/api/v2", "/auth/token")):
        raise BootstrapError(
            f"Airflow API URL {url!r}: give the API server's base URL (where the UI is served), without "
            "/api/v2 or /auth/token"
        )
    try:
        port = parts.port
    except ValueError:
        raise BootstrapError(f"Airflow API URL {url!r}: the port is not a number 1-65535") from None
    prefix = parts.path.rstrip("/")
    if prefix:
        # HttpHook uses a host that contains "://" as the whole base URL, and appends the port after it.
        netloc = f"{parts.hostname}:{port}" if port else parts.hostname
        return HttpTarget(schema=parts.scheme, host=f"{parts.scheme}://{netloc}{prefix}", port=None)
    return HttpTarget(schema=parts.scheme, host=parts.hostname, port=port)


def ensure_airflow_api_connection(
    url: str,
    *,
    login: str = SERVICE_USER,
    password: str,
    conn_id: str = AIRFLOW_API_CONN_ID,
    session: Session | None = None,
) -> Change:
    """Create or update the HTTP connection the DAGs read pools, runs and approvals through (REST API)."""
    if not password:
        raise BootstrapError(
            f"the Airflow API password is empty: set {AIRFLOW_API_PASSWORD_ENV} to the password of user "
            f"{login!r}"
        )
    target = parse_airflow_api_url(url)
    with _session_scope(session) as db:
        change = _upsert_connection(
            db,
            conn_id,
            conn_type=RWS_CONN_TYPE,
            description=f"Airflow REST API, read-only: pools, runs, approvals ({MANAGED_BY})",
            host=target.host,
            port=target.port,
            schema=target.schema,
            login=login,
            password=password,
        )
    _log_change(change)
    return change


def ensure_simple_auth_password(passwords_file: Path, username: str, password: str) -> Change:
    """Give a SimpleAuthManager user a known password in its passwords file (kept at mode 0600).

    SimpleAuthManager generates a random password only for users missing from that file, so a password
    written here before the API server starts is the one it accepts. Other users' entries are kept.
    """
    if not password:
        raise BootstrapError(f"the password for SimpleAuthManager user {username!r} is empty")
    current: dict[str, str] = {}
    if passwords_file.exists():
        text = passwords_file.read_text(encoding="utf-8").strip() or "{}"
        try:
            current = json.loads(text)
        except json.JSONDecodeError:
            raise BootstrapError(
                f"{passwords_file} is not valid JSON; fix or delete it (SimpleAuthManager then generates "
                "new passwords for its users)"
            ) from None
    action = (
        "unchanged" if current.get(username) == password else "updated" if username in current else "created"
    )
    if action != "unchanged":
        current[username] = password
        passwords_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = passwords_file.with_name(passwords_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(json.dumps(current) + "\n")
        os.replace(tmp, passwords_file)
    os.chmod(passwords_file, 0o600)
    change = Change("user", username, action, f"SimpleAuthManager password in {passwords_file}")
    _log_change(change)
    return change


def _auth_manager() -> str:
    from airflow.configuration import conf

    return conf.get("core", "auth_manager", fallback="") or ""


def ensure_airflow_api_user(conn_id: str = AIRFLOW_API_CONN_ID) -> Change:
    """Create the user of connection ``conn_id`` in the configured auth manager, with read access to pools.

    SimpleAuthManager: the user must be listed in ``[core] simple_auth_manager_users`` (with role user or
    higher); its password is written to the passwords file, so run this before the API server starts (or
    restart it). FAB: ``airflow users create --role User``, the password on stdin (never on a command
    line); an existing user is left as it is. Other auth managers: create the user there yourself.
    """
    from airflow.models.connection import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        raise BootstrapError(
            f"connection {conn_id!r} does not exist: create it first (`python -m include.gir_ops.bootstrap "
            f"airflow-api --url ...`, or AIRFLOW_CONN_{conn_id.upper()})"
        ) from None
    login, password = connection.login or "", connection.password or ""
    if not login or not password:
        raise BootstrapError(f"connection {conn_id!r} needs a login and a password for the service user")
    manager = _auth_manager()
    if manager.endswith("SimpleAuthManager"):
        from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

        roles = {user.username: (user.role or "") for user in SimpleAuthManager.get_users()}
        if login not in roles:
            raise BootstrapError(
                f"SimpleAuthManager has no user {login!r}: add `{login}:{SIMPLE_AUTH_MANAGER_ROLE}` to "
                "[core] simple_auth_manager_users (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS)"
            )
        if not roles[login]:
            raise BootstrapError(
                f"SimpleAuthManager user {login!r} has no role: give it {SIMPLE_AUTH_MANAGER_ROLE}"
            )
        return ensure_simple_auth_password(
            Path(SimpleAuthManager.get_generated_password_file()), login, password
        )
    if manager.endswith("FabAuthManager"):
        return _create_fab_user(login, password)
    raise BootstrapError(
        f"auth manager {manager!r}: create user {login!r} there yourself, with read access to pools"
    )


def _create_fab_user(login: str, password: str) -> Change:
    airflow = Path(sys.executable).with_name("airflow")
    command = [
        str(airflow) if airflow.exists() else "airflow",
        "users",
        "create",
        "--role",
        FAB_ROLE,
        "--username",
        login,
        "--firstname",
        "gir-ops",
        "--lastname",
        "pool check",
        "--email",
        f"{login}@gir-ops.invalid",
    ]
    # Without --password the FAB CLI asks twice (getpass). In a new session there is no controlling
    # terminal, so getpass reads the answers from stdin instead of prompting whoever runs this.
    done = subprocess.run(  # noqa: S603 - a fixed command; the password goes on stdin
        command,
        input=f"{password}\n{password}\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        start_new_session=True,
    )
    output = (done.stdout + done.stderr).replace(password, "***")
    if done.returncode != 0:
        raise BootstrapError(
            f"`airflow users create` for {login!r} failed (exit {done.returncode}): {output[-2000:]}"
        )
    action = "kept" if "already exist" in output else "created"
    change = Change(
        "user", login, action, f"FAB role {FAB_ROLE}" if action == "created" else "existing FAB user"
    )
    log.info("%s", change)
    return change


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
    demo.add_argument(
        "--airflow-api",
        metavar="URL",
        help=f"also store connection {AIRFLOW_API_CONN_ID} to this API server (user {SERVICE_USER}, "
        f"password from ${AIRFLOW_API_PASSWORD_ENV})",
    )
    api = commands.add_parser(
        "airflow-api",
        help=f"connection {AIRFLOW_API_CONN_ID} (the DAGs' pool check); password from "
        f"${AIRFLOW_API_PASSWORD_ENV}",
    )
    api.add_argument(
        "--url", required=True, help="the API server's base URL, e.g. https://airflow.example.com"
    )
    api.add_argument(
        "--login", default=SERVICE_USER, help="a user that may read pools (default: %(default)s)"
    )
    commands.add_parser(
        "airflow-api-user",
        help=f"create the user of connection {AIRFLOW_API_CONN_ID} in the auth manager "
        "(SimpleAuthManager, FAB)",
    )
    return parser


def _airflow_api_password() -> str:
    password = os.environ.get(AIRFLOW_API_PASSWORD_ENV, "")
    if not password:
        raise BootstrapError(
            f"set {AIRFLOW_API_PASSWORD_ENV} in the environment first (the service user's password)"
        )
    return password


def _airflow_api_main(args: argparse.Namespace) -> int:
    try:
        if args.command == "airflow-api":
            change = ensure_airflow_api_connection(
                args.url, login=args.login, password=_airflow_api_password()
            )
        else:
            change = ensure_airflow_api_user()
    except BootstrapError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(change)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("airflow-api", "airflow-api-user"):
        return _airflow_api_main(args)
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
        api_password = _airflow_api_password() if args.command == "demo" and args.airflow_api else ""
        changes = ensure_pools(topology)
        if args.command == "demo":
            changes += ensure_connections(
                topology,
                rws_urls=urls,
                ops_login=args.login,
                ops_password=ops_password,
                keystore_password=keystore_password,
            )
            if args.airflow_api:
                changes.append(ensure_airflow_api_connection(args.airflow_api, password=api_password))
    except (TopologyError, BootstrapError) as exc:
        print(exc, file=sys.stderr)
        return 2
    for change in changes:
        print(change)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
