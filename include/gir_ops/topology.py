"""The GIR deployment topology: one validated YAML file that every DAG reads at parse time.

The file describes the data centers (sites), their RWS connections and contact centers, where the
SpeechMiner index backup and the RCS keystores live, and how failover is approved. It is loaded once per
process, validated with a typed model, and any mistake fails DAG parsing with a message that names the
file, the key path and the fix, because a wrong topology must never silently run against the wrong DC.

``${GIR_NAME}`` and ``${GIR_NAME:-default}`` in string values are replaced from the environment, so one
file serves the laptop stack, the compose deployment and CI without edits. Only ``GIR_*`` variables:
any other name is an error, because other variables may hold secrets. YAML aliases, merge keys and
duplicate keys are refused (see ``TopologyLoader``); storage URLs must not carry credentials.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from include.gir_ops.params import is_contact_center_id
from include.gir_ops.shared import CONTACT_CENTER_ID_FORMS, RWS_POOL_PREFIX

DEFAULT_TOPOLOGY_PATH = Path(__file__).resolve().parent.parent / "config" / "topology.yaml"
TOPOLOGY_ENV_VAR = "GIR_TOPOLOGY"
# The bundled topology describes the simulator. It is loaded without GIR_TOPOLOGY only when this is "1"
# (set by `make run`, the test harness and the demo stacks), so that a component someone forgot to give
# GIR_TOPOLOGY fails to parse instead of silently running against the demo's data centers.
DEMO_ENV_VAR = "GIR_DEMO"

# Schemes ObjectStoragePath can reach through a registered fsspec filesystem and that we support.
SUPPORTED_URL_SCHEMES = ("file", "s3", "gs", "gcs", "abfs", "az", "sftp", "smb", "hdfs", "webhdfs")

_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
# Only these are expanded: any other variable may hold a secret (AIRFLOW_CONN_* holds a connection URI
# with its password) that would end up in a DAG's doc_md, a log line or an error.
ENV_PREFIX = "GIR_"
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TopologyError(ValueError):
    """The topology file is missing, not YAML, or does not describe a valid deployment."""


# --- field types -------------------------------------------------------------------------------------


def _check_contact_center_id(value: str) -> str:
    if not is_contact_center_id(value):
        raise ValueError(
            f"contact center ID {value!r} is not {CONTACT_CENTER_ID_FORMS}; fix: use the ID that "
            "GET /api/v2/ops/contact-centers returns at the end of each URI, or [] to discover them"
        )
    return value.lower()


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone {value!r} does not exist; use an IANA name such as 'UTC', 'Europe/Paris' or "
            "'Asia/Kolkata'"
        ) from None
    return value


def _check_cron(value: str) -> str:
    if not croniter.is_valid(value):
        raise ValueError(
            f"cron expression {value!r} does not parse; use five fields 'minute hour day month weekday', "
            "e.g. '0 2 * * *'"
        )
    return value


# A password whose '/', '?' or '#' ends the URL's authority early (user:pa/ss@host); "host:22/a@b" is a
# port followed by a path, not a password.
_LOOSE_URL_PASSWORD = re.compile(r"^[^:/?#@\s]*:(?!\d*(?:[/?#]|$))[^@]*@")
# Query parameters that carry a secret (password=, token=, sig= of an Azure SAS, AccountKey=, ...).
_URL_SECRET_QUERY = re.compile(
    r"(?i)([?&;][^=&;#]*(?:pass|pwd|secret|token|sig|key|cred|auth)[^=&;#]*=)[^&;#]*"
)


def _url_credentials(value: str) -> tuple[str, str] | None:
    """(what is wrong, the URL with the secret masked) when a storage URL carries credentials."""
    from urllib.parse import unquote

    scheme, sep, rest = value.partition("://")
    prefix, rest = (f"{scheme}://", rest) if sep else ("", value)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority and ":" in unquote(authority.rpartition("@")[0]):
        masked = prefix + "***@" + rest[len(authority.rpartition("@")[0]) + 1 :]
        return "it has a password in it ('user:password@')", _URL_SECRET_QUERY.sub(r"\1***", masked)
    loose = _LOOSE_URL_PASSWORD.match(rest)
    if loose:
        masked = prefix + "***@" + rest[loose.end() :]
        return "it has a password in it ('user:password@')", _URL_SECRET_QUERY.sub(r"\1***", masked)
    if _URL_SECRET_QUERY.search(rest):
        return "it carries a secret in its query string", prefix + _URL_SECRET_QUERY.sub(r"\1***", rest)
    return None


def _check_storage_url(value: str) -> str:
    # Credentials first, and masked in every message: a refused URL must not leak into the error.
    credentials = _url_credentials(value)
    if credentials:
        problem, masked = credentials
        raise ValueError(
            f"{masked!r}: {problem}; credentials never go in the topology, they belong in an Airflow "
            "connection: write the URL as scheme://<conn_id>@<path> (ObjectStoragePath reads the login "
            "and password from that connection) and remove the password"
        )
    scheme, sep, rest = value.partition("://")
    if not sep or not rest:
        raise ValueError(
            f"{value!r} is not a storage URL; write it as scheme://path, e.g. file:///var/lib/gir/..."
        )
    if scheme.lower() not in SUPPORTED_URL_SCHEMES:
        raise ValueError(
            f"URL scheme {scheme!r} is not supported; use one of {', '.join(SUPPORTED_URL_SCHEMES)}"
        )
    return value


def _check_site_name(value: str) -> str:
    if not _SITE_NAME.match(value):
        raise ValueError(
            f"site name {value!r} must start with a letter or digit and contain only letters, digits, "
            "'_', '.' or '-' (it is the eServices siteName and part of DAG ids)"
        )
    return value


ContactCenterId = Annotated[str, AfterValidator(_check_contact_center_id)]
Timezone = Annotated[str, AfterValidator(_check_timezone)]
Cron = Annotated[str, AfterValidator(_check_cron)]
StorageUrl = Annotated[str, AfterValidator(_check_storage_url)]
SiteName = Annotated[str, AfterValidator(_check_site_name)]


# The Elasticsearch indexes RWS re-indexes per contact center (the last segment of the forceIndex URI).
REINDEX_KINDS = ("recordings", "screen-recordings")
# How many RCS keystores the replication check reads at the same time, unless the topology says otherwise.
DEFAULT_KEYSTORE_PARALLEL_READS = 16


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a key must not silently fall back to a default.

    ``defer_build``: every DAG parse imports this module, and pydantic would otherwise build and compile a
    validator for each of these classes at import; deferred, the one validation of ``Topology`` builds a
    single validator holding the sections inline (``make bench``, parse breakdown rows).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# List fields default to ``[]``, not ``Field(default_factory=list)``: pydantic copies a mutable default
# for every instance anyway, and a builtin factory makes it call ``inspect.signature(list)``, which copies
# ``sys.modules`` (thousands of entries in the dag-processor): about 2 ms per field on every DAG parse.


# --- sections ----------------------------------------------------------------------------------------


class RwsSettings(_Strict):
    """How to reach a DC's Interaction Recording Web Services ops API."""

    conn_id: str | None = Field(default=None, description="Airflow HTTP connection; default gir_rws_<site>")
    contact_centers: list[ContactCenterId] = []
    screen_recording: bool = False


