"""The doctor's checks: does this deployment actually work? Each returns report rows, never raises.

Run in a worker (DAG ``gir_doctor``, so they see the workers' mounts and network) or from a shell with
the Airflow environment (``python -m include.gir_ops.doctor``). The same functions, the same rows.
Reads only: a probe file in the audit log folder is the one thing written (and deleted again).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from include.gir_ops.doctor.spec import PATH_TIMEOUT_SECONDS, Row, Status
from include.gir_ops.shared import local_path, missing_path_detail
from include.gir_ops.topology import (
    DEMO_ENV_VAR,
    TOPOLOGY_ENV_VAR,
    Topology,
    TopologyError,
    demo_mode,
    is_bundled_topology,
    load_topology,
    topology_path,
)

if TYPE_CHECKING:
    from include.gir_ops.airflow_api import AirflowApiClient
    from include.gir_ops.rws import RwsClient

log = logging.getLogger(__name__)

FAB_USERS_PATH = "/auth/fab/v1/users"
HEALTH_PATH = "/api/v2/monitor/health"
# File systems that several machines can mount and share (the audit log must be one place for all workers).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "9p",
        "virtiofs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.juicefs",
        "efs",
    }
)
NOTIFICATIONS_MODULE = "include.gir_ops.notifications"


def _safely(check: str, fix: str, func: Callable[[], list[Row]]) -> list[Row]:
    """A check that crashes is a FAIL row naming the crash, never a doctor that stops half-way."""
    try:
        return func()
    except Exception as exc:
        log.exception("doctor check %s crashed", check)
        return [Row(check, Status.FAIL, f"the check itself failed: {type(exc).__name__}: {exc}", fix)]


# --- the topology in use -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopologyInUse:
    path: Path | None
    topology: Topology | None
    row: Row


def topology_in_use(path: str | Path | None = None) -> TopologyInUse:
    """Which topology file the components load (path and short hash); refuses the demo's outside the demo."""
    check = "topology"
    try:
        resolved = Path(path).expanduser().resolve() if path else topology_path()
        text = resolved.read_text(encoding="utf-8")
        topology = load_topology(resolved)
    except (TopologyError, OSError) as exc:
        return TopologyInUse(
            None,
            None,
            Row(
                check,
                Status.FAIL,
                f"no usable topology: {exc}",
                f"set {TOPOLOGY_ENV_VAR} to your topology file for every Airflow component",
            ),
        )
    short = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    where = f"{resolved} (sha256 {short}), primary {topology.primary_site}, sites {', '.join(topology.sites)}"
    if is_bundled_topology(resolved, text):
        if not demo_mode():
            return TopologyInUse(
                resolved,
                topology,
                Row(
                    check,
                    Status.FAIL,
                    f"the bundled demo topology is in use outside the demo: {where}; it describes the "
                    "simulator's data centers, not yours",
                    f"copy include/config/topology.yaml, describe your data centers, and set "
                    f"{TOPOLOGY_ENV_VAR} to the copy for every component ({DEMO_ENV_VAR}=1 is for the demo "
                    "stack only)",
                ),
            )
        where += f" [the demo topology, {DEMO_ENV_VAR}=1]"
    return TopologyInUse(resolved, topology, Row(check, Status.OK, where))


# --- RWS: every DC answers, and they agree on one environment ---------------------------------------------


def _default_rws_client(site: str, conn_id: str) -> RwsClient:
    from include.gir_ops.rws import RwsClient

    return RwsClient(site, conn_id, timeout=(5.0, 20.0))


def _connection_login(conn_id: str) -> str | None:
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).login


