"""What every feature shares, in one place: names Airflow and RWS know us by, ID patterns, how a task fails
without retry, and how times and sizes are written for people.

Imported at parse time by the DAG files (through the features' parse-time modules), so it imports nothing
heavy: Airflow is imported inside the one function that needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

# --- names ---------------------------------------------------------------------------------------------

# The root of the RWS ops API every call of the guide goes to.
OPS_API = "/api/v2/ops"

# Airflow pools: one per re-index DC (``gir_rws_<site>`` unless the topology names one), and one that lets a
# single multimedia-switch POST out at a time.
RWS_POOL_PREFIX = "gir_rws_"
RWS_SWITCH_POOL = "gir_rws_switch"
RWS_SWITCH_POOL_SLOTS = 1

# Environment variables that carry passwords to the set-up commands (never a command-line argument).
OPS_PASSWORD_ENV = "GIR_SIM_OPS_PASSWORD"  # noqa: S105 - a variable name, not a password
KEYSTORE_PASSWORD_ENV = "GIR_RCS_KEYSTORE_PASSWORD"  # noqa: S105 - a variable name
AIRFLOW_API_PASSWORD_ENV = "GIR_AIRFLOW_API_PASSWORD"  # noqa: S105 - a variable name

# --- ID patterns (whole-string; JSON Schema and re.fullmatch alike) ------------------------------------

# A contact center ID as GET /api/v2/ops/contact-centers returns it (the last segment of each URI). The
# guide says "in hex format"; real RWS deployments answer a dashed UUID (625a5cf1-dea8-4e46-...). Both are
# accepted, in either case; nothing else (the ID goes into a URL path). Compared and sent in lower case.
CONTACT_CENTER_ID_PATTERN = (
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{1,64})$"
)
# The accepted forms in words, for every message that refuses an ID (topology, trigger param, discovery).
CONTACT_CENTER_ID_FORMS = (
    "a dashed UUID (8-4-4-4-12 hex digits, e.g. 625a5cf1-dea8-4e46-b18b-831d4b254488) or plain hex "
    "(1-64 hex digits, e.g. 9a4c1e3f0b)"
)
# A genesys-environment ID as GET /api/v2/ops/genesys-environments lists it; it goes into a URL path.
ENVIRONMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
# A timestamp with its UTC offset, as the trigger forms take it (2026-11-20T00:00:00+01:00, ...Z).
ISO_WITH_OFFSET_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"

# --- failing without retry -----------------------------------------------------------------------------


@contextlib.contextmanager
def fail_without_retry(*errors: type[BaseException]) -> Iterator[None]:
    """An error of one of these types that a retry cannot heal ends the task at once.

    It is re-raised as ``AirflowFailException`` (same message) so Airflow does not retry it, unless the
    error says ``retryable = True`` (a dropped connection, a source still being written), which is raised
    as it is for Airflow's retries.
    """
    try:
        yield
    except errors as exc:
        if getattr(exc, "retryable", False):
            raise
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


# --- times and sizes for people ------------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_iso_utc(value: Any) -> datetime | None:
    """An ISO-8601 time as our tasks and Airflow write it (``...Z`` or an offset; naive taken as UTC), a
    datetime as it is; None for anything else, so a record that lost or mangled a time is skipped, never
    fatal (readiness, catch-up and findings read records other DAGs wrote)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso_utc(value: Any) -> str | None:
    """A datetime as ISO-8601 UTC, anything else as text, None as None (for XCom, reports and audits)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return str(value)


def format_utc(moment: datetime) -> str:
    """2026-11-18T01:00Z: short, unambiguous, sortable (seconds and milliseconds only when present)."""
    utc = as_utc(moment)
    text = utc.strftime("%Y-%m-%dT%H:%M")
    if utc.microsecond:
        text = utc.isoformat(timespec="milliseconds").removesuffix("+00:00")
    elif utc.second:
        text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    return text + "Z"


def format_age(then: datetime | None, now: datetime) -> str:
    """How long ago, for a person: "12 min ago", "3.0 h ago", "at an unknown time"."""
    if then is None:
        return "at an unknown time"
    hours = (now - then).total_seconds() / 3600
    return f"{hours * 60:.0f} min ago" if hours < 1 else f"{hours:.1f} h ago"


EXACT_SIZE_BELOW = 64 * 1024


def format_size(size: float | None) -> str:
    """Bytes for a person: "1877 B", "512.00 KiB", "1.50 MiB", "2.00 GiB"; "?" when unknown.

    Exact below 64 KiB, so two small files (keystores) that differ by a few bytes never read the same.
    """
    if size is None:
        return "?"
    value = float(size)
    if value < EXACT_SIZE_BELOW:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.2f} {unit}"
    return f"{value / 1024:.2f} GiB"


# --- DAGs ----------------------------------------------------------------------------------------------

# Every DAG's start_date: the earliest date a backfill may cover. Timetables carry their own timezone.
DAG_START_DATE = datetime(2024, 1, 1, tzinfo=UTC)


# Scheduled DAGs are created unpaused: their purpose is the nightly (hourly) run, a paused one silently
# does nothing, and backfill runs of a paused DAG stay queued. A test harness that must not see scheduled
# runs sets this to "1" (the engine tests do); nothing else should.
PAUSED_AT_CREATION_ENV = "GIR_DAGS_PAUSED_AT_CREATION"


def paused_upon_creation() -> bool:
    """``is_paused_upon_creation`` of every scheduled DAG: False unless a test harness asks otherwise."""
    import os

    return os.environ.get(PAUSED_AT_CREATION_ENV, "").strip() == "1"


def not_configured(dag_id: str, missing: str, to_enable: str) -> None:
    """The one policy for a topology section that is absent: the feature is not configured, so its DAG
    file defines no DAG and says so in ONE warning (naming what is missing and how to enable it), never in
    an import error that would read as a broken deployment."""
    import logging

    logging.getLogger("include.gir_ops").warning(
        "%s is not defined: the topology has no %s; %s", dag_id, missing, to_enable
    )


# --- a path that is not there: a missing file, or a share that is not mounted --------------------------


def local_path(url: str) -> str | None:
    """The local path of a ``file://`` URL (or a plain path); None for a remote store (s3://, sftp://...)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if scheme.lower() not in ("file", "local"):
        return None
    return "/" + rest.lstrip("/") if rest else None


def missing_path_detail(url: str, what: str = "file") -> str:
    """Why ``url`` is not there, for a person: the file is missing, or its share is not mounted here.

    A missing file in a folder that exists is "does not exist"; a folder above it that is missing too
    means the share (NFS/SMB mount) is not mounted on this machine, or the topology's path is wrong. The
    nearest folder that does exist is named, so the operator knows where to look.
    """
    import os
    import socket

    path = local_path(url)
    if path is None:
        return f"{what} does not exist: {url}"
    parent = os.path.dirname(path.rstrip("/")) or "/"
    if os.path.isdir(parent):
        return f"{what} does not exist: {path} (its folder {parent} is there, the {what} is not)"
    missing, above = parent, os.path.dirname(parent)
    while above and not os.path.isdir(above):
        missing, above = above, os.path.dirname(above)
    return (
        f"the share is not mounted on this worker ({socket.gethostname()}), or the path is wrong: "
        f"{missing} does not exist (nearest existing folder: {above or '/'}), so {path} cannot be reached"
    )