class ReindexSettings(_Strict):
    """The daily Elasticsearch forceIndex of a DC that keeps its own index."""

    enabled: bool = False
    schedule: Cron = "0 2 * * *"
    max_window_hours: int = Field(default=24, ge=1)
    pool: str | None = Field(default=None, description="Airflow pool; default gir_rws_<site>")
    pool_slots: int = Field(default=1, ge=1)
    deadline_hours: float = Field(
        default=6, gt=0, description="Deadline Alert: a run not finished this long after it was queued"
    )


class SpeechMinerSettings(_Strict):
    index_backup: StorageUrl | None = None


class RcsInstance(_Strict):
    """One Recording Crypto Server and where its keystore file can be read."""

    name: str = Field(min_length=1)
    keystore: StorageUrl
    password_conn_id: str | None = None


class DataCenter(_Strict):
    site: SiteName
    timezone: Timezone = "UTC"
    rws: RwsSettings = Field(default_factory=RwsSettings)
    reindex: ReindexSettings = Field(default_factory=ReindexSettings)
    speechminer: SpeechMinerSettings = Field(default_factory=SpeechMinerSettings)
    rcs: list[RcsInstance] = []

    @property
    def site_slug(self) -> str:
        """The site in lower case with '-' and '.' as '_', as used in DAG, pool and connection ids."""
        return re.sub(r"[^a-z0-9_]", "_", self.site.lower())

    @property
    def reindex_kinds(self) -> tuple[str, ...]:
        """Recordings always; screen recordings only where the DC uses screen recording."""
        return REINDEX_KINDS if self.rws.screen_recording else ("recordings",)

    @property
    def rws_conn_id(self) -> str:
        return self.rws.conn_id or f"gir_rws_{self.site_slug}"

    @property
    def rws_pool(self) -> str:
        return self.reindex.pool or f"{RWS_POOL_PREFIX}{self.site_slug}"