def rws_rows(
    topology: Topology,
    *,
    client_factory: Callable[[str, str], Any] = _default_rws_client,
    login_of: Callable[[str], str | None] = _connection_login,
) -> list[Row]:
    """One row per DC (``GET genesys-environments`` as the ops user) and one row for the environment ID."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    from include.gir_ops.rws import RetryPolicy, RwsAuthError, RwsError

    rows: list[Row] = []
    listed: dict[str, list[str]] = {}
    once = RetryPolicy(attempts=1)
    for dc in topology.data_centers:
        check = f"RWS {dc.site}"
        conn_fix = (
            f"create HTTP connection {dc.rws_conn_id!r} (host and port of {dc.site}'s RWS, login and "
            'password of the RWS ops user; JSON form with "schema": "https" for TLS)'
        )
        try:
            login = login_of(dc.rws_conn_id)
        except AirflowNotFoundException:
            rows.append(Row(check, Status.FAIL, f"connection {dc.rws_conn_id!r} does not exist", conn_fix))
            continue
        if not login:
            rows.append(Row(check, Status.FAIL, f"connection {dc.rws_conn_id!r} has no login", conn_fix))
            continue
        try:
            with client_factory(dc.site, dc.rws_conn_id) as client:
                _, ids = client.genesys_environments(policy=once)
        except RwsAuthError as exc:
            rows.append(
                Row(check, Status.FAIL, str(exc), f"fix the login/password of connection {dc.rws_conn_id!r}")
            )
            continue
        except RwsError as exc:
            rows.append(
                Row(
                    check,
                    Status.FAIL,
                    f"GET genesys-environments through connection {dc.rws_conn_id!r} failed: {exc}",
                    f"check that {dc.site}'s RWS is up and reachable from this worker, and the host/port of "
                    f"connection {dc.rws_conn_id!r}",
                )
            )
            continue
        listed[dc.site] = ids
        rows.append(
            Row(
                check,
                Status.OK,
                f"answers GET genesys-environments as {login!r} (connection {dc.rws_conn_id}): "
                f"{', '.join(ids) or 'no environment'}",
            )
        )
    rows.append(_environment_row(topology, listed))
    return rows


def _environment_row(topology: Topology, listed: dict[str, list[str]]) -> Row:
    check = "genesys environment"
    fix = (
        "every DC's RWS must list exactly one genesys-environment, the same one (RWS in both DCs connect "
        "to the same Configuration Server); check each connection points at the right RWS"
    )
    if not listed:
        return Row(check, Status.FAIL, "no RWS answered, so no environment ID could be compared", fix)
    not_one = {site: ids for site, ids in listed.items() if len(ids) != 1}
    if not_one:
        detail = "; ".join(
            f"{site} lists {len(ids)}: {', '.join(ids) or '-'}" for site, ids in not_one.items()
        )
        return Row(check, Status.FAIL, f"not exactly one environment per DC: {detail}", fix)
    ids = {site: found[0] for site, found in listed.items()}
    if len(set(ids.values())) > 1:
        detail = ", ".join(f"{site}: {env}" for site, env in ids.items())
        return Row(check, Status.FAIL, f"the DCs disagree on the environment ID ({detail})", fix)
    silent = [site for site in topology.sites if site not in ids]
    tail = f" (not compared, no answer: {', '.join(silent)})" if silent else ""
    status = Status.FAIL if silent else Status.OK
    return Row(
        check, status, f"all answering DCs agree: {next(iter(ids.values()))}{tail}", fix if silent else ""
    )


# --- the Airflow REST API: pools, approvers (FAB), the triggerer -------------------------------------------


def _default_api_client() -> AirflowApiClient:
    from include.gir_ops.airflow_api import AirflowApiClient

    return AirflowApiClient()


def api_row(client: Any) -> Row:
    """The connection the DAGs read pools, runs and approvals through must work (check_pools needs it)."""
    from include.gir_ops.airflow_api import AIRFLOW_API_CONN_ID, AirflowApiError, connection_help

    check = "Airflow API connection"
    try:
        client.get(HEALTH_PATH, what="the health of Airflow", reads="the health endpoint")
    except AirflowApiError as exc:
        return Row(check, Status.FAIL, str(exc), connection_help(AIRFLOW_API_CONN_ID))
    return Row(check, Status.OK, f"connection {AIRFLOW_API_CONN_ID} reaches the API server and gets a token")


def pool_rows(topology: Topology, client: Any) -> list[Row]:
    """Every pool the DAGs run in exists, with the slots the topology intends."""
    from include.gir_ops.airflow_api import POOLS_PATH, AirflowApiError
    from include.gir_ops.bootstrap import pool_specs

    rows = []
    for spec in pool_specs(topology):
        check = f"pool {spec.name}"
        try:
            body = client.get(
                f"{POOLS_PATH}/{quote(spec.name, safe='')}", what=f"pool {spec.name}", reads="pools"
            )
        except AirflowApiError as exc:
            rows.append(
                Row(check, Status.FAIL, f"cannot read it: {exc}", "see the Airflow API connection row")
            )
            continue
        if body is None:
            rows.append(
                Row(
                    check,
                    Status.FAIL,
                    "does not exist: tasks in it are never scheduled (the run stays running, no error)",
                    "python -m include.gir_ops.bootstrap pools (with GIR_TOPOLOGY set)",
                )
            )
        elif body.get("slots") != spec.slots:
            rows.append(
                Row(
                    check,
                    Status.FAIL,
                    f"has {body.get('slots')} slot(s), the topology intends {spec.slots}",
                    f"airflow pools set {spec.name} {spec.slots} '{spec.description}' (or change the "
                    "topology if the new size is intended; the switch pool must stay at 1)",
                )
            )
        else:
            rows.append(Row(check, Status.OK, f"exists with {spec.slots} slot(s)"))
    return rows


def triggerer_row(client: Any) -> Row:
    """A triggerer must run: the approval wait, the backup wait and the switch verification defer to it."""
    from include.gir_ops.airflow_api import AirflowApiError

    check = "triggerer"
    fix = "start a triggerer (`airflow triggerer`) where the workers' mounts and network are reachable"
    try:
        health = client.get(HEALTH_PATH, what="the health of Airflow", reads="the health endpoint") or {}
    except AirflowApiError as exc:
        return Row(check, Status.FAIL, f"cannot read Airflow's health: {exc}", fix)
    triggerer = health.get("triggerer") or {}
    status = triggerer.get("status")
    heartbeat = triggerer.get("latest_triggerer_heartbeat")
    if status == "healthy":
        return Row(check, Status.OK, f"running (latest heartbeat {heartbeat})")
    return Row(
        check,
        Status.FAIL,
        f"no healthy triggerer (status {status!r}, latest heartbeat {heartbeat}): the failover's approval "
        "wait and switch verification and the backup wait would never finish",
        fix,
    )


def _auth_manager() -> str:
    from airflow.configuration import conf

    return conf.get("core", "auth_manager", fallback="") or ""


def _simple_auth_users() -> dict[str, str]:
    """SimpleAuthManager's users and roles, as [core] simple_auth_manager_users lists them."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.configuration import conf

    if conf.getboolean("core", "simple_auth_manager_all_admins", fallback=False):
        raise PermissionError("simple_auth_manager_all_admins is on")
    return {user.username: user.role or "" for user in SimpleAuthManager.get_users()}


