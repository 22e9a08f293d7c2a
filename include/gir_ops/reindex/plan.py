"""Planning a re-index run: which range, which contact centers and kinds, as one pair per mapped task.

A run (its data interval, or a manual run's ``from``/``to``) and the DC's topology become one
``ReindexPair`` per (contact center, kind); each pair is one mapped Airflow task, so the UI shows per
contact center and kind what succeeded, and a 400-day range is 6 mapped tasks, not 2,400. Params are
checked here, before RWS is asked anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from include.gir_ops.params import is_contact_center_id
from include.gir_ops.reindex.windows import (
    ReindexWindow,
    WindowError,
    from_ms,
    last_schedule_period,
    manual_range,
    plain_utc,
    split_windows,
    to_ms,
)
from include.gir_ops.shared import CONTACT_CENTER_ID_FORMS, format_utc
from include.gir_ops.topology import REINDEX_KINDS, DataCenter

log = logging.getLogger(__name__)

MANUAL_RUN = "manual"


class ReindexParamError(ValueError):
    """The run's params cannot be honoured; the message names the param and the fix.

    Never retryable: the same params give the same refusal (``shared.fail_without_retry`` fails the task
    at once).
    """

    retryable = False


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
                "param 'contact_centers' must be a list of contact center IDs, each "
                f"{CONTACT_CENTER_ID_FORMS}; got {contact_centers!r}; fix: e.g. "
                '["625a5cf1-dea8-4e46-b18b-831d4b254488"], or [] for all of the DC\'s contact centers'
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


# --- pairs -------------------------------------------------------------------------------------------


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


# --- planning ----------------------------------------------------------------------------------------


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
    return plain_utc(data_interval_start), plain_utc(data_interval_end)


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
        # The same digits with or without dashes are still different IDs in a URL path: say which one RWS
        # knows rather than guess.
        compact = {cc.replace("-", ""): cc for cc in known}
        hints = [
            f"{cc} is written {compact[cc.replace('-', '')]} there"
            for cc in unknown
            if cc.replace("-", "") in compact
        ]
        raise ReindexParamError(
            f"param 'contact_centers': {', '.join(unknown)} is not a contact center of {dc.site} "
            f"(known from {source}: {', '.join(known)}); use one of those, or [] for all"
            + (f" ({'; '.join(hints)})" if hints else "")
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
    """One pair per (contact center, kind) to re-index; params are checked before RWS is asked.

    A DC without ``reindex.enabled`` has a DAG the scheduler never runs (``timetable.
    ManualAndBackfillOnlyTimetable``): its backfill and manual runs get the cron intervals of
    ``reindex.schedule`` like a scheduled DAG's. A run whose data interval is a single instant (created
    while such DAGs had ``schedule=None``, Airflow's ``NullTimetable``, and cleared since) re-indexes the
    latest complete period of ``reindex.schedule`` before that instant (or before now).
    """
    parsed = ReindexParams.from_mapping(params)
    now = now or datetime.now(UTC)
    if not dc.reindex.enabled and data_interval_start == data_interval_end:
        moment = min(data_interval_end or now, now)
        data_interval_start, data_interval_end = last_schedule_period(
            dc.reindex.schedule, dc.timezone, moment
        )
    start, end = reindex_range(
        run_type=run_type,
        data_interval_start=data_interval_start,
        data_interval_end=data_interval_end,
        params=parsed,
        now=now,
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