# Which folders under the source's speechminer.index_backup are backups: a name with a date in it
# (YYYY-MM-DD or YYYYMMDD), optionally after a prefix and before a time or tag: index-2026-11-20,
# SMIndexBackup_20261120_0200. Never tmp, lost+found, dot-folders, latest or *.partial.
DEFAULT_BACKUP_NAME_PATTERN = (
    r"(?:[A-Za-z0-9][A-Za-z0-9_-]*[_-])?(?:19|20)[0-9]{2}-?(?:0[1-9]|1[0-2])-?(?:0[1-9]|[12][0-9]|3[01])"
    r"(?:[T_-][A-Za-z0-9]+)*"
)


def _check_backup_name_pattern(value: str) -> str:
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise ValueError(
            f"{value!r} is not a valid regular expression ({exc}); write a Python regex that matches a whole "
            f"backup folder name, e.g. the default {DEFAULT_BACKUP_NAME_PATTERN!r}"
        ) from None
    for name in ("", ".", ".."):
        if compiled.fullmatch(name):
            raise ValueError(
                f"{value!r} matches the folder name {name!r}; a backup name must be a real folder name: "
                "tighten the pattern"
            )
    return value


# The WAN cap of the shipping copy, megabits (10^6 bits) per second: from 1 Mbit/s (a copy of a 2 GiB
# backup would then take ~5 hours) to 100 Gbit/s (no WAN is faster; a larger number is a unit mistake).
MIN_BANDWIDTH_LIMIT_MBPS = 1.0
MAX_BANDWIDTH_LIMIT_MBPS = 100_000.0


def _check_bandwidth_limit(value: float | None) -> float | None:
    if value is not None and not MIN_BANDWIDTH_LIMIT_MBPS <= value <= MAX_BANDWIDTH_LIMIT_MBPS:
        raise ValueError(
            f"bandwidth_limit_mbps must be between {MIN_BANDWIDTH_LIMIT_MBPS:g} and "
            f"{MAX_BANDWIDTH_LIMIT_MBPS:g} megabits per second, got {value!r}; fix: give the share of the "
            "WAN link between the DCs the copy may use, in Mbit/s (e.g. 200 for 200 Mbit/s, about 25 MB/s), "
            "or leave the key out for no cap"
        )
    return value


# How the SpeechMiner Daily Index Backup reaches the backup DC (shipping.mode):
# - copy: SpeechMiner writes it in the primary DC (speechminer.index_backup); the DAG copies, verifies and
#   publishes it at shipping.destination;
# - verify-in-place: SpeechMiner writes it directly to the backup DC (shipping.destination), as the guide
#   describes; the DAG only verifies what arrived there and records it in a manifest outside that folder.
SHIPPING_MODES = ("copy", "verify-in-place")
MANIFEST_STORE_SUFFIX = ".gir-manifests"


