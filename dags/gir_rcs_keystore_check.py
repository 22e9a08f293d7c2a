"""DAG gir_rcs_keystore_check: is the RCS keystore replicated to every RCS instance in every DC?

Thin wiring only; the check lives in ``include/gir_ops/keystore/`` (ids, params and the Asset in
``spec.py``; reading, comparing and the report in their own modules). A topology without any RCS instance
(``data_centers[].rcs``) has nothing to check: no DAG is defined, and one warning says so.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, dag, task

from include.gir_ops import notifications, shared
from include.gir_ops.keystore import spec
from include.gir_ops.topology import load_topology

TOPOLOGY = load_topology()
TIMEZONE = TOPOLOGY.primary.timezone
PARALLEL_READS = TOPOLOGY.keystore_check.parallel_reads
REFERENCE = TOPOLOGY.keystore_reference or "(none configured)"

DOC_MD = f"""
# RCS keystore replication check

Every RCS (Recording Crypto Server) instance in every data center must hold **the same keystore file**.
An instance with a stale keystore cannot decrypt recordings encrypted with a newer key, and nobody
notices until playback fails. This DAG reads every keystore listed in the topology (`data_centers[].rcs`),
takes its SHA-256 and size, opens it (PKCS12, JKS or JCEKS: integrity verified with the password, aliases,
entry types, subjects, expiry) when a password connection is configured, and compares each instance with
a reference: by default one in the DC whose Interaction Server is current (RWS's `eServicesSite`; during a
failover that is the backup DC), else **{REFERENCE}**; param `reference` names one for a run. The log of
`check_replication` says which and why.

Schedule: `{TOPOLOGY.keystore_check.schedule}` in {TIMEZONE} (the primary DC), a point-in-time check with
no data interval; no catch-up. Trigger it by hand any time (Trigger DAG, or
`airflow dags trigger {spec.DAG_ID}`), e.g. after replicating a keystore.

Tasks:

- `{spec.CHECK_REPLICATION}` reads and compares; logs a table (instance, DC, state, fingerprint, detail)
  and the JSON; returns the report; records an event on asset `{spec.RCS_KEYSTORE_CHECK_ASSET.name}` (ok,
  states, warnings) **red or green**, for the failover pre-flight. It succeeds even when keystores differ.
- `{spec.ENFORCE_REPLICATION}` fails the run when any instance is not `match`, naming each one and why,
  so failure alerting fires.

States: `match`, `drift` (bytes differ; which aliases were added/missing, which certificates changed,
which private keys are missing: every private key of a PKCS12 file counts), `missing`, `unreadable`
(permission denied, truncated, corrupt, wrong password, or "no answer within
{TOPOLOGY.keystore_check.read_timeout_seconds:g} s" from a hung mount: **not** drift), and
`not_compared` when the reference itself is missing or unreadable ("nothing to compare against").
A keystore that never answers cannot hold the check up: the report and the asset event still come out.
Certificates expiring within {TOPOLOGY.keystore_check.expiry_warning_days} days are warnings (run stays
green); expired certificates are listed as "kept for old recordings", never errors.

**What to do when red:** read the failure message: under each instance a `what to do:` line. An
instance that holds a key the reference does not is **never** overwritten ("do not overwrite: this
instance holds a key the reference does not": merge its entries into the reference's keystore first);
otherwise back up its keystore and replicate the reference's (`{spec.REPLICATE_DAG_ID}` copies it to the
`drift`/`missing` instances after a second person approves), restart RCS there, trigger this DAG again.
"The share is not mounted on this worker" is a mount to fix, not a keystore to copy.

Param `parallel_reads` (default {PARALLEL_READS}, from the topology's `keystore_check.parallel_reads`)
sets how many keystores are read at once. Passwords come from the Airflow connections named by
`password_conn_id`; only digests and metadata are ever logged or returned. Full
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


@dag(
    dag_id=spec.DAG_ID,
    schedule=CronTriggerTimetable(TOPOLOGY.keystore_check.schedule, timezone=TIMEZONE),
    start_date=shared.DAG_START_DATE,
    catchup=False,
    # Created unpaused: a paused scheduled DAG silently does nothing (docs/deployment.md).
    is_paused_upon_creation=shared.paused_upon_creation(),
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=50),
    tags=["gir", "rcs", "keystore"],
    **notifications.dag_kwargs(
        TOPOLOGY,
        spec.DAG_ID,
        default_args={"owner": "gir-ops", "retries": 2, "retry_delay": timedelta(minutes=1)},
    ),
    params=spec.trigger_params(TOPOLOGY),
    doc_md=DOC_MD,
)
def gir_rcs_keystore_check() -> None:
    @task(
        task_id=spec.CHECK_REPLICATION,
        outlets=[spec.RCS_KEYSTORE_CHECK_ASSET],
        multiple_outputs=False,
        execution_timeout=timedelta(minutes=15),
        doc_md=CHECK_DOC,
    )
    def check_replication(**context: Any) -> dict[str, Any]:
        from include.gir_ops.keystore.check import check_replication as run_check
        from include.gir_ops.keystore.reference import choose_reference

        topology = load_topology()
        choice = choose_reference(topology, context["params"].get("reference"))
        logging.getLogger(__name__).info("RCS keystore reference: %s", choice.reason)
        report = run_check(
            topology, parallel_reads=int(context["params"]["parallel_reads"]), reference=choice.instance
        )
        context["outlet_events"][spec.RCS_KEYSTORE_CHECK_ASSET].extra = report.asset_extra()
        return {**report.to_dict(), "reference_reason": choice.reason}

    @task(task_id=spec.ENFORCE_REPLICATION, retries=0, doc_md=ENFORCE_DOC)
    def enforce_replication(report: dict[str, Any]) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from include.gir_ops.keystore.report import failure_message

        message = failure_message(report)
        if message:
            raise AirflowFailException(message)
        return report["summary"]

    enforce_replication(check_replication())


if TOPOLOGY.rcs_instances:
    gir_rcs_keystore_check()
else:
    shared.not_configured(
        spec.DAG_ID, f"RCS instance ({spec.TOPOLOGY_SECTION})", "add one to check its keystore"
    )
