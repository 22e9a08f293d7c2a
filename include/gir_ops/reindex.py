"""The Elasticsearch re-index of one DC: what to send (planning) and sending it safely.

Planning turns a run (its data interval, or a manual run's ``from``/``to``) and the DC's topology into
one ``ReindexPair`` per (contact center, kind); each pair is one mapped Airflow task, so the UI shows per
contact center and kind what succeeded, and a 400-day range is 6 mapped tasks, not 2,400.

Sending walks a pair's windows in order, one ``forceIndex`` POST each, through ``RwsClient`` (which
checks HTTP status and ``statusCode`` and retries what can heal). Two rules make it safe:

* ``purgeOld`` deletes the whole index of the contact center and kind. It is sent only when a manual
  run asks for it, only with the first window of the pair, and the pair's other windows go only after
  that POST succeeded; otherwise only the last window would stay indexed.
* A retry after a partial failure must not resend what succeeded (nor purge again, which would throw
  away the windows re-indexed since). The pair's progress is checkpointed as it goes, and always before
  the task exits, in a store that outlives the task try: an Airflow Variable. XComs would not do: Airflow
  deletes a task's own XComs when a new try starts (``xcom_keys_to_clear`` in the execution API's
  ``ti_run``). The checkpoint is deleted when the pair completes, so clearing a *successful* task re-sends
  everything on purpose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from include.gir_ops.params import is_contact_center_id
from include.gir_ops.rws import IDEMPOTENT, RetryPolicy, RwsClient, RwsError, RwsPartialSuccess
from include.gir_ops.topology import REINDEX_KINDS, DataCenter
from include.gir_ops.windows import (
    ReindexWindow,
    WindowError,
    as_utc,
    format_utc,
    from_ms,
    last_schedule_period,
    manual_range,
    split_windows,
    to_ms,
)

log = logging.getLogger(__name__)

MANUAL_RUN = "manual"
# forceIndex is idempotent (it re-indexes the same hours), so any transient failure may be resent.
# A module attribute so tests can shorten the backoff of runs executed in-process.
RETRY_POLICY: RetryPolicy = IDEMPOTENT
CHECKPOINT_PREFIX = "gir_es_reindex_checkpoint"
# How often a pair's progress is written while all goes well (it is always written on the way out).
CHECKPOINT_FLUSH_SECONDS = 2.0
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class ReindexParamError(ValueError):
    """The run's params cannot be honoured; the message names the param and the fix. Never retried."""


class ReindexWindowFailed(Exception):
    """A window of a pair failed: the RWS error plus where the pair stands and what a retry will do."""

    def __init__(self, message: str, *, retryable: bool, rws_error: RwsError) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.rws_error = rws_error


# --- params ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReindexParams:
    """A run's params, type-checked again here: the JSON schema guards the UI, not a hand-made conf."""

    from_value: str | None
    to_value: str | None
    contact_centers: tuple[str, ...]
    kinds: tuple[str, ...]
    purge_old: bool

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> ReindexParams:
        contact_centers = params.get("contact_centers") or []
        kinds = params.get("kinds") or []
        purge_old = params.get("purge_old", False)
        # The same check as the topology's and discovery's (params.is_contact_center_id): the ID goes
        # into the forceIndex URL path, and the form's JSON-schema pattern lets "9a4c\n" through.
        if not isinstance(contact_centers, list | tuple) or not all(
            is_contact_center_id(cc) for cc in contact_centers
        ):
            raise ReindexParamError(
                f"param 'contact_centers' must be a list of hexadecimal contact center IDs (1-64 hex "
                f'digits each), got {contact_centers!r}; e.g. ["9a4c1e3f0b"], or [] for all of the DC\'s '
                "contact centers"
            )
        if not isinstance(kinds, list | tuple) or not all(isinstance(k, str) for k in kinds):
            raise ReindexParamError(f"param 'kinds' must be a list of index kinds, got {kinds!r}")
        unknown = [kind for kind in kinds if kind not in REINDEX_KINDS]
        if unknown:
            raise ReindexParamError(
                f"param 'kinds': unknown index kind(s) {unknown}; use {list(REINDEX_KINDS)}, or [] for "
                "every kind the DC uses"
            )
        if not isinstance(purge_old, bool):
            raise ReindexParamError(f"param 'purge_old' must be true or false, got {purge_old!r}")
        return cls(
            from_value=params.get("from") or None,
            to_value=params.get("to") or None,
            contact_centers=tuple(dict.fromkeys(cc.lower() for cc in contact_centers)),
            kinds=tuple(kind for kind in REINDEX_KINDS if kind in kinds),
            purge_old=purge_old,
        )