class ShippingSettings(_Strict):
    """Where the primary DC's SpeechMiner daily index backup goes, how it gets there, and how it is kept."""

    from_site: str
    to_site: str
    destination: StorageUrl
    mode: Literal["copy", "verify-in-place"] = "copy"
    manifest_store: StorageUrl | None = Field(
        default=None,
        description="verify-in-place: where the manifests go; default <destination>.gir-manifests",
    )
    keep: int = Field(default=7, ge=1)
    schedule: Cron = "30 3 * * *"
    # Our assumption, not SpeechMiner's: it writes no completion marker. Off unless a job of yours writes one.
    ready_marker: str | None = None
    quiet_minutes: float = Field(default=30, ge=0)
    max_age_hours: float = Field(default=26, gt=0)
    wait_timeout_minutes: float = Field(default=360, gt=0)
    poll_seconds: float = Field(default=60, gt=0, description="how often the deferred wait re-checks")
    backup_name_pattern: Annotated[str, AfterValidator(_check_backup_name_pattern)] = Field(
        default=DEFAULT_BACKUP_NAME_PATTERN,
        description="regex (whole name) saying which folders under index_backup are backups",
    )
    destination_may_be_link: bool = Field(
        default=False,
        description="allow the destination root itself to be a symbolic link (never anything below it)",
    )
    deadline_hours: float = Field(
        default=8, gt=0, description="Deadline Alert: a run not finished this long after it was queued"
    )
    bandwidth_limit_mbps: Annotated[float | None, AfterValidator(_check_bandwidth_limit)] = Field(
        default=None,
        description="cap of the copy between the DCs in Mbit/s; the local read-back is never capped",
    )

    @property
    def manifest_root(self) -> str:
        """verify-in-place: the folder of the manifests, beside (never inside) SpeechMiner's backups."""
        return self.manifest_store or self.destination.rstrip("/") + MANIFEST_STORE_SUFFIX

    @model_validator(mode="after")
    def _check_mode(self) -> ShippingSettings:
        if self.mode == "copy" and self.manifest_store is not None:
            raise _KeyError(
                ("shipping", "manifest_store"),
                "is only used with shipping.mode 'verify-in-place' (in copy mode each published backup "
                "holds its own MANIFEST.json); remove it or set mode: verify-in-place",
            )
        if self.mode == "verify-in-place":
            inside = self.destination.rstrip("/") + "/"
            if self.manifest_root.rstrip("/") + "/" == inside or self.manifest_root.startswith(inside):
                raise _KeyError(
                    ("shipping", "manifest_store"),
                    f"{self.manifest_root!r} is inside shipping.destination, the folder SpeechMiner writes "
                    "its backups to; nothing of ours goes in there: choose a folder beside it",
                )
        return self


# How long one open or read of an RCS keystore may go unanswered (a FIFO, a hung NFS/SMB mount) before
# that instance is reported unreadable. Bounded so that hung reads end well inside check_replication's
# 15-minute execution_timeout and the report still comes out.
DEFAULT_KEYSTORE_READ_TIMEOUT_SECONDS = 30.0
MAX_KEYSTORE_READ_TIMEOUT_SECONDS = 300.0


def _check_read_timeout(value: float) -> float:
    if not 0 < value <= MAX_KEYSTORE_READ_TIMEOUT_SECONDS:  # also refuses nan and inf
        raise ValueError(
            f"read_timeout_seconds must be more than 0 and at most {MAX_KEYSTORE_READ_TIMEOUT_SECONDS:g} "
            f"seconds, got {value!r}; fix: set how many seconds one keystore open or read may go "
            f"unanswered (default {DEFAULT_KEYSTORE_READ_TIMEOUT_SECONDS:g})"
        )
    return value


