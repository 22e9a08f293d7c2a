"""Deliver a message through an Apprise connection, and never let a broken channel fail anything.

The Apprise connection (type ``apprise``, provider apache-airflow-providers-apprise) holds the URL(s) in
its ``config`` extra; the provider's ``AppriseHook`` reads it. ``AppriseHook.notify`` drops Apprise's
answer (False when no service took the message), so the message is sent here with the same connection
parsing and the answer is checked: a refused, unreachable or misconfigured channel is logged as an error
naming the event and the connection, and the caller goes on. Nothing here raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from include.gir_ops.notifications.messages import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """Where one event goes: an Apprise connection, and the Apprise tag(s) to address in it."""

    event: str
    conn_id: str
    tag: str | None = None

    @property
    def apprise_tag(self) -> str:
        return self.tag or "all"


def _apprise(route: Route, conn: object) -> object:
    import apprise
    from airflow.providers.apprise.hooks.apprise import AppriseHook

    hook = AppriseHook(apprise_conn_id=route.conn_id)
    target = apprise.Apprise()
    hook.set_config_from_conn(conn=conn, apprise_obj=target)  # type: ignore[arg-type]
    if not len(target):
        raise ValueError("its config names no Apprise URL that Apprise understands")
    return target


def connection(route: Route) -> object | None:
    """The route's Apprise connection, or None (logged) when it cannot be read: nothing to send through."""
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(route.conn_id)
    except Exception as exc:
        _failed(route, None, exc)
        return None


def deliver(route: Route, message: Message, conn: object | None = None) -> bool:
    """Send ``message``; True when Apprise says a service took it. Logs and returns False otherwise."""
    try:
        if conn is None:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(route.conn_id)
        target = _apprise(route, conn)
        sent = target.notify(  # type: ignore[attr-defined]
            body=message.body, title=message.title, notify_type=message.notify_type, tag=route.apprise_tag
        )
    except Exception as exc:
        return _failed(route, message, exc)
    return _result(route, message, bool(sent))


async def adeliver(route: Route, message: Message) -> bool:
    """:func:`deliver` for the triggerer (Deadline Alert callbacks run there, in its event loop)."""
    try:
        from airflow.providers.common.compat.connection import get_async_connection

        target = _apprise(route, await get_async_connection(route.conn_id))
        sent = await target.async_notify(  # type: ignore[attr-defined]
            body=message.body, title=message.title, notify_type=message.notify_type, tag=route.apprise_tag
        )
    except Exception as exc:
        return _failed(route, message, exc)
    return _result(route, message, bool(sent))


def _result(route: Route, message: Message, sent: bool) -> bool:
    if sent:
        log.info("Notification %s sent through %r: %s", route.event, route.conn_id, message.title)
        return True
    log.error(
        "Notification %s NOT delivered: Apprise connection %r (tag %s) did not take it (service down or "
        "refusing, see the Apprise log lines above); the run goes on. Message was: %s",
        route.event,
        route.conn_id,
        route.apprise_tag,
        message.title,
    )
    return False


def _failed(route: Route, message: Message | None, exc: Exception) -> bool:
    from include.gir_ops.notifications.scrub import one_line

    log.error(
        "Notification %s NOT delivered through Apprise connection %r: %s: %s; fix the connection (type "
        'apprise, extra {"config": {"path": "<apprise URL>"}}); the run goes on. Message was: %s',
        route.event,
        route.conn_id,
        type(exc).__name__,
        one_line(exc),
        message.title if message is not None else "(not built)",
    )
    return False