def approver_rows(  # noqa: PLR0912 - one branch per auth manager and per answer
    topology: Topology,
    client: Any,
    *,
    auth_manager: Callable[[], str] = _auth_manager,
    simple_users: Callable[[], dict[str, str]] = _simple_auth_users,
) -> list[Row]:
    """Every ``failover.approvers`` id is a user the auth manager knows, and at least two exist."""
    if topology.failover is None:
        return [Row("failover approvers", Status.NOT_CONFIGURED, "the topology has no failover section")]
    from include.gir_ops.airflow_api import AirflowApiError

    manager = auth_manager()
    ids = list(dict.fromkeys(a.id for a in topology.failover.approvers))
    rows: list[Row] = []
    known: list[str] = []
    if manager.endswith("SimpleAuthManager"):
        try:
            users = simple_users()
        except PermissionError:
            return [
                Row(
                    "failover approvers",
                    Status.FAIL,
                    "SimpleAuthManager runs with simple_auth_manager_all_admins: every request is the same "
                    "anonymous admin, so nobody can be told apart and the two-person rule cannot hold",
                    "turn [core] simple_auth_manager_all_admins off and list the users in "
                    "[core] simple_auth_manager_users",
                )
            ]
        for user_id in ids:
            if user_id in users:
                known.append(user_id)
                rows.append(
                    Row(
                        f"approver {user_id}",
                        Status.OK,
                        f"SimpleAuthManager user, role {users[user_id] or '-'}",
                    )
                )
            else:
                rows.append(
                    Row(
                        f"approver {user_id}",
                        Status.FAIL,
                        "not a user of SimpleAuthManager: nobody can answer the approval as this id",
                        f"add `{user_id}:user` (or another role) to [core] simple_auth_manager_users, or fix "
                        "the id in failover.approvers",
                    )
                )
    elif manager.endswith("FabAuthManager"):
        for user_id in ids:
            check = f"approver {user_id}"
            try:
                body = client.get(
                    f"{FAB_USERS_PATH}/{quote(user_id, safe='')}", what=f"FAB user {user_id}", reads="users"
                )
            except AirflowApiError as exc:
                rows.append(
                    Row(
                        check,
                        Status.CANNOT_CHECK,
                        f"FAB users could not be read: {exc}",
                        "give the gir_airflow_api user read access to users, or check the ids by hand in "
                        "Security > List Users",
                    )
                )
                continue
            if body is None:
                rows.append(
                    Row(
                        check,
                        Status.FAIL,
                        "not a FAB user: nobody can answer the approval as this id",
                        f"create it (airflow users create --username {user_id} ...) or fix "
                        "failover.approvers",
                    )
                )
            else:
                known.append(user_id)
                roles = ", ".join(str(r.get("name")) for r in body.get("roles") or [] if isinstance(r, dict))
                rows.append(Row(check, Status.OK, f"FAB user, roles {roles or '-'}"))
    else:
        return [
            Row(
                "failover approvers",
                Status.CANNOT_CHECK,
                f"auth manager {manager or '(unset)'}: the doctor can list users of SimpleAuthManager and "
                f"FAB only; approvers configured: {', '.join(ids)}",
                "check by hand that each id is a user id of your auth manager, and that at least two exist",
            )
        ]
    unchecked = any(row.status is Status.CANNOT_CHECK for row in rows)
    if len(known) >= 2:
        rows.append(
            Row("approvers (two-person rule)", Status.OK, f"{len(known)} known approvers: {', '.join(known)}")
        )
    elif not unchecked:
        rows.append(
            Row(
                "approvers (two-person rule)",
                Status.FAIL,
                f"{len(known)} known approver(s) ({', '.join(known) or 'none'}): an approver can never "
                "approve their own run, so with fewer than two nobody can approve when that one triggers",
                "list at least two users in failover.approvers",
            )
        )
    return rows


