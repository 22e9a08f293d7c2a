"""Demo data for the GIR simulator: SpeechMiner daily index backups and RCS keystores on local disk.

The shipping and keystore-check DAGs read real files, so the simulator has to write real files: backup
folders with awkward contents (empty files, non-ASCII names, large files) and genuine PKCS12 keystores
that ``cryptography`` and ``openssl`` can open. Everything here is plain Python (no Airflow import), so
``make run``, tests and benchmarks can call it directly or through the CLI::

    GIR_RCS_KEYSTORE_PASSWORD=... python -m include.gir_sim.demo_data --topology PATH

Backup bytes are reproducible from a seed; keystores are built once per run and copied, because PKCS12
serialization salts (and ECDSA signatures) are random and two builds never match byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from include.gir_ops.shared import KEYSTORE_PASSWORD_ENV
from include.gir_ops.topology import Topology, TopologyError, load_topology

if TYPE_CHECKING:  # cryptography is imported where a keystore is built or read: the backup generator
    # (and the shipping benchmark's process, for DEFAULT_READY_MARKER) never pays for it
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12

# --- SpeechMiner daily index backup ------------------------------------------------------------------

DEFAULT_READY_MARKER = "_BACKUP_COMPLETE"
DEFAULT_BACKUP_BYTES = 2 * 1024 * 1024
DEFAULT_BACKUP_FILES = 12
BACKUP_FOLDER_PREFIX = "index-"
# SpeechMiner's backup window: files of day D look written at D 02:00 UTC, one second apart.
BACKUP_HOUR_UTC = 2

EMPTY_FILE = "meta/deletions.log"  # nothing deleted that day: a legitimately empty file
TINY_FILE = "meta/VERSION"  # a few bytes
NON_ASCII_FILE = "meta/índice-ñ.idx"  # non-ASCII name, to catch encoding bugs in copy and verify
_FIXED_FILES = (EMPTY_FILE, TINY_FILE, NON_ASCII_FILE)
_TINY_BYTES = 7
_SEGMENT_SHARDS = 4
_CHUNK_BYTES = 1024 * 1024
# Sizes after the fixed files grow geometrically across about six orders of magnitude.
_SIZE_SPAN = 1e6


def backup_folder_name(day: date) -> str:
    """The folder SpeechMiner writes the backup of ``day`` to: ``index-YYYY-MM-DD``."""
    return f"{BACKUP_FOLDER_PREFIX}{day.isoformat()}"


def local_path(url: str) -> Path:
    """The local path of a ``file://`` topology URL; the simulator writes local folders only."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "file":
        raise ValueError(f"{url!r} is not a file:// URL; the simulator only writes local folders")
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/"):
        raise ValueError(f"{url!r} does not name an absolute path; write it as file:///absolute/path")
    return Path(rest)


def size_profile(total_bytes: int, files: int) -> list[int]:
    """Deterministic file sizes summing exactly to ``total_bytes``: one empty, one tiny, then bytes to MBs.

    Real index backups mix empty marker files, small metadata and a few huge segments; a copy or
    checksum bug usually shows at one of those extremes, so the profile always contains all of them.
    """
    if files < 1:
        raise ValueError(f"files must be at least 1, got {files}")
    if total_bytes < 0:
        raise ValueError(f"total_bytes must not be negative, got {total_bytes}")
    if files == 1:
        return [total_bytes]
    sizes = [0]
    remaining = total_bytes
    tiny = min(_TINY_BYTES, remaining) if files > 2 else remaining
    sizes.append(tiny)
    remaining -= tiny
    growing = files - 2
    if growing == 0:
        return sizes
    # Geometric weights from 1 to _SIZE_SPAN: the largest files get hundreds of MB for a GiB-sized total.
    ratio = _SIZE_SPAN ** (1 / (growing - 1)) if growing > 1 else 1.0
    weights = [ratio**index for index in range(growing)]
    scale = remaining / sum(weights)
    grown = [int(weight * scale) for weight in weights]
    grown[-1] += remaining - sum(grown)  # rounding leftovers go to the largest file
    return sizes + grown


def _backup_layout(total_bytes: int, files: int) -> list[tuple[str, int]]:
    """Relative POSIX path and size of every file in a backup, in write order."""
    if files < len(_FIXED_FILES):
        raise ValueError(
            f"files_per_backup must be at least {len(_FIXED_FILES)} (an empty file, a tiny file and a "
            f"non-ASCII name), got {files}"
        )
    sizes = size_profile(total_bytes, files)
    names = list(_FIXED_FILES)
    for index in range(files - len(_FIXED_FILES)):
        names.append(f"segments/shard-{index % _SEGMENT_SHARDS}/seg-{index:05d}.dat")
    return list(zip(names, sizes, strict=True))