class KeystoreCheckSettings(_Strict):
    schedule: Cron = "0 * * * *"
    reference: str | None = None
    expiry_warning_days: int = Field(default=30, ge=0)
    parallel_reads: int = Field(default=DEFAULT_KEYSTORE_PARALLEL_READS, ge=1, le=256)
    read_timeout_seconds: Annotated[float, AfterValidator(_check_read_timeout)] = (
        DEFAULT_KEYSTORE_READ_TIMEOUT_SECONDS
    )


class Approver(_Strict):
    id: str = Field(min_length=1)
    name: str | None = None


_SITE_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*){0,7}")


def _check_site_field(value: str | None) -> str | None:
    if value is not None and not _SITE_FIELD.fullmatch(value):
        raise ValueError(
            f"site_field {value!r} is not a dotted path of JSON keys; fix: name where GET "
            ".../genesys-environments/{id} reports the site, e.g. genesysEnvironment.eServicesSite or "
            "eServicesSite (keys of letters, digits, '_' or '-', joined by '.'), or leave it out to look at "
            "the top level and inside the nested resource"
        )
    return value


class FailoverSettings(_Strict):
    approvers: list[Approver] = Field(min_length=1)
    response_timeout_minutes: int = Field(default=30, ge=1)
    dr_monitoring_delay_seconds: int = Field(default=30, ge=0)
    verify_margin_seconds: int = Field(default=30, ge=0)
    audit_log: StorageUrl
    # Where RWS reports the eServices site in GET .../genesys-environments/{id} (dotted); None: the top
    # level, else inside the single nested resource object. The guide documents no read-back.
    site_field: Annotated[str | None, AfterValidator(_check_site_field)] = None
    # How long the on-call has to confirm the switch (and its follow-ups) after it was sent.
    confirm_timeout_minutes: int = Field(default=30, ge=1)


class KeystoreReplicationSettings(_Strict):
    """The approved copy of the reference keystore to other RCS instances (DAG gir_rcs_keystore_replicate)."""

    approvers: list[Approver] = Field(min_length=1)
    response_timeout_minutes: int = Field(default=60, ge=1)
    audit_log: StorageUrl
    check_grace_minutes: int = Field(
        default=15, ge=0, description="how much older than one keystore_check.schedule period a check may be"
    )
    target_dir_may_be_link: bool = Field(
        default=False,
        description="allow a keystore's folder itself to be a symbolic link (the file never may be)",
    )


class NotificationEvent(_Strict):
    """One event's route: on or off, and optionally another Apprise connection or tag than the default."""

    enabled: bool = True
    conn_id: str | None = Field(default=None, description="Apprise connection; default notifications.conn_id")
    tag: str | None = Field(default=None, description="Apprise tag(s) to address; default notifications.tag")


class NotificationsSettings(_Strict):
    """Where the on-call hears about failed runs, waiting approvals, failover outcomes and missed deadlines.

    ``conn_id`` names an Airflow connection of type ``apprise`` (apache-airflow-providers-apprise): its
    ``config`` extra holds the Apprise URL(s), so a webhook token or SMTP password stays in the connection.
    """

    conn_id: str = Field(default="gir_apprise", min_length=1)
    tag: str | None = None
    run_failed: NotificationEvent = Field(default_factory=NotificationEvent)
    approval_waiting: NotificationEvent = Field(default_factory=NotificationEvent)
    failover_outcome: NotificationEvent = Field(default_factory=NotificationEvent)
    deadline_missed: NotificationEvent = Field(default_factory=NotificationEvent)


