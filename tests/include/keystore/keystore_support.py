"""What the keystore check's unit tests share: a topology of four RCS instances, passwords, one run.

Real PKCS12 files come from the simulator's generator (``include.gir_sim.demo_data``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowNotFoundException

from include.gir_ops.keystore.check import check_replication
from include.gir_ops.keystore.model import InstanceResult
from include.gir_ops.keystore.report import KeystoreReport
from include.gir_ops.topology import Topology, parse_topology

REPO_ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "Rcs-Keystore-Pässwort-7f3a"
CONN = "gir_rcs_keystore"
INSTANCES = ("rcs-dc1-a", "rcs-dc1-b", "rcs-dc2-a", "rcs-dc3-a")
RESCUE_AFTER_SECONDS = 60.0


def topology_for(root: Path, **options: Any) -> Topology:
    """Four RCS instances in three DCs (two in DC1), keystores under ``root``; options: ``topology_yaml``."""
    return parse_topology(topology_yaml(root, **options), "test-topology")


def topology_yaml(
    root: Path,
    *,
    reference: str | None = None,
    extra_rcs: str = "",
    expiry_warning_days: int = 30,
    read_timeout_seconds: float | None = None,
) -> str:
    """The topology's YAML text, with the reference, extra RCS entries, warning window and read timeout."""
    reference_line = f"  reference: {reference}\n" if reference else ""
    if read_timeout_seconds is not None:
        reference_line += f"  read_timeout_seconds: {read_timeout_seconds}\n"
    return f"""
primary_site: DC1
data_centers:
  - site: DC1
    rcs:
      - {{name: rcs-dc1-a, keystore: "file://{root}/dc1/rcs-a/keystore.p12", password_conn_id: {CONN}}}
      - {{name: rcs-dc1-b, keystore: "file://{root}/dc1/rcs-b/keystore.p12", password_conn_id: {CONN}}}
  - site: DC2
    timezone: Europe/Paris
    rcs:
      - {{name: rcs-dc2-a, keystore: "file://{root}/dc2/rcs-a/keystore.p12", password_conn_id: {CONN}}}
  - site: DC3
    timezone: Asia/Kolkata
    rcs:
      - {{name: rcs-dc3-a, keystore: "file://{root}/dc3/rcs-a/keystore.p12", password_conn_id: {CONN}}}
{extra_rcs}
keystore_check:
  expiry_warning_days: {expiry_warning_days}
{reference_line}"""


def passwords(mapping: dict[str, str] | None = None) -> Callable[[str], str | None]:
    """A password lookup like ``Connection.get``: an unknown conn_id is not defined."""
    known = mapping if mapping is not None else {CONN: PASSWORD}

    def get(conn_id: str) -> str | None:
        if conn_id not in known:
            raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")
        return known[conn_id]

    return get


def run(topology: Topology, **kwargs: Any) -> KeystoreReport:
    """The whole check, with the test password unless the test gives another ``get_password``."""
    kwargs.setdefault("get_password", passwords())
    return check_replication(topology, **kwargs)


def row_of(report: KeystoreReport, instance: str) -> InstanceResult:
    return next(r for r in report.results if r.instance == instance)


def assert_no_secrets(text: str, paths: dict[str, Path], *secrets: str) -> None:
    """No password and no keystore bytes (base64, even its start, or hex) in ``text``."""
    for secret in secrets:
        assert secret not in text
    for path in paths.values():
        if path.is_file() and path.stat().st_size:
            data = path.read_bytes()
            encoded = base64.b64encode(data).decode()
            assert encoded not in text
            assert encoded[:40] not in text  # not even the start of it
            assert data.hex()[:64] not in text


class HungKeystore:
    """A FIFO nobody writes to, where a keystore should be: open() blocks like a hung NFS/SMB mount.

    ``release`` opens and closes the writing end, so a reader stuck in open() sees an empty file and its
    thread ends. A watchdog releases it after ``RESCUE_AFTER_SECONDS``, so code that waits for the stuck
    read fails this test's assertions (an empty file is not "no answer") instead of hanging the run.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        self.path = path
        self._watchdog = threading.Timer(RESCUE_AFTER_SECONDS, self.release)
        self._watchdog.daemon = True
        self._watchdog.start()

    def release(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody is waiting to read it
            return
        os.close(fd)

    def close(self) -> None:
        self._watchdog.cancel()
        self.release()


@contextlib.contextmanager
def hung_keystores() -> Iterator[Callable[[Path], HungKeystore]]:
    """Make keystore paths FIFOs nobody writes to (``HungKeystore``); every one released at the end."""
    made: list[HungKeystore] = []

    def make(path: Path) -> HungKeystore:
        made.append(HungKeystore(path))
        return made[-1]

    try:
        yield make
    finally:
        for fifo in made:
            fifo.close()
