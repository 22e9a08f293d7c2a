"""Keep secrets out of every notification: passwords, connection URIs, keystore bytes.

A notification leaves the deployment (a chat channel, a mailbox, a pager), so it is scrubbed twice: by
Airflow's own secrets masker (every connection password a process has read is registered there) and by
patterns that need no knowledge of the secret (``user:password@`` in any URI, ``password=...`` pairs,
secrets in query strings, byte literals and long binary-looking blobs). What is left is cut to one line of
bounded length, so an exception that dumped a file cannot flood a channel either.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

MASK = "***"
# Any URI with userinfo (user@ or user:password@): the whole URI goes, host and path included, because a
# connection URI (postgresql://, smtp://, http://ops:...@rws) also names where the secret opens a door.
_URI_WITH_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@'\"<>]*@[^\s'\"<>]*")
# key=value and "key": "value" pairs whose key says secret.
_SECRET_PAIR = re.compile(
    r"(?i)(\b[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|credentials?|sig)"
    r"[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&}\]\)]+)"
)
# Python bytes reprs (b'\x30\x82...') and runs of escaped bytes: keystore content never leaves.
_BYTES_LITERAL = re.compile(r"\bb(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
_ESCAPED_BYTES = re.compile(r"(?:\\x[0-9A-Fa-f]{2}){2,}")
# A base64 or hex blob longer than any digest we show (SHA-256 is 64 hex characters).
_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{65,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Links (without credentials: those went first) are kept whole: their paths are not blobs.
_LINK = re.compile(r"(\b(?:https?|file)://[^\s'\"<>]+)")

MAX_LINE = 400


def scrub(text: object, secrets: Iterable[str] = ()) -> str:
    """``text`` without any secret we know of or can recognise; never raises."""
    value = "" if text is None else str(text)
    try:
        for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
            value = value.replace(secret, MASK)
        value = _airflow_redact(value)
        value = _URI_WITH_USERINFO.sub("<URI with credentials removed>", value)
        value = _SECRET_PAIR.sub(lambda m: m.group(1) + MASK, value)
        value = _BYTES_LITERAL.sub("<bytes removed>", value)
        value = _ESCAPED_BYTES.sub("<bytes removed>", value)
        value = "".join(
            part if index % 2 else _BLOB.sub("<data removed>", part)
            for index, part in enumerate(_LINK.split(value))
        )
        return _CONTROL.sub("", value)
    except Exception:  # a scrubber that fails must not let the raw text through
        log.exception("scrubbing a notification failed; its text is dropped")
        return "<text removed: it could not be checked for secrets>"


def one_line(text: object, secrets: Iterable[str] = (), limit: int = MAX_LINE) -> str:
    """Scrubbed ``text`` as one line (its lines joined by " / "), at most ``limit`` characters."""
    lines = [line.strip() for line in scrub(text, secrets).splitlines() if line.strip()]
    joined = " / ".join(lines)
    if len(joined) > limit:
        joined = joined[: limit - 1] + "…"
    return joined


def _airflow_redact(value: str) -> str:
    """Airflow's secrets masker: every secret this process registered (connection passwords read)."""
    try:
        from airflow.sdk._shared.secrets_masker import redact
    except ImportError:  # pragma: no cover - the masker moved; the patterns still apply
        return value
    redacted = redact(value)
    return redacted if isinstance(redacted, str) else value


def known_secrets(conn_ids: Iterable[str]) -> list[str]:
    """The passwords (and secret-looking extras) of these connections, to be masked in a message.

    Reading them also registers them with Airflow's secrets masker. A connection that cannot be read adds
    nothing: the pattern rules still apply.
    """
    found: list[str] = []
    for conn_id in dict.fromkeys(c for c in conn_ids if c):
        try:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(conn_id)
        except Exception:  # noqa: S112 - absent or unreadable: nothing to mask from it
            continue
        if conn.password:
            found.append(conn.password)
        try:
            extra = conn.extra_dejson
        except Exception:  # noqa: S112
            continue
        found += _secret_values(extra)
    return found


def _secret_values(value: object, key: str = "") -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _secret_values(v, str(k))]
    if isinstance(value, list):
        return [s for v in value for s in _secret_values(v, key)]
    if isinstance(value, str) and re.search(r"(?i)pass|pwd|secret|token|key|auth|config|path", key):
        return [value]
    return []
