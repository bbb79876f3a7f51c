"""A local HTTP receiver standing in for a notification webhook (Slack, Teams, ...)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    """Collects the JSON bodies POSTed to it; `url` is where to point NOTIFY_WEBHOOK_URL."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        self._bodies: list[dict] = []
        self._lock = threading.Lock()

    def record(self, body: dict) -> None:
        with self._lock:
            self._bodies.append(body)

    @property
    def bodies(self) -> list[dict]:
        with self._lock:
            return list(self._bodies)

    def wait_for(self, matches: Callable[[dict], bool], *, timeout: float, what: str) -> dict:
        """The first body that `matches`, polling until `timeout` (seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((body for body in self.bodies if matches(body)), None)
            if found is not None:
                return found
            time.sleep(0.25)
        raise TimeoutError(f"no {what} notification after {timeout:.0f}s; got {self.bodies}")


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                receiver.record(json.loads(raw))
            except ValueError:
                receiver.record({"unparsed": raw.decode(errors="replace")})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
