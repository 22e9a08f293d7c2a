"""DAG gir_rcs_keystore_check: is the RCS keystore replicated to every RCS instance in every DC?

Thin wiring only; the check lives in ``include/gir_ops/keystore.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import CronTriggerTimetable, dag, task

from include.gir_ops.assets import RCS_KEYSTORE_CHECK_ASSET
from include.gir_ops.params import trigger_param
from include.gir_ops.topology import load_topology

TOPOLOGY = load_topology()
TIMEZONE = TOPOLOGY.primary.timezone
PARALLEL_READS = TOPOLOGY.keystore_check.parallel_reads

# Hook point for alerting (see docs/gir_rcs_keystore_check.md): callables or notifiers run when a task of
# this DAG fails, e.g. ``SmtpNotifier(to="oncall@example.com", ...)`` from the SMTP provider.
FAILURE_NOTIFIERS: list[Any] = []

DOC_MD = f"""
# RCS keystore replication check

Every RCS (Recording Crypto Server) instance in every data center must hold **the same keystore file**.
An instance with a stale keystore cannot decrypt recordings encrypted with a newer key, and nobody
notices until playback fails. This DAG reads every keystore listed in the topology (`data_centers[].rcs`),
takes its SHA-256 and size, opens PKCS12 keystores when a password connection is configured, and
compares each instance with the reference **{TOPOLOGY.keystore_reference or "(none configured)"}**.

Schedule: `{TOPOLOGY.keystore_check.schedule}` in {TIMEZONE} (the primary DC), a point-in-time check with
no data interval; no catch-up. Trigger it by hand any time (Trigger DAG, or
`airflow dags trigger gir_rcs_keystore_check`), e.g. after replicating a keystore.

Tasks:

- `check_replication` reads and compares; logs a table (instance, DC, state, fingerprint, detail) and
  the JSON; returns the report; records an event on asset `gir_rcs_keystore_check` (ok, states,
  warnings) **red or green**, for the failover pre-flight. It succeeds even when keystores differ.
- `enforce_replication` fails the run when any instance is not `match`, naming each one and why, so
  failure alerting fires.

States: `match`, `drift` (bytes differ; which aliases were added/missing, which certificates changed,
which private keys are missing: every private key of a PKCS12 file counts), `missing`, `unreadable`
(permission denied, truncated, corrupt, wrong password, or "no answer within
{TOPOLOGY.keystore_check.read_timeout_seconds:g} s" from a hung mount: **not** drift), and
`not_compared` when the reference itself is missing or unreadable ("nothing to compare against").
A keystore that never answers cannot hold the check up: the report and the asset event still come out.
Certificates expiring within {TOPOLOGY.keystore_check.expiry_warning_days} days are warnings (run stays
green); expired certificates are listed as "kept for old recordings", never errors.

**What to do when red:** read the failure message or the table in `check_replication`'s log; copy the
reference keystore to the named instances (or restore the reference first if it is the one missing);
trigger this DAG again. Param `parallel_reads` (default {PARALLEL_READS}, from the topology's
`keystore_check.parallel_reads`) sets how many keystores are read at once. Passwords come from the Airflow
connections named by `password_conn_id`; only digests and metadata are ever logged or returned. Full
operator docs: `docs/gir_rcs_keystore_check.md`.
"""

CHECK_DOC = """
Reads every RCS keystore in parallel, fingerprints and compares it with the reference, logs the table and
JSON, returns the report and records the asset event (ok true or false). It succeeds whatever it finds,
so the latest result is always recorded; it fails only when the check itself cannot run, and is then
retried (reading is side-effect free). An open or read that does not answer within
`keystore_check.read_timeout_seconds` makes that instance unreadable; the task never waits for it.
"""

ENFORCE_DOC = """
Fails the run, naming every RCS instance that is not `match` and why, so Airflow's failure alerting
fires. Never retried: it only judges the report `check_replication` recorded, so a retry would give the
same answer and only delay the alert. Re-run the DAG after fixing the keystores instead.
"""

_default_args: dict[str, Any] = {
    "owner": "gir-ops",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
}
if FAILURE_NOTIFIERS:
    _default_args["on_failure_callback"] = FAILURE_NOTIFIERS


@dag(
    dag_id="gir_rcs_keystore_check",
    schedule=CronTriggerTimetable(TOPOLOGY.keystore_check.schedule, timezone=TIMEZONE),
    start_date=datetime(2026, 1, 1, tzinfo=ZoneInfo(TIMEZONE)),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=50),
    tags=["gir", "rcs", "keystore"],
    default_args=_default_args,
    params={
        "parallel_reads": trigger_param(
            PARALLEL_READS,
            type="integer",
            minimum=1,
            maximum=256,
            description="How many keystores are read at the same time.",
        ),
    },
    doc_md=DOC_MD,
)
def gir_rcs_keystore_check() -> None:
    @task(
        task_id="check_replication",
        outlets=[RCS_KEYSTORE_CHECK_ASSET],
        multiple_outputs=False,
        execution_timeout=timedelta(minutes=15),
        doc_md=CHECK_DOC,
    )
    def check_replication(params: Any = None, outlet_events: Any = None) -> dict[str, Any]:
        from include.gir_ops.keystore import check_replication as run_check

        parallel_reads = int(params["parallel_reads"]) if params else PARALLEL_READS
        report = run_check(load_topology(), parallel_reads=parallel_reads)
        outlet_events[RCS_KEYSTORE_CHECK_ASSET].extra = report.asset_extra()
        return report.to_dict()

    @task(task_id="enforce_replication", retries=0, doc_md=ENFORCE_DOC)
    def enforce_replication(report: dict[str, Any]) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from include.gir_ops.keystore import failure_message

        message = failure_message(report)
        if message:
            raise AirflowFailException(message)
        return report["summary"]

    enforce_replication(check_replication())


gir_rcs_keystore_check()