# --- the audit log ----------------------------------------------------------------------------------------


def _executor() -> str:
    from airflow.configuration import conf

    return conf.get("core", "executor", fallback="") or ""


def worker_count(executor: str | None = None) -> tuple[int | None, str]:
    """How many workers may run tasks (None: unknown), and how that was found out."""
    executor = _executor() if executor is None else executor
    names = [name.strip().rsplit(".", 1)[-1] for name in executor.split(",") if name.strip()]
    if names and all(name in ("LocalExecutor", "SequentialExecutor") for name in names):
        return 1, f"{executor}: tasks run on this one machine"
    if "KubernetesExecutor" in names:
        return None, f"{executor}: every task runs in its own pod"
    if "CeleryExecutor" in names:
        try:
            from airflow.providers.celery.executors.celery_executor_utils import app

            replies = app.control.ping(timeout=3.0) or []
        except Exception as exc:
            return None, f"{executor}: the Celery workers could not be counted ({type(exc).__name__})"
        return len(replies), f"{executor}: {len(replies)} Celery worker(s) answered a ping"
    return None, f"executor {executor or '(unset)'}"


def filesystem_type(path: str, mounts: str | None = None) -> str | None:
    """The file system type of the mount holding ``path`` (from /proc/mounts), None when unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8")
        except OSError:
            return None
    best, kind = "", None
    real = os.path.realpath(path)
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def audit_log_row(  # noqa: PLR0911 - one return per situation the operator must read
    topology: Topology,
    *,
    workers: Callable[[], tuple[int | None, str]] = worker_count,
    fs_type: Callable[[str], str | None] = filesystem_type,
) -> Row:
    """The audit log folder is writable here, and one shared place when more than one worker exists."""
    check = "audit log"
    if topology.failover is None:
        return Row(check, Status.NOT_CONFIGURED, "the topology has no failover section")
    import uuid

    from airflow.sdk import ObjectStoragePath

    url = topology.failover.audit_log
    fix = f"make {url} writable by the Airflow user on every worker (failover.audit_log)"
    root = ObjectStoragePath(url)
    probe = root / f".gir-doctor-{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_text("gir_doctor probe\n")
        read_back = probe.read_text()
        probe.unlink()
    except FileNotFoundError:
        return Row(check, Status.FAIL, f"not writable: {missing_path_detail(url, 'folder')}", fix)
    except OSError as exc:
        return Row(check, Status.FAIL, f"not writable: {url}: {exc.strerror or exc}", fix)
    if read_back != "gir_doctor probe\n":
        return Row(check, Status.FAIL, f"{url}: a probe file read back differently", fix)
    count, how = workers()
    local = local_path(url)
    if local is None:
        return Row(check, Status.OK, f"writable: {url} (an object store, shared by every worker); {how}")
    kind = fs_type(local) or "unknown"
    shared = kind in NETWORK_FILESYSTEMS
    if count == 1 or shared:
        where = f"shared file system {kind}" if shared else f"file system {kind}"
        return Row(check, Status.OK, f"writable: {local} on {where}; {how}")
    problem = (
        f"{local} is on {kind}, local to each machine, and {how}: each worker would keep its own audit "
        "records, and an audit written on one worker would be missing on the others"
    )
    shared_fix = "put failover.audit_log on storage every worker shares (an NFS/SMB mount, or s3://<conn_id>@bucket/...)"
    if count is None:
        return Row(
            check,
            Status.CANNOT_CHECK,
            f"writable, but the number of workers is unknown: {problem}",
            shared_fix,
        )
    return Row(check, Status.FAIL, problem, shared_fix)


# --- paths that must be readable from a worker and from the triggerer ------------------------------------


def checked_paths(topology: Topology) -> list[dict[str, str]]:
    """What the doctor reads: the SpeechMiner source and destination, every keystore (label, url, kind)."""
    paths: list[dict[str, str]] = []
    if topology.shipping is not None:
        source = topology.site(topology.shipping.from_site).speechminer.index_backup
        if source:
            paths.append(
                {
                    "label": f"SpeechMiner source ({topology.shipping.from_site})",
                    "url": source,
                    "kind": "folder",
                }
            )
        paths.append(
            {
                "label": f"SpeechMiner destination ({topology.shipping.to_site})",
                "url": topology.shipping.destination,
                "kind": "destination",
            }
        )
    for dc, rcs in topology.rcs_instances:
        paths.append({"label": f"keystore {rcs.name} ({dc.site})", "url": rcs.keystore, "kind": "file"})
    return paths


def read_path(url: str, kind: str) -> tuple[Status, str]:  # noqa: PLR0911 - one return per finding
    """Can this process read ``url``? A folder is listed, a file's first bytes are read. Never raises."""
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(url)
    what = "file" if kind == "file" else "folder"
    try:
        if kind == "file":
            with path.open("rb") as handle:
                handle.read(16)
            return Status.OK, f"readable: {url}"
        if not path.exists():
            if kind == "destination" and path.parent.exists():
                return (
                    Status.OK,
                    f"{url} does not exist yet (its folder does): the first shipping run creates it",
                )
            return Status.FAIL, missing_path_detail(url, what)
        if not path.is_dir():
            return Status.FAIL, f"not a folder: {url}"
        entries = sum(1 for _ in path.iterdir())
        return Status.OK, f"readable: {url} ({entries} entries)"
    except FileNotFoundError:
        return Status.FAIL, missing_path_detail(url, what)
    except PermissionError:
        return Status.FAIL, f"permission denied: {url}"
    except NotADirectoryError:
        return Status.FAIL, f"not a folder: {url}"
    except IsADirectoryError:
        return Status.FAIL, f"a folder, not a file: {url}"
    except OSError as exc:
        return Status.FAIL, f"cannot be read: {url}: {exc.strerror or exc}"
    except Exception as exc:  # a remote store's own errors
        return Status.FAIL, f"cannot be read: {url}: {type(exc).__name__}: {str(exc)[:200]}"