class Topology(_Strict):
    primary_site: str
    data_centers: list[DataCenter] = Field(min_length=1)
    shipping: ShippingSettings | None = None
    keystore_check: KeystoreCheckSettings = Field(default_factory=KeystoreCheckSettings)
    failover: FailoverSettings | None = None
    keystore_replication: KeystoreReplicationSettings | None = None
    notifications: NotificationsSettings | None = None

    @model_validator(mode="after")
    def _check_references(self) -> Topology:
        sites = [dc.site for dc in self.data_centers]
        seen: set[str] = set()
        for index, site in enumerate(sites):
            if site.lower() in seen:
                raise _KeyError(
                    ("data_centers", index, "site"),
                    f"duplicate site {site!r}; every data center needs its own siteName",
                )
            seen.add(site.lower())
        known = ", ".join(sites)
        if self.primary_site not in sites:
            raise _KeyError(
                ("primary_site",),
                f"{self.primary_site!r} is not among the sites ({known}); name one of them",
            )
        if self.shipping is not None:
            for key in ("from_site", "to_site"):
                value = getattr(self.shipping, key)
                if value not in sites:
                    raise _KeyError(("shipping", key), f"site {value!r} does not exist; use one of {known}")
            if self.shipping.from_site == self.shipping.to_site:
                raise _KeyError(
                    ("shipping", "to_site"), "must differ from shipping.from_site: ship to the other DC"
                )
            source_backup = self.site(self.shipping.from_site).speechminer.index_backup
            if self.shipping.mode == "copy" and source_backup is None:
                raise _KeyError(
                    ("shipping", "from_site"),
                    f"site {self.shipping.from_site!r} has no speechminer.index_backup to ship from; "
                    "add that key to the data center, or set shipping.mode: verify-in-place if SpeechMiner "
                    "writes its Daily Index Backup directly to the backup DC",
                )
            if (
                self.shipping.mode == "verify-in-place"
                and source_backup is not None
                and source_backup.rstrip("/") != self.shipping.destination.rstrip("/")
            ):
                index = self.sites.index(self.shipping.from_site)
                raise _KeyError(
                    ("data_centers", index, "speechminer", "index_backup"),
                    f"{source_backup!r} differs from shipping.destination {self.shipping.destination!r}: in "
                    "verify-in-place mode SpeechMiner writes its Daily Index Backup directly to "
                    "shipping.destination; set index_backup to the same URL or remove it",
                )
        rcs_names = [rcs.name for dc in self.data_centers for rcs in dc.rcs]
        duplicates = sorted({name for name in rcs_names if rcs_names.count(name) > 1})
        if duplicates:
            raise _KeyError(("data_centers",), f"RCS instance names must be unique; repeated: {duplicates}")
        reference = self.keystore_check.reference
        if reference is not None and reference not in rcs_names:
            raise _KeyError(
                ("keystore_check", "reference"),
                f"RCS instance {reference!r} does not exist; use one of {rcs_names}",
            )
        return self

    # --- lookups used by the DAGs ---

    def site(self, name: str) -> DataCenter:
        for dc in self.data_centers:
            if dc.site == name:
                return dc
        raise KeyError(f"no data center with site {name!r} in the topology")

    @property
    def primary(self) -> DataCenter:
        return self.site(self.primary_site)

    @property
    def sites(self) -> list[str]:
        return [dc.site for dc in self.data_centers]

    @property
    def reindex_data_centers(self) -> list[DataCenter]:
        return [dc for dc in self.data_centers if dc.reindex.enabled]

    @property
    def rcs_instances(self) -> list[tuple[DataCenter, RcsInstance]]:
        return [(dc, rcs) for dc in self.data_centers for rcs in dc.rcs]

    @property
    def keystore_reference(self) -> str | None:
        """The RCS instance every other keystore is compared with: configured, or the primary's first."""
        if self.keystore_check.reference:
            return self.keystore_check.reference
        primary_rcs = self.primary.rcs
        return primary_rcs[0].name if primary_rcs else None


