"""What the shipping DAG is built from while the dag-processor parses it: ids, the Asset, reserved names.

Imported on every parse of ``dags/gir_speechminer_backup_ship.py``, so it imports only ``airflow.sdk``.
The logic modules of this package import the names they share with the DAG from here.
"""

from __future__ import annotations

from airflow.sdk import Asset

DAG_ID = "gir_speechminer_backup_ship"

# Task ids, shared by the DAG file, the docs and the tests.
WAIT_FOR_BACKUP = "wait_for_backup"
MANIFEST = "manifest"
COPY = "copy"
VERIFY_AND_PUBLISH = "verify_and_publish"
RETENTION = "retention"
FRESHNESS = "freshness"
FAIL_RUN_IF_SHIPPING_FAILED = "fail_run_if_shipping_failed"
# shipping.mode verify-in-place: SpeechMiner writes to the backup DC itself; this task checks and records.
VERIFY_IN_PLACE = "verify_in_place"

# Names this DAG writes at the destination; a source folder or file may not use them.
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "gir-speechminer-backup/1"
PARTIAL_SUFFIX = ".partial"
# A published copy being replaced by a newer verified one lives here for the moment of the swap.
RETIRED_SUFFIX = ".retired"


def speechminer_backup_asset(to_site: str) -> Asset:
    """A verified SpeechMiner index backup landed at ``to_site``.

    Named, not given a URI: a URI with a custom scheme makes Airflow look for a scheme normalizer among
    every provider, which tripled the parse time of the DAG files that declare it.

    Event extra: site, backup_name, bytes, files, manifest_sha256, shipped_at (ISO-8601 UTC).
    """
    slug = to_site.lower()
    return Asset(name=f"gir_speechminer_backup_{slug}", group="gir")
