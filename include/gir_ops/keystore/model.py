"""What the check reads and reports, shared by its modules: the states, one keystore's reading, a row.

Only digests and metadata live in these records: never file bytes, key material, whole certificates or
passwords. Certificates are described by alias, SHA-256 fingerprint and expiry date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from include.gir_ops.topology import Topology

# Every instance ends in exactly one of these states.
MATCH = "match"  # the same bytes as the reference
# Other bytes; the detail says the sizes, digest prefixes and (when both were opened) which aliases were
# added or are missing, which certificates changed and which private keys are missing.
DRIFT = "drift"
MISSING = "missing"  # the file does not exist
# It exists but cannot be read or opened (permission denied, a directory, empty, truncated, corrupt, wrong
# password), or an open or read did not answer within keystore_check.read_timeout_seconds. Never drift.
UNREADABLE = "unreadable"
# Only when the reference itself is missing or unreadable, for instances that could be read.
NOT_COMPARED = "not_compared"

# How many hex digits of a file's SHA-256 the table and the details show.
FINGERPRINT_PREFIX_HEX = 12


@dataclass(frozen=True)
class KeystoreTarget:
    """One RCS instance's keystore as the topology names it."""

    instance: str
    site: str
    url: str
    password_conn_id: str | None = None


def targets_from_topology(topology: Topology) -> list[KeystoreTarget]:
    """Every RCS instance of every DC, in topology order (the report's row order)."""
    return [
        KeystoreTarget(rcs.name, dc.site, rcs.keystore, rcs.password_conn_id)
        for dc, rcs in topology.rcs_instances
    ]


@dataclass(frozen=True)
class CertificateInfo:
    """Metadata of one keystore entry: never the certificate itself, never the key."""

    alias: str
    has_private_key: bool
    sha256_fingerprint: str
    not_valid_after: str  # ISO-8601 UTC
    expiry: str  # "valid", "expiring" (within the warning window), "expired"; "none" for a secret key
    days_left: int
    # "private_key", "trusted_certificate" or "secret_key" (JCEKS; no certificate, never decrypted)
    entry_type: str = ""
    subject: str = ""  # the certificate's subject, in Java's order (as ``keytool -list -v`` shows it)


@dataclass
class KeystoreReading:
    """What reading one instance's keystore found. ``error`` set means missing or unreadable."""

    target: KeystoreTarget
    sha256: str | None = None
    size: int | None = None
    format: str | None = None
    missing: bool = False
    error: str | None = None
    opened: bool = False
    not_opened_reason: str | None = None
    certificates: list[CertificateInfo] = field(default_factory=list)
    read_seconds: float = 0.0

    @property
    def fingerprint_prefix(self) -> str:
        return self.sha256[:FINGERPRINT_PREFIX_HEX] if self.sha256 else "-"


@dataclass(frozen=True)
class InstanceResult:
    """One row of the report."""

    instance: str
    site: str
    url: str
    state: str
    detail: str
    sha256: str | None
    fingerprint_prefix: str
    size: int | None
    format: str | None
    opened: bool
    certificates: list[CertificateInfo]