def path_rows(
    paths: Iterable[dict[str, str]],
    where: str,
    *,
    reader: Callable[[str, str], tuple[Status, str]] = read_path,
    timeout: float = PATH_TIMEOUT_SECONDS,
) -> list[Row]:
    """One row per path, read here (``where``: "worker" or "triggerer"), each read bounded by ``timeout``."""
    import concurrent.futures

    rows = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="gir-doctor-read")
    try:
        futures = [(item, pool.submit(reader, item["url"], item["kind"])) for item in paths]
        for item, future in futures:
            check = f"{item['label']} from the {where}"
            fix = (
                f"mount the share on every {where} (the same path as in the topology) and let the Airflow "
                "user read it, or fix the path in the topology"
            )
            try:
                status, result = future.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                status, result = Status.FAIL, f"no answer within {timeout:g} s (a hung mount?): {item['url']}"
            rows.append(Row(check, status, result, fix if status is Status.FAIL else ""))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return rows


# --- notifications ----------------------------------------------------------------------------------------


def notification_rows(topology: Topology) -> list[Row]:
    """Notification channels accept a test message: the notifications feature's own ``doctor_rows``.

    ``include.gir_ops.notifications.doctor_rows(topology) -> list[dict]`` (check, status, result, fix) sends
    a real test message through each configured channel.
    """
    import importlib

    try:
        module = importlib.import_module(NOTIFICATIONS_MODULE)
    except ModuleNotFoundError:
        module = None
    hook = getattr(module, "doctor_rows", None)
    if hook is None:
        return [
            Row(
                "notifications",
                Status.NOT_CONFIGURED,
                "no notification channel is configured in this project: failures show in the Airflow UI "
                "and in Airflow's own alerting only",
            )
        ]
    return _safely(
        "notifications", "see the notifications docs", lambda: [Row.from_dict(r) for r in hook(topology)]
    )


