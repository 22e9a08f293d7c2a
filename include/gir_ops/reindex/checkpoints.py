"""Where a pair's progress survives a failed try, so a retry never re-sends (or re-purges) what succeeded.

The store must outlive the task try: an Airflow Variable. XComs would not do: Airflow deletes a task's own
XComs when a new try starts (``xcom_keys_to_clear`` in the execution API's ``ti_run``). The checkpoint is
deleted when the pair completes, so clearing a *successful* task re-sends everything on purpose.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from include.gir_ops.reindex.plan import ReindexPair
from include.gir_ops.reindex.windows import ReindexWindow
from include.gir_ops.shared import format_utc

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "gir_es_reindex_checkpoint"
# How often a pair's progress is written while all goes well (it is always written on the way out).
CHECKPOINT_FLUSH_SECONDS = 2.0
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


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


def checkpoint_identity(pair: ReindexPair, *, dag_id: str, run_id: str) -> dict[str, Any]:
    """What a checkpoint must match to apply: this run, this pair, the exact planned windows."""
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "contact_center_id": pair.contact_center_id,
        "kind": pair.kind,
        "plan": pair.fingerprint(),
    }


def windows_done(store: CheckpointStore, key: str, identity: dict[str, Any], *, total: int) -> int:
    """How many windows an earlier try of this run sent; 0 without a checkpoint of this very plan."""
    checkpoint = store.load(key)
    if checkpoint is None:
        return 0
    if any(checkpoint.get(name) != value for name, value in identity.items()):
        log.warning(
            "Checkpoint %s belongs to another plan (%s); ignoring it and sending every window",
            key,
            {name: checkpoint.get(name) for name in identity},
        )
        return 0
    done = checkpoint.get("windows_done")
    if not isinstance(done, int) or not 0 <= done <= total:
        log.warning("Checkpoint %s is unreadable (%r); sending every window", key, checkpoint)
        return 0
    return done


class Progress:
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
