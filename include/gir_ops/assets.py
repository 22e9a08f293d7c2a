"""The Assets gir-ops DAGs publish, defined once so producers and consumers cannot disagree on names.

The failover DAG's pre-flight reads the latest events of these (``inlet_events``) to tell the approver
when the backup DC last received a verified SpeechMiner backup and what the last keystore check found.

They are named, not given a URI: a URI with a custom scheme makes Airflow look for a scheme normalizer
among every provider, which tripled the parse time of the DAG files that declare them.
"""

from __future__ import annotations

from airflow.sdk import Asset


def speechminer_backup_asset(to_site: str) -> Asset:
    """A verified SpeechMiner index backup landed at ``to_site``.

    Event extra: site, backup_name, bytes, files, manifest_sha256, shipped_at (ISO-8601 UTC).
    """
    slug = to_site.lower()
    return Asset(name=f"gir_speechminer_backup_{slug}", group="gir")


# Event extra: ok (bool), checked_at (ISO-8601 UTC), reference, states ({instance: state}), warnings (list).
RCS_KEYSTORE_CHECK_ASSET = Asset(name="gir_rcs_keystore_check", group="gir")