# --- planning ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReindexPair:
    """Everything one mapped task needs to re-index one contact center's index of one kind."""

    site: str
    contact_center_id: str
    kind: str
    start_ms: int
    end_ms: int
    max_window_hours: int
    purge_old: bool = False

    @property
    def label(self) -> str:
        """The mapped task's name in the UI: which contact center and which index."""
        return f"{self.contact_center_id} {self.kind}"

    def windows(self) -> list[ReindexWindow]:
        return split_windows(from_ms(self.start_ms), from_ms(self.end_ms), self.max_window_hours)

    def fingerprint(self) -> str:
        """Identifies the exact windows and purge of this pair: a checkpoint only applies to the same."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "contact_center_id": self.contact_center_id,
            "kind": self.kind,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "max_window_hours": self.max_window_hours,
            "purge_old": self.purge_old,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReindexPair:
        return cls(
            site=str(data["site"]),
            contact_center_id=str(data["contact_center_id"]),
            kind=str(data["kind"]),
            start_ms=int(data["start_ms"]),
            end_ms=int(data["end_ms"]),
            max_window_hours=int(data["max_window_hours"]),
            purge_old=bool(data.get("purge_old", False)),
        )


def reindex_range(
    *,
    run_type: object,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    params: ReindexParams,
    now: datetime,
    latest_period: Callable[[datetime], tuple[datetime, datetime]] | None = None,
) -> tuple[datetime, datetime]:
    """The range a run re-indexes: a manual run's from/to, otherwise the run's own data interval.

    A run with no data interval (triggered without a logical date) takes ``latest_period(now)``.
    """
    run_type = str(getattr(run_type, "value", run_type))  # DagRunType or its value
    manual = run_type == MANUAL_RUN
    if not manual:
        if params.purge_old:
            raise ReindexParamError(
                f"param 'purge_old' is true on a {run_type} run: deleting the index is only allowed on a "
                "manual run that also gives 'from' and 'to'; remove purge_old from the run conf (a "
                "scheduled or backfill run only re-indexes its own data interval)"
            )
        if params.from_value or params.to_value:
            raise ReindexParamError(
                f"params 'from'/'to' are set on a {run_type} run: a scheduled or backfill run re-indexes "
                "its own data interval; remove them from the run conf, or trigger a manual run for a "
                "custom range"
            )
    if params.from_value or params.to_value:
        if not (params.from_value and params.to_value):
            missing = "to" if params.from_value else "from"
            raise ReindexParamError(
                f"param {missing!r} is missing: give both 'from' and 'to' for a custom range, or neither "
                "to re-index the run's data interval"
            )
        try:
            return manual_range(params.from_value, params.to_value, now=now)
        except WindowError as exc:
            raise ReindexParamError(str(exc)) from None
    if params.purge_old:
        raise ReindexParamError(
            "param 'purge_old' needs 'from' and 'to': purgeOld deletes the whole index of each contact "
            "center and kind before re-indexing, so give a range that covers every hour that must be "
            "indexed again"
        )
    if data_interval_start is None or data_interval_end is None:
        if latest_period is None:
            raise ReindexParamError(
                "this run has no data interval (it was triggered without a logical date): give params "
                "'from' and 'to', or trigger it with a logical date to re-index the schedule period "
                "ending there"
            )
        # Triggered without a logical date and without from/to: the latest complete schedule period.
        data_interval_start, data_interval_end = latest_period(now)
        log.info(
            "no logical date and no from/to: re-indexing the latest complete schedule period [%s, %s)",
            format_utc(data_interval_start),
            format_utc(data_interval_end),
        )
    if data_interval_end <= data_interval_start:
        raise ReindexParamError(
            f"the run's data interval [{format_utc(data_interval_start)}, {format_utc(data_interval_end)}) "
            "is empty: the DAG's schedule must be a CronDataIntervalTimetable, not a bare cron string"
        )
    return as_utc(data_interval_start), as_utc(data_interval_end)


def select_contact_centers(
    dc: DataCenter, requested: Sequence[str], discover: Callable[[], list[str]]
) -> list[str]:
    """The topology's contact centers, or RWS's list when the topology leaves it empty; then the subset."""
    known = list(dc.rws.contact_centers)
    source = "the topology"
    if not known:
        known = [cc.lower() for cc in discover()]
        source = f"RWS {dc.site} (GET /api/v2/ops/contact-centers)"
        log.info("Discovered %d contact center(s) of %s: %s", len(known), dc.site, ", ".join(known))
    if not known:
        raise ReindexParamError(
            f"{source} lists no contact center for {dc.site}: nothing to re-index; add "
            "rws.contact_centers to the topology or check the RWS configuration"
        )
    if not requested:
        return known
    unknown = [cc for cc in requested if cc not in known]
    if unknown:
        raise ReindexParamError(
            f"param 'contact_centers': {', '.join(unknown)} is not a contact center of {dc.site} "
            f"(known from {source}: {', '.join(known)}); use one of those, or [] for all"
        )
    return list(requested)


def plan_reindex(
    dc: DataCenter,
    *,
    run_type: object,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    params: Mapping[str, Any],
    discover_contact_centers: Callable[[], list[str]],
    now: datetime | None = None,
) -> list[ReindexPair]:
    """One pair per (contact center, kind) to re-index; params are checked before RWS is asked."""
    parsed = ReindexParams.from_mapping(params)
    start, end = reindex_range(
        run_type=run_type,
        data_interval_start=data_interval_start,
        data_interval_end=data_interval_end,
        params=parsed,
        now=now or datetime.now(UTC),
        latest_period=lambda moment: last_schedule_period(dc.reindex.schedule, dc.timezone, moment),
    )
    available = dc.reindex_kinds
    kinds = parsed.kinds or available
    not_enabled = [kind for kind in kinds if kind not in available]
    if not_enabled:
        raise ReindexParamError(
            f"param 'kinds': {', '.join(not_enabled)} is not used in {dc.site} (rws.screen_recording is "
            f"false in the topology); use {list(available)}"
        )
    contact_centers = select_contact_centers(dc, parsed.contact_centers, discover_contact_centers)
    pairs = [
        ReindexPair(
            site=dc.site,
            contact_center_id=cc,
            kind=kind,
            start_ms=to_ms(start),
            end_ms=to_ms(end),
            max_window_hours=dc.reindex.max_window_hours,
            purge_old=parsed.purge_old,
        )
        for cc in contact_centers
        for kind in kinds
    ]
    windows = pairs[0].windows()
    log.info(
        "%s: re-indexing [%s, %s) (widened to [%s, %s)) in %d window(s) of at most %dh, for %d contact "
        "center(s) x %s%s",
        dc.site,
        format_utc(start),
        format_utc(end),
        format_utc(windows[0].start),
        format_utc(windows[-1].end),
        len(windows),
        dc.reindex.max_window_hours,
        len(contact_centers),
        "/".join(kinds),
        "; purgeOld on the first window of each pair" if parsed.purge_old else "",
    )
    return pairs


# --- checkpoints -------------------------------------------------------------------------------------


class CheckpointStore(Protocol):
    """Somewhere that outlives a task try: load/save/delete a small JSON document by key."""

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, value: dict[str, Any]) -> None: ...

    def delete(self, key: str) -> None: ...


class VariableCheckpoints:
    """Airflow Variables through the Task SDK (the execution API): durable across tries and workers."""

    def load(self, key: str) -> dict[str, Any] | None:
        from airflow.sdk import Variable

        value = Variable.get(key, default=None, deserialize_json=True)
        return value if isinstance(value, dict) else None

    def save(self, key: str, value: dict[str, Any]) -> None:
        from airflow.sdk import Variable

        Variable.set(
            key,
            value,
            description="gir_es_reindex progress of a failed or running pair; deleted when the pair "
            "completes. Deleting it by hand makes the next try re-send the pair from its first window.",
            serialize_json=True,
        )

    def delete(self, key: str) -> None:
        from airflow.sdk import Variable

        Variable.delete(key)


def checkpoint_key(dag_id: str, run_id: str, contact_center_id: str, kind: str) -> str:
    """Readable in the Variables list; the raw ids are stored in the value and checked on load."""
    parts = (CHECKPOINT_PREFIX, dag_id, run_id, contact_center_id, kind)
    return "__".join(_UNSAFE_KEY_CHARS.sub("_", part) for part in parts)


# --- sending -----------------------------------------------------------------------------------------


def _windows_done(
    store: CheckpointStore, key: str, pair: ReindexPair, *, dag_id: str, run_id: str, total: int
) -> int:
    checkpoint = store.load(key)
    if checkpoint is None:
        return 0
    expected = {
        "dag_id": dag_id,
        "run_id": run_id,
        "contact_center_id": pair.contact_center_id,
        "kind": pair.kind,
        "plan": pair.fingerprint(),
    }
    if any(checkpoint.get(name) != value for name, value in expected.items()):
        log.warning(
            "Checkpoint %s belongs to another plan (%s); ignoring it and sending every window",
            key,
            {name: checkpoint.get(name) for name in expected},
        )
        return 0
    done = checkpoint.get("windows_done")
    if not isinstance(done, int) or not 0 <= done <= total:
        log.warning("Checkpoint %s is unreadable (%r); sending every window", key, checkpoint)
        return 0
    return done


def _failure_message(
    exc: RwsError, pair: ReindexPair, windows: list[ReindexWindow], index: int, resumed_at: int
) -> str:
    window = windows[index]
    lines = [str(exc)]
    if isinstance(exc, RwsPartialSuccess):
        lines.append(
            f"statusCode 7 (partial success) means RWS re-indexed only part of window {index + 1} "
            f"{window.label()}; it is not counted as done and a retry sends it again in full"
        )
    if pair.purge_old and index == 0:
        lines.append(
            "this was the purgeOld POST: the index may or may not have been deleted; the other "
            f"{len(windows) - 1} window(s) of {pair.label} were not sent, so that a retry purges first again"
        )
    elif index == 0:
        lines.append(f"no window of {pair.label} was re-indexed in this run yet")
    else:
        lines.append(
            f"windows 1-{index} of {len(windows)} of {pair.label} (up to {format_utc(window.start)}) are "
            f"re-indexed and checkpointed; a retry resumes at window {index + 1}"
        )
    if resumed_at:
        lines.append(f"(this try resumed after {resumed_at} window(s) sent by an earlier try)")
    return "\n".join(lines)


class _Progress:
    """A pair's checkpoint: written at most every ``flush_every`` seconds, and always before leaving.

    Every window that succeeded is in the store before ``send_pair`` exits, by success or by any
    exception (an RWS failure, a timeout or kill signal raised in the task). Only a hard kill (SIGKILL,
    a lost worker) can lose the last ``flush_every`` seconds of progress; those windows are then sent
    again, which is harmless (forceIndex is idempotent). The purge window is flushed at once, so a
    purge is never repeated after windows were indexed on top of it.
    """

    def __init__(
        self,
        store: CheckpointStore,
        key: str,
        identity: dict[str, Any],
        *,
        flush_every: float,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._key = key
        self._identity = identity
        self._flush_every = flush_every
        self._clock = clock
        self._last_flush = clock()
        self._pending: dict[str, Any] | None = None

    def window_done(self, done: int, total: int, window: ReindexWindow, *, flush_now: bool) -> None:
        self._pending = {
            **self._identity,
            "windows_done": done,
            "windows_total": total,
            "done_until": format_utc(window.end),
            "updated_at": format_utc(datetime.now(UTC).replace(microsecond=0)),
        }
        if flush_now or self._clock() - self._last_flush >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending is not None:
            self._store.save(self._key, self._pending)
            self._pending = None
            self._last_flush = self._clock()

    def flush_quietly(self) -> None:
        """On the way out with an error: save what succeeded, without hiding the original error."""
        try:
            self.flush()
        except Exception:
            log.exception(
                "Could not save checkpoint %s; a retry will re-send the windows since the last one saved",
                self._key,
            )


def send_pair(
    pair: ReindexPair,
    *,
    client: RwsClient,
    checkpoints: CheckpointStore,
    dag_id: str,
    run_id: str,
    flush_every_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Send the pair's windows in order, resuming after what an earlier try of this run already sent."""
    windows = pair.windows()
    key = checkpoint_key(dag_id, run_id, pair.contact_center_id, pair.kind)
    done = _windows_done(checkpoints, key, pair, dag_id=dag_id, run_id=run_id, total=len(windows))
    resumed_at = done
    if done:
        log.info(
            "%s: windows 1-%d of %d were sent by an earlier try of this run (checkpoint %s); resuming at "
            "window %d",
            pair.label,
            done,
            len(windows),
            key,
            done + 1,
        )
    progress = _Progress(
        checkpoints,
        key,
        {
            "dag_id": dag_id,
            "run_id": run_id,
            "contact_center_id": pair.contact_center_id,
            "kind": pair.kind,
            "plan": pair.fingerprint(),
        },
        flush_every=CHECKPOINT_FLUSH_SECONDS if flush_every_seconds is None else flush_every_seconds,
        clock=clock,
    )
    try:
        for index in range(done, len(windows)):
            window = windows[index]
            purge = pair.purge_old and index == 0
            what = (
                f"forceIndex of {pair.kind} for contact center {pair.contact_center_id}, window "
                f"{index + 1}/{len(windows)} {window.label()}"
                + (" with purgeOld (deletes the index first)" if purge else "")
            )
            try:
                answer = client.force_index(
                    pair.contact_center_id,
                    pair.kind,
                    window.from_ms,
                    window.to_ms,
                    purge_old=purge,
                    what=what,
                    policy=RETRY_POLICY,
                )
            except RwsError as exc:
                raise ReindexWindowFailed(
                    _failure_message(exc, pair, windows, index, resumed_at),
                    retryable=exc.retryable,
                    rws_error=exc,
                ) from exc
            progress.window_done(index + 1, len(windows), window, flush_now=purge)
            log.info(
                "%s: window %d/%d %s re-indexed%s (HTTP %s, %d attempt(s))",
                pair.label,
                index + 1,
                len(windows),
                window.label(),
                " after purging the index" if purge else "",
                answer.http_status,
                answer.attempts,
            )
    except BaseException:
        progress.flush_quietly()
        raise
    checkpoints.delete(key)
    return {
        "contact_center_id": pair.contact_center_id,
        "kind": pair.kind,
        "from": format_utc(windows[0].start),
        "to": format_utc(windows[-1].end),
        "windows": len(windows),
        "windows_sent": len(windows) - resumed_at,
        "windows_sent_by_earlier_tries": resumed_at,
        "purged_first": pair.purge_old,
    }


@contextlib.contextmanager
def fail_fast_unless_retryable() -> Iterator[None]:
    """Turn errors a retry cannot heal into AirflowFailException, so Airflow does not retry them."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except ReindexParamError as exc:
        raise AirflowFailException(str(exc)) from None
    except (RwsError, ReindexWindowFailed) as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from exc
