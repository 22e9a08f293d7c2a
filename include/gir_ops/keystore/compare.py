"""Comparing every keystore with the reference's: one state per instance, and a detail that says why.

A file is ``match`` only when its SHA-256 and size equal the reference's. Otherwise the detail says the
sizes and digest prefixes and, when both were opened, which aliases were added or are missing, which
certificates changed and which private keys are missing. Certificates that expire soon are warnings;
expired ones are kept for old recordings and only listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from include.gir_ops.keystore.java_keystores import SECRET_KEY
from include.gir_ops.keystore.model import (
    DRIFT,
    FINGERPRINT_PREFIX_HEX,
    MATCH,
    MISSING,
    NOT_COMPARED,
    UNREADABLE,
    CertificateInfo,
    InstanceResult,
    KeystoreReading,
    KeystoreTarget,
)
from include.gir_ops.keystore.report import KeystoreReport
from include.gir_ops.shared import format_size, iso_utc
from include.gir_ops.topology import DEFAULT_KEYSTORE_PARALLEL_READS

# Said whenever an instance holds an entry the reference lacks: replicating the reference over it would
# destroy a key, and recordings encrypted with it could never be played again.
DO_NOT_OVERWRITE = "do not overwrite: this instance holds a key the reference does not"


def _short(sha256: str | None) -> str:
    return f"{sha256[:FINGERPRINT_PREFIX_HEX]}…" if sha256 else "?"


def alias_diff(reference: KeystoreReading, reading: KeystoreReading) -> list[str]:
    ref = {c.alias: c for c in reference.certificates}
    here = {c.alias: c for c in reading.certificates}
    parts = []
    missing = sorted(set(ref) - set(here))
    added = sorted(set(here) - set(ref))
    if missing:
        parts.append(f"alias missing: {', '.join(missing)}")
    if added:
        parts.append(f"alias added: {', '.join(added)}")
    for alias in sorted(set(ref) & set(here)):
        a, b = ref[alias], here[alias]
        if a.entry_type != b.entry_type and SECRET_KEY in (a.entry_type, b.entry_type):
            parts.append(
                f"entry type changed: {alias} ({_entry_label(b)} here, {_entry_label(a)} on reference)"
            )
        elif a.sha256_fingerprint != b.sha256_fingerprint:
            parts.append(
                f"certificate changed: {alias} ({b.sha256_fingerprint[:11]}… here, "
                f"{a.sha256_fingerprint[:11]}… on reference)"
            )
        elif a.has_private_key and not b.has_private_key:
            parts.append(f"private key missing: {alias} (only its certificate is here)")
        elif b.has_private_key and not a.has_private_key:
            parts.append(f"private key added: {alias} (only its certificate is on reference)")
    return parts


def _entry_label(cert: CertificateInfo) -> str:
    return (cert.entry_type or "entry").replace("_", " ")


def _drift_detail(reference: KeystoreReading, reading: KeystoreReading) -> str:
    parts = [
        f"bytes differ (size {format_size(reading.size)} vs {format_size(reference.size)} on reference, "
        f"sha256 {_short(reading.sha256)} vs {_short(reference.sha256)})"
    ]
    if reading.opened and reference.opened:
        entries = alias_diff(reference, reading)
        if any(entry.startswith(("alias added", "private key added")) for entry in entries):
            entries.append(DO_NOT_OVERWRITE)
        parts += entries or [
            "same aliases, certificates and private keys (keystore re-exported rather than copied?)"
        ]
    elif not reading.opened:
        parts.append(f"aliases not compared: {reading.not_opened_reason or 'not opened'}")
    else:
        parts.append(f"aliases not compared: reference {reference.not_opened_reason or 'not opened'}")
    return "; ".join(parts)


def _match_detail(reading: KeystoreReading, is_reference: bool) -> str:
    head = "reference" if is_reference else "identical to reference"
    if reading.opened:
        expired = sum(c.expiry == "expired" for c in reading.certificates)
        expiring = sum(c.expiry == "expiring" for c in reading.certificates)
        keys = [c.alias for c in reading.certificates if c.has_private_key]
        secret = [c.alias for c in reading.certificates if c.entry_type == SECRET_KEY]
        extra = [f"{reading.format} {len(reading.certificates)} alias(es)"]
        extra.append(f"private key(s): {', '.join(keys)}" if keys else "no private key")
        if secret:
            extra.append(f"secret key(s): {', '.join(secret)}")
        if expired:
            extra.append(f"{expired} expired, kept for old recordings")
        if expiring:
            extra.append(f"{expiring} expiring soon")
        return f"{head}; {', '.join(extra)}"
    return f"{head}; not opened: {reading.not_opened_reason}"


def _certificate_notes(readings: Iterable[KeystoreReading]) -> tuple[list[str], list[str]]:
    """Expiring certificates (warnings) and expired ones kept for old recordings (information).

    Replicated keystores hold the same certificates, so each is listed once with the instances it is on.
    """
    by_cert: dict[tuple[str, str, str], tuple[CertificateInfo, list[str]]] = {}
    for reading in readings:
        for cert in reading.certificates:
            if cert.expiry not in ("expiring", "expired"):  # valid, or a secret key (no certificate)
                continue
            key = (cert.expiry, cert.alias, cert.sha256_fingerprint)
            by_cert.setdefault(key, (cert, []))[1].append(reading.target.instance)
    warnings, expired = [], []
    for (expiry, alias, fingerprint), (cert, instances) in sorted(by_cert.items()):
        on = ", ".join(instances)
        day = cert.not_valid_after[:10]
        if expiry == "expiring":
            warnings.append(
                f"certificate {alias} (sha256 {fingerprint[:11]}…) expires on {day} "
                f"(in {cert.days_left} day(s)) on {on}: renew it and replicate the keystore"
            )
        else:
            expired.append(
                f"certificate {alias} (sha256 {fingerprint[:11]}…) expired on {day}, "
                f"kept for old recordings, on {on}"
            )
    return warnings, expired


def compare_keystores(
    targets: Sequence[KeystoreTarget],
    readings: dict[str, KeystoreReading],
    reference: str | None,
    *,
    checked_at: datetime,
    password_problems: dict[str, str] | None = None,
    parallel_reads: int = DEFAULT_KEYSTORE_PARALLEL_READS,
    read_seconds: float = 0.0,
) -> KeystoreReport:
    """Give every instance exactly one state by comparing its file with the reference's."""
    ref_reading = readings.get(reference) if reference else None
    reference_error = None
    if reference is None:
        reference_error = (
            "no reference instance: the primary site has no RCS instance and keystore_check.reference "
            "is not set"
        )
    elif ref_reading is None:
        reference_error = f"reference instance {reference!r} is not among the RCS instances read"
    elif ref_reading.missing:
        reference_error = f"reference instance {reference} is missing ({ref_reading.error})"
    elif ref_reading.error:
        reference_error = f"reference instance {reference} is unreadable ({ref_reading.error})"

    results = []
    for target in targets:
        reading = readings[target.instance]
        if reading.missing:
            state, detail = MISSING, reading.error or "file does not exist"
        elif reading.error:
            state, detail = UNREADABLE, reading.error
        elif reference_error or ref_reading is None:
            state, detail = NOT_COMPARED, "nothing to compare against (see the reference)"
        elif reading.sha256 == ref_reading.sha256 and reading.size == ref_reading.size:
            state, detail = MATCH, _match_detail(reading, target.instance == reference)
        else:
            state, detail = DRIFT, _drift_detail(ref_reading, reading)
        results.append(
            InstanceResult(
                instance=target.instance,
                site=target.site,
                url=target.url,
                state=state,
                detail=detail,
                sha256=reading.sha256,
                fingerprint_prefix=reading.fingerprint_prefix,
                size=reading.size,
                format=reading.format,
                opened=reading.opened,
                certificates=list(reading.certificates),
            )
        )
    warnings, expired = _certificate_notes(readings[t.instance] for t in targets)
    warnings += [
        f"{problem}: keystores using it were compared by bytes only"
        for problem in (password_problems or {}).values()
    ]
    return KeystoreReport(
        checked_at=iso_utc(checked_at.replace(microsecond=0)) or "",
        reference=reference,
        reference_error=reference_error,
        results=results,
        warnings=warnings,
        expired_kept=expired,
        parallel_reads=parallel_reads,
        read_seconds=read_seconds,
    )