def _content_chunks(seed: int, day: date, relpath: str, size: int) -> Iterator[bytes]:
    """Pseudo-random bytes fixed by (seed, day, path), in chunks so a multi-GB file never sits in memory."""
    # A str seed is hashed with SHA-512 by random.Random, so it does not depend on PYTHONHASHSEED.
    rng = random.Random(f"gir-index-backup:{seed}:{day.isoformat()}:{relpath}")  # noqa: S311 - test data
    left = size
    while left > 0:
        step = min(_CHUNK_BYTES, left)
        yield rng.randbytes(step)
        left -= step


def _write_file(path: Path, chunks: Iterator[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for chunk in chunks:
            handle.write(chunk)


def _backup_timestamp(day: date, now: datetime, steps: int) -> float:
    """Start of the day's backup window, moved back when that is not yet ``steps`` seconds in the past."""
    start = datetime.combine(day, time(BACKUP_HOUR_UTC), tzinfo=UTC)
    latest = now - timedelta(seconds=steps + 1)
    return min(start, latest).timestamp()


def _existing_files(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file()
    }


def _is_complete(folder: Path, layout: list[tuple[str, int]], ready_marker: str | None) -> bool:
    if not folder.is_dir():
        return False
    if ready_marker is not None:
        return (folder / ready_marker).is_file()
    return _existing_files(folder) == dict(layout)


def generate_index_backups(
    root: Path,
    *,
    days: int = 3,
    end_day: date | None = None,
    total_bytes_per_backup: int = DEFAULT_BACKUP_BYTES,
    files_per_backup: int = DEFAULT_BACKUP_FILES,
    ready_marker: str | None = DEFAULT_READY_MARKER,
    seed: int = 0,
) -> list[Path]:
    """Write ``days`` complete SpeechMiner daily backups ending at ``end_day`` (today UTC); oldest first.

    Each folder gets the same layout (see ``size_profile``), content fixed by ``seed`` so reruns write the
    same bytes, mtimes at that day's backup window so older days look older, and ``ready_marker`` last,
    as SpeechMiner does. A complete folder (marker present, or without a marker the same files and sizes)
    is left untouched; an incomplete one is finished.
    """
    if days < 0:
        raise ValueError(f"days must not be negative, got {days}")
    end_day = end_day or datetime.now(UTC).date()
    layout = _backup_layout(total_bytes_per_backup, files_per_backup)
    now = datetime.now(UTC)
    folders = []
    for offset in range(days - 1, -1, -1):
        day = end_day - timedelta(days=offset)
        folder = Path(root) / backup_folder_name(day)
        folders.append(folder)
        if _is_complete(folder, layout, ready_marker):
            continue
        _complete_backup(folder, day, layout, ready_marker=ready_marker, seed=seed, now=now)
    return folders


def _complete_backup(
    folder: Path,
    day: date,
    layout: list[tuple[str, int]],
    *,
    ready_marker: str | None,
    seed: int,
    now: datetime,
) -> None:
    existing = _existing_files(folder) if folder.is_dir() else {}
    start = _backup_timestamp(day, now, len(layout) + 1)
    for index, (relpath, size) in enumerate(layout):
        path = folder / relpath
        if existing.get(relpath) != size:
            _write_file(path, _content_chunks(seed, day, relpath, size))
        os.utime(path, (start + index, start + index))
    finished = start + len(layout)
    if ready_marker is not None:
        marker = folder / ready_marker
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(b"")
        os.utime(marker, (finished, finished))
    # Folders last: writing files above bumped their mtimes.
    for directory in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        os.utime(directory, (finished, finished))
    os.utime(folder, (finished, finished))


def write_incomplete_backup(
    root: Path,
    day: date,
    *,
    total_bytes: int = DEFAULT_BACKUP_BYTES,
    files: int = DEFAULT_BACKUP_FILES,
    written_files: int | None = None,
    ready_marker: str | None = DEFAULT_READY_MARKER,
    seed: int = 0,
) -> Path:
    """Write the backup of ``day`` as SpeechMiner leaves it mid-write: no marker, some files, one truncated.

    The first ``written_files`` files of the layout (default half) are written; the last of them only to
    half its size, and mtimes are left at now, so a quiet-period check sees a folder still changing.
    A stale ``ready_marker`` is removed. ``generate_index_backups`` with the same sizes and seed finishes it.
    """
    layout = _backup_layout(total_bytes, files)
    count = len(layout) // 2 if written_files is None else written_files
    if not 0 <= count <= len(layout):
        raise ValueError(f"written_files must be between 0 and {len(layout)}, got {written_files}")
    folder = Path(root) / backup_folder_name(day)
    folder.mkdir(parents=True, exist_ok=True)
    if ready_marker is not None:
        (folder / ready_marker).unlink(missing_ok=True)
    for index, (relpath, size) in enumerate(layout[:count]):
        part = size // 2 if index == count - 1 and size > 1 else size
        chunks = _content_chunks(seed, day, relpath, size)
        _write_file(folder / relpath, _truncated(chunks, part))
    return folder


def _truncated(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    left = limit
    for chunk in chunks:
        if left <= 0:
            return
        yield chunk[:left]
        left -= len(chunk)


# --- RCS keystores -----------------------------------------------------------------------------------

CURRENT_ALIAS = "gir-recording-2026"  # the key RCS encrypts new recordings with
EXPIRED_ALIAS = "gir-recording-2025"  # expired certificate kept so old recordings still decrypt
EXPIRING_ALIAS = "gir-recording-expiring"  # only with expiring_in_days: expires soon
DRIFT_ALIAS = "gir-recording-2026b"  # replaces CURRENT_ALIAS in a drifted keystore

_KEY_SEEDS = {CURRENT_ALIAS: 2026, EXPIRED_ALIAS: 2025, EXPIRING_ALIAS: 2027, DRIFT_ALIAS: 20262}


@dataclass(frozen=True)
class KeystoreAlias:
    """One entry of a keystore as a replication check sees it."""

    alias: str
    has_private_key: bool
    sha256_fingerprint: str
    not_valid_after_utc: datetime


def _alias_key(alias: str) -> ec.EllipticCurvePrivateKey:
    """A fixed SECP256R1 key per alias, so a certificate's public key is stable across generations."""
    from cryptography.hazmat.primitives.asymmetric import ec

    digest = hashlib.sha256(f"gir-rcs-simulator:{_KEY_SEEDS[alias]}".encode()).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big") % (2**255), ec.SECP256R1())


def _certificate(alias: str, not_before: datetime, not_after: datetime) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _alias_key(alias)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Genesys Interaction Recording (simulator)"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"GIR Recording Crypto Server {alias}"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _encryption(password: str) -> serialization.KeySerializationEncryption:
    from cryptography.hazmat.primitives import serialization

    return serialization.BestAvailableEncryption(password.encode("utf-8"))


def _serialize(
    key_alias: str,
    key_cert: x509.Certificate,
    others: Sequence[pkcs12.PKCS12Certificate],
    password: str,
) -> bytes:
    from cryptography.hazmat.primitives.serialization import pkcs12

    return pkcs12.serialize_key_and_certificates(
        key_alias.encode(), _alias_key(key_alias), key_cert, list(others), _encryption(password)
    )


def _build_keystores(password: str, expiring_in_days: int | None, now: datetime) -> tuple[bytes, bytes]:
    """The replicated keystore and its drifted variant, sharing every entry except the current key.

    ``cryptography`` stores one private key per PKCS12: the current key (with its certificate) is the
    key entry; the expired and expiring certificates are extra certificates with friendly names.
    """
    from cryptography.hazmat.primitives.serialization import pkcs12

    others = [
        pkcs12.PKCS12Certificate(
            _certificate(EXPIRED_ALIAS, now - timedelta(days=400), now - timedelta(days=30)),
            EXPIRED_ALIAS.encode(),
        )
    ]
    if expiring_in_days is not None:
        expiring = _certificate(
            EXPIRING_ALIAS, now - timedelta(days=365), now + timedelta(days=expiring_in_days)
        )
        others.append(pkcs12.PKCS12Certificate(expiring, EXPIRING_ALIAS.encode()))
    valid_from, valid_to = now - timedelta(days=1), now + timedelta(days=365)
    reference = _serialize(CURRENT_ALIAS, _certificate(CURRENT_ALIAS, valid_from, valid_to), others, password)
    drifted = _serialize(DRIFT_ALIAS, _certificate(DRIFT_ALIAS, valid_from, valid_to), others, password)
    return reference, drifted


def _fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def read_keystore_aliases(data: bytes | Path, password: str) -> dict[str, KeystoreAlias]:
    """Every alias of a PKCS12 keystore with fingerprint and expiry; ValueError on a wrong password."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    raw = data.read_bytes() if isinstance(data, Path) else data
    store = pkcs12.load_pkcs12(raw, password.encode("utf-8"))
    entries: dict[str, KeystoreAlias] = {}
    certs = [(store.cert, store.key is not None)] if store.cert is not None else []
    certs += [(extra, False) for extra in store.additional_certs]
    for entry, has_key in certs:
        alias = (entry.friendly_name or b"").decode("utf-8", "replace")
        entries[alias] = KeystoreAlias(
            alias=alias,
            has_private_key=has_key,
            sha256_fingerprint=_fingerprint(entry.certificate),
            not_valid_after_utc=entry.certificate.not_valid_after_utc,
        )
    return entries


def _expected_aliases(drifted: bool, expiring: bool) -> set[str]:
    aliases = {DRIFT_ALIAS if drifted else CURRENT_ALIAS, EXPIRED_ALIAS}
    if expiring:
        aliases.add(EXPIRING_ALIAS)
    return aliases


def _store_matches(
    path: Path, password: str, drifted: bool, expiring_in_days: int | None, now: datetime
) -> bool:
    try:
        aliases = read_keystore_aliases(path, password)
    except (OSError, ValueError):
        return False
    if set(aliases) != _expected_aliases(drifted, expiring_in_days is not None):
        return False
    if aliases[DRIFT_ALIAS if drifted else CURRENT_ALIAS].not_valid_after_utc <= now:
        return False
    if expiring_in_days is not None:
        wanted = now + timedelta(days=expiring_in_days)
        if abs(aliases[EXPIRING_ALIAS].not_valid_after_utc - wanted) > timedelta(days=1):
            return False
    return True


def _existing_set_matches(
    paths: dict[str, Path],
    drift: set[str],
    password: str,
    expiring_in_days: int | None,
    now: datetime,
) -> bool:
    """The keystores on disk already are what this call would write (same bytes where they should be)."""
    if not all(path.is_file() for path in paths.values()):
        return False
    for drifted in (False, True):
        group = [path for name, path in paths.items() if (name in drift) == drifted]
        if not group:
            continue
        if len({path.read_bytes() for path in group}) > 1:
            return False
        if not _store_matches(group[0], password, drifted, expiring_in_days, now):
            return False
    # The alias checks above already tell a drifted store from the reference one.
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace a keystore in one step, so a check never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def keystore_paths(topology: Topology) -> dict[str, Path]:
    """The local keystore file of every RCS instance in the topology, by instance name."""
    return {rcs.name: local_path(rcs.keystore) for _, rcs in topology.rcs_instances}


def generate_keystores(
    topology: Topology,
    password: str,
    *,
    drift: Collection[str] = (),
    expiring_in_days: int | None = None,
    now: datetime | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write one PKCS12 keystore per RCS instance: identical bytes everywhere except the ``drift`` ones.

    Aliases: ``CURRENT_ALIAS`` (private key + valid certificate), ``EXPIRED_ALIAS`` (expired certificate)
    and with ``expiring_in_days`` ``EXPIRING_ALIAS``. Drifted instances hold ``DRIFT_ALIAS`` instead of
    ``CURRENT_ALIAS``. An existing set that already matches is left alone unless ``force``.
    The password is only used to encrypt; it is never printed or logged.
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC)): certificates are in UTC")
    paths = keystore_paths(topology)
    drift_set = set(drift)
    unknown = sorted(drift_set - set(paths))
    if unknown:
        raise ValueError(f"unknown RCS instance(s) {unknown} in drift; use some of {sorted(paths)}")
    if not paths:
        return {}
    if not force and _existing_set_matches(paths, drift_set, password, expiring_in_days, now):
        return paths
    reference, drifted = _build_keystores(password, expiring_in_days, now)
    for name, path in paths.items():
        _write_atomically(path, drifted if name in drift_set else reference)
    return paths


def drift_keystore(topology: Topology, instance_name: str, password: str) -> Path:
    """Make one RCS instance's keystore drift: ``CURRENT_ALIAS`` replaced by ``DRIFT_ALIAS``.

    Every other entry of that keystore is kept, so a replication check reports exactly one alias missing
    and one added. A keystore that already drifted is left alone.
    """
    from cryptography.hazmat.primitives.serialization import pkcs12

    paths = keystore_paths(topology)
    if instance_name not in paths:
        raise ValueError(f"unknown RCS instance {instance_name!r}; use one of {sorted(paths)}")
    path = paths[instance_name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no keystore for {instance_name}; run generate_keystores first")
    store = pkcs12.load_pkcs12(path.read_bytes(), password.encode("utf-8"))
    if store.cert is not None and store.cert.friendly_name == DRIFT_ALIAS.encode():
        return path
    if store.cert is not None:
        valid_from = store.cert.certificate.not_valid_before_utc
        valid_to = store.cert.certificate.not_valid_after_utc
    else:
        valid_from = datetime.now(UTC) - timedelta(days=1)
        valid_to = valid_from + timedelta(days=366)
    others = [extra for extra in store.additional_certs if extra.friendly_name != DRIFT_ALIAS.encode()]
    data = _serialize(DRIFT_ALIAS, _certificate(DRIFT_ALIAS, valid_from, valid_to), others, password)
    _write_atomically(path, data)
    return path


# --- CLI ---------------------------------------------------------------------------------------------


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write YYYY-MM-DD") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m include.gir_sim.demo_data",
        description=(
            "Write the GIR simulator's demo data: SpeechMiner daily index backups of the shipping source "
            f"DC and one PKCS12 keystore per RCS instance. The keystore password is read from "
            f"${KEYSTORE_PASSWORD_ENV}."
        ),
    )
    parser.add_argument(
        "--topology",
        type=Path,
        default=None,
        help="topology YAML (default: $GIR_TOPOLOGY or the bundled one)",
    )
    parser.add_argument("--days", type=int, default=3, help="daily backups to write, ending today (3)")
    parser.add_argument("--end-day", type=_parse_day, default=None, help="newest backup day (today UTC)")
    parser.add_argument(
        "--backup-bytes", type=int, default=DEFAULT_BACKUP_BYTES, help="bytes per backup (2 MiB)"
    )
    parser.add_argument(
        "--backup-files", type=int, default=DEFAULT_BACKUP_FILES, help="files per backup (12)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the backup contents (0)")
    parser.add_argument(
        "--drift",
        nargs="+",
        action="extend",
        default=[],
        metavar="INSTANCE",
        help="RCS instances whose keystore differs from the others",
    )
    parser.add_argument(
        "--expiring-in-days", type=int, default=None, help=f"add alias {EXPIRING_ALIAS} expiring in N days"
    )
    parser.add_argument("--force", action="store_true", help="rewrite the keystores even if they match")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Generate backups and keystores for a topology and print where they are (never the password)."""
    args = _build_parser().parse_args(argv)
    password = os.environ.get(KEYSTORE_PASSWORD_ENV)
    if not password:
        print(
            f"error: {KEYSTORE_PASSWORD_ENV} is not set; export the RCS keystore password in it "
            "(the same one the gir_rcs_keystore connection holds)",
            file=sys.stderr,
        )
        return 2
    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # SpeechMiner writes no completion marker: only a topology that names one gets it written.
    marker = topology.shipping.ready_marker if topology.shipping is not None else None
    source = topology.site(topology.shipping.from_site) if topology.shipping is not None else topology.primary
    backup_root = source.speechminer.index_backup
    if topology.shipping is not None and topology.shipping.mode == "verify-in-place":
        # SpeechMiner (of the primary) writes its Daily Index Backup directly to the backup DC.
        backup_root = topology.shipping.destination
    try:
        if backup_root is None:
            print(f"{source.site}: no speechminer.index_backup in the topology; no backups written")
        else:
            root = local_path(backup_root)
            folders = generate_index_backups(
                root,
                days=args.days,
                end_day=args.end_day,
                total_bytes_per_backup=args.backup_bytes,
                files_per_backup=args.backup_files,
                ready_marker=marker,
                seed=args.seed,
            )
            print(f"{source.site} SpeechMiner index backups in {root}:")
            for folder in folders:
                files = _existing_files(folder)
                print(f"  {folder.name}: {len(files)} files, {_human(sum(files.values()))}")
        if topology.shipping is not None:
            # The backup DC's share, mounted and empty until the first shipping run fills it.
            local_path(topology.shipping.destination).mkdir(parents=True, exist_ok=True)
        keystores = generate_keystores(
            topology,
            password,
            drift=args.drift,
            expiring_in_days=args.expiring_in_days,
            force=args.force,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("RCS keystores:")
    if not keystores:
        print("  (no RCS instances in the topology)")
    drift = set(args.drift)
    for name, path in keystores.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        note = " (drifted)" if name in drift else ""
        print(f"  {name}: {path} {_human(path.stat().st_size)} sha256 {digest}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
