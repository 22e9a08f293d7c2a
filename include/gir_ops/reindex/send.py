"""Sending a pair's windows, in order, one ``forceIndex`` POST each, safely.

Through ``RwsClient`` (which checks HTTP status and ``statusCode`` and retries what can heal). Two rules
make it safe:

* ``purgeOld`` deletes the whole index of the contact center and kind. It is sent only when a manual
  run asks for it, only with the first window of the pair, and the pair's other windows go only after
  that POST succeeded; otherwise only the last window would stay indexed.
* A retry after a partial failure must not resend what succeeded (nor purge again, which would throw
  away the windows re-indexed since): the pair's progress is checkpointed as it goes, and always before
  the task exits (``checkpoints``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from include.gir_ops.reindex.checkpoints import (
    CHECKPOINT_FLUSH_SECONDS,
    CheckpointStore,
    Progress,
    checkpoint_identity,
    checkpoint_key,
    windows_done,
)
from include.gir_ops.reindex.plan import ReindexPair
from include.gir_ops.reindex.windows import ReindexWindow
from include.gir_ops.rws import IDEMPOTENT, RetryPolicy, RwsClient, RwsError, RwsPartialSuccess
from include.gir_ops.shared import format_utc

log = logging.getLogger(__name__)

# forceIndex is idempotent (it re-indexes the same hours), so any transient failure may be resent.
# A module attribute so tests can shorten the backoff of runs executed in-process.
RETRY_POLICY: RetryPolicy = IDEMPOTENT


class ReindexWindowFailed(Exception):
    """A window of a pair failed: the RWS error plus where the pair stands and what a retry will do.

    ``retryable`` is the RWS error's: ``shared.fail_without_retry`` lets Airflow retry only what can heal.
    """

    def __init__(self, message: str, *, retryable: bool, rws_error: RwsError) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.rws_error = rws_error


def failure_message(
    exc: RwsError, pair: ReindexPair, windows: list[ReindexWindow], index: int, resumed_at: int
) -> str:
    """The RWS error, then where the pair stands and what a retry will do."""
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
    identity = checkpoint_identity(pair, dag_id=dag_id, run_id=run_id)
    done = windows_done(checkpoints, key, identity, total=len(windows))
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
    progress = Progress(
        checkpoints,
        key,
        identity,
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
                    failure_message(exc, pair, windows, index, resumed_at),
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
