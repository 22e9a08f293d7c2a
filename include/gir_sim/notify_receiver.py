"""A stand-in for the on-call's chat channel: receives Apprise ``json://`` posts on loopback.

Apprise's JSON notification (``json://127.0.0.1:PORT``) POSTs ``{"version", "title", "message",
"attachments", "type"}``. This server keeps every message in memory and appends it, one JSON object per
line, to a file (``make run``: ``<demo data>/notifications.jsonl``), and logs its title, so the demo shows
what the on-call would get. ``fail_with`` makes it answer an HTTP error instead, to show that a broken
channel fails no run. For ``make run`` and the tests only.

    python -m include.gir_sim.notify_receiver --port 8793 --out /path/notifications.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("gir_sim.notifications")


class NotificationReceiver:
    """A threaded HTTP server on 127.0.0.1; ``port=0`` picks a free port. Use as a context manager."""

    def __init__(self, port: int = 0, out: Path | None = None) -> None:
        self.out = out
        self.messages: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def apprise_url(self) -> str:
        return f"json://127.0.0.1:{self.port}/notify"

    def connection_json(self) -> str:
        """The Apprise connection (AIRFLOW_CONN_* JSON form) that delivers here."""
        return json.dumps({"conn_type": "apprise", "extra": {"config": {"path": self.apprise_url}}})

    def start(self) -> NotificationReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="notify-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Idempotent; safe when never started (``shutdown`` alone would wait forever then)."""
        if self._thread is not None and self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()

    def __enter__(self) -> NotificationReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def _keep(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.messages.append(message)
            if self.out is not None:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                with self.out.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(message, sort_keys=True) + "\n")
        log.warning("NOTIFICATION [%s] %s", message.get("type"), message.get("title"))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if receiver.fail_with is not None:
                    self.send_response(receiver.fail_with)
                    self.end_headers()
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"message": raw.decode("utf-8", "replace")}
                receiver._keep(
                    {
                        "received_at": datetime.now(UTC).isoformat(),
                        "path": self.path,
                        "title": body.get("title"),
                        "message": body.get("message"),
                        "type": body.get("type"),
                    }
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    receiver = NotificationReceiver(args.port, args.out)
    log.warning("notification receiver on %s, writing to %s", receiver.apprise_url, args.out)
    with contextlib.suppress(KeyboardInterrupt):
        receiver._server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