# --- all of them ----------------------------------------------------------------------------------------


def worker_rows(
    topology_file: str | Path | None = None,
    *,
    api_client_factory: Callable[[], Any] = _default_api_client,
    where: str = "worker",
) -> list[Row]:
    """Every check that runs where this process runs (a worker, or a shell), in report order."""
    found = topology_in_use(topology_file)
    rows = [found.row]
    topology = found.topology
    if topology is None:
        return rows
    rows += _safely("RWS", "", lambda: rws_rows(topology))
    client = api_client_factory()
    try:
        api = api_row(client)
        rows.append(api)
        if api.status is Status.OK:
            rows += _safely("pools", "", lambda: pool_rows(topology, client))
            rows += _safely("failover approvers", "", lambda: approver_rows(topology, client))
            rows.append(_safely("triggerer", "", lambda: [triggerer_row(client)])[0])
        else:
            not_checked = "not checked: the Airflow API connection does not work (see its row)"
            rows += [Row(name, Status.FAIL, not_checked) for name in ("pools", "triggerer")]
            rows += _safely("failover approvers", "", lambda: approver_rows(topology, client))
    finally:
        client.close()
    rows += _safely("audit log", "", lambda: [audit_log_row(topology)])
    rows += path_rows(checked_paths(topology), where)
    rows += notification_rows(topology)
    return rows