class _KeyError(ValueError):
    """A cross-field error that knows which key it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


# --- loading -----------------------------------------------------------------------------------------


def _format_loc(loc: tuple[str | int, ...] | list[str | int]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


_FIXES = {
    "extra_forbidden": "remove it or check its spelling against include/config/topology.yaml",
    "missing": "add this key",
    "greater_than_equal": "raise the value",
    "too_short": "add at least one entry",
    "literal_error": "use one of the values named",
}


def _describe(error: Any) -> str:
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    fix = _FIXES.get(error["type"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{message}; fix: {fix}" if fix else message


def _expand_env(
    value: Any, loc: tuple[str | int, ...], source: str, used: dict[str, str | None] | None = None
) -> Any:
    """Replace ``${GIR_*}`` references; ``used`` collects each variable read and its value (or None)."""
    used = {} if used is None else used
    if isinstance(value, dict):
        return {key: _expand_env(item, (*loc, key), source, used) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, (*loc, index), source, used) for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if not name.startswith(ENV_PREFIX):
            raise TopologyError(
                f"{source}: {_format_loc(loc)}: ${{{name}}} is not allowed: only {ENV_PREFIX}* environment "
                "variables are expanded in a topology, because others may hold secrets (AIRFLOW_CONN_* "
                f"holds a connection with its password); fix: put the value in a {ENV_PREFIX}* variable "
                "or write it out"
            )
        used[name] = os.environ.get(name)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise TopologyError(
            f"{source}: {_format_loc(loc)}: environment variable {name} is not set; "
            f"set it or write ${{{name}:-default}}"
        )

    return _ENV_REF.sub(replace, value)


class _YamlRefused(ValueError):
    """YAML that parses but that a topology refuses; the message names the key path and the line(s)."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(loader: Any, root: yaml.Node) -> None:
    """Refuse aliases, merge keys and duplicate keys in the composed YAML, before anything is built.

    Composing never expands an alias (it is the anchored node again), so this walk costs one step per
    node written in the file, however large the document would become once constructed. It runs in
    document order, so the first sight of a node is its anchor and the second is an alias.
    """
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen:
            raise _YamlRefused(
                f"{_format_loc(loc)}: a YAML alias (*name) repeats the value anchored on line "
                f"{node.start_mark.line + 1}; aliases are not allowed in a topology (a few nested aliases "
                "make a file of a few hundred bytes expand to gigabytes); fix: write the value out"
            )
        seen.add(id(node))
        children: list[tuple[yaml.Node, tuple[str | int, ...]]] = []
        if isinstance(node, yaml.MappingNode):
            first_mark: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                mark = key_node.start_mark
                line = mark.line + 1
                if key_node.tag == _MERGE_TAG:
                    raise _YamlRefused(
                        f"{_format_loc(loc)}: line {line}: YAML merge keys (<<) are not allowed in a "
                        "topology; fix: write the keys out"
                    )
                if not isinstance(key_node, yaml.ScalarNode) or id(key_node) in seen:
                    raise _YamlRefused(
                        f"{_format_loc(loc)}: line {line}: a key must be a plain name, not a list, a "
                        "mapping or an alias; fix: write the key as text"
                    )
                seen.add(id(key_node))
                key = loader.construct_object(key_node)
                if key in first_mark:
                    where = _format_loc(loc)
                    first = first_mark[key]
                    lines = f"on line {first.line + 1} and again on line {line}"
                    if first.line == mark.line:
                        lines += f" (columns {first.column + 1} and {mark.column + 1})"
                    raise _YamlRefused(
                        f"duplicate key {key!r} in {'the top level' if where == '(top level)' else where}: "
                        f"{lines}; YAML would silently keep only the last one; fix: remove one of them or "
                        "merge them"
                    )
                first_mark[key] = mark
                children.append((value_node, (*loc, key if isinstance(key, str | int) else str(key))))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, (*loc, index)) for index, item in enumerate(node.value)]
        stack.extend(reversed(children))


_BaseSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TopologyLoader(_BaseSafeLoader):
    """libyaml's safe loader (the topology is parsed on every DAG file parse) with three refusals.

    * **Aliases** (``*name``): constructing nested aliases is exponential (an "alias bomb": 434 bytes
      took 10 s and 650 MiB). A topology has no repeated block worth that risk, so any alias, and the
      merge key ``<<`` that needs one, is refused before anything is constructed. An anchor (``&name``)
      that nothing refers to changes nothing and is left alone.
    * **Duplicate keys**: PyYAML keeps the last one silently, so a second ``data_centers`` would replace
      the first (and its DAGs would vanish). Refused, naming the key and both lines.
    * **Non-scalar keys**: a topology's keys are names.
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_nodes(self, node)
        return self.construct_document(node)


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    """Validate topology YAML text; every error names ``source``, the key path and the fix."""
    return _parse(text, source)[0]


def _parse(text: str, source: str) -> tuple[Topology, dict[str, str | None]]:
    """The topology, and the GIR_* variables its ``${...}`` read (name -> value, None when unset)."""
    try:
        raw = yaml.load(text, Loader=TopologyLoader)  # noqa: S506 (a safe loader)
    except _YamlRefused as exc:
        raise TopologyError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(f"{source}: not valid YAML: {where}{problem}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise TopologyError(
            f"{source}: not a topology: expected a YAML mapping with primary_site and data_centers, "
            f"got {type(raw).__name__}"
        )
    used: dict[str, str | None] = {}
    raw = _expand_env(raw, (), source, used)
    try:
        return Topology.model_validate(raw), used
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            ctx_error = (error.get("ctx") or {}).get("error")
            if isinstance(ctx_error, _KeyError):
                problems.append(f"{_format_loc(ctx_error.loc)}: {ctx_error.message}")
            else:
                problems.append(f"{_format_loc(error['loc'])}: {_describe(error)}")
        raise TopologyError(f"{source}: invalid topology:\n  " + "\n  ".join(problems)) from None


def demo_mode() -> bool:
    """True when this process belongs to the demo (``GIR_DEMO=1``): the bundled topology may be used."""
    return os.environ.get(DEMO_ENV_VAR, "").strip() == "1"


def topology_path() -> Path:
    """$GIR_TOPOLOGY; the bundled demo topology only in the demo (``GIR_DEMO=1``), else an error."""
    configured = os.environ.get(TOPOLOGY_ENV_VAR, "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    if not demo_mode():
        raise TopologyError(
            f"{TOPOLOGY_ENV_VAR} is not set: set it to your deployment's topology file in the environment "
            f"of every Airflow component (scheduler, dag-processor, workers, triggerer, API server). The "
            f"bundled {DEFAULT_TOPOLOGY_PATH} describes the simulator and is used without "
            f"{TOPOLOGY_ENV_VAR} only by the demo ({DEMO_ENV_VAR}=1, which `make run` sets)"
        )
    return DEFAULT_TOPOLOGY_PATH


def is_bundled_topology(path: str | Path, text: str | None = None) -> bool:
    """The file in use is the bundled demo topology: the same path, or a copy with the same bytes."""
    resolved = Path(path).expanduser().resolve()
    if resolved == DEFAULT_TOPOLOGY_PATH:
        return True
    try:
        bundled = DEFAULT_TOPOLOGY_PATH.read_text(encoding="utf-8")
    except OSError:
        return False
    if text is None:
        try:
            text = resolved.read_text(encoding="utf-8")
        except OSError:
            return False
    return text == bundled


def load_topology(path: str | Path | None = None) -> Topology:
    """Load and validate the topology named by ``path`` or $GIR_TOPOLOGY (the bundled one only in the demo).

    Cached on what the result depends on: the file's content (read again on every call: a few KiB, so an
    edit is picked up even when size and mtime stay the same) and the values of the GIR_* variables its
    ``${...}`` read. A changed variable or file is parsed again; the cache never serves a stale topology.
    """
    resolved = Path(path).expanduser().resolve() if path else topology_path()
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(
            f"{resolved}: topology file not found; set {TOPOLOGY_ENV_VAR} to your topology file"
        ) from None
    source = str(resolved)
    cached = _CACHE.get(source)
    if cached is not None:
        cached_text, used, topology = cached
        if cached_text == text and all(os.environ.get(name) == value for name, value in used):
            return topology
    topology, read = _parse(text, source)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[source] = (text, tuple(read.items()), topology)
    return topology


# path -> (the text parsed, the GIR_* variables read with their values, the topology)
_CACHE: dict[str, tuple[str, tuple[tuple[str, str | None], ...], Topology]] = {}
_CACHE_SIZE = 16
