"""The `nyctaxi.model.refused` Prefect event, sent with a plain HTTP POST.

The prediction image holds no Prefect (serving dependencies only), so the event goes straight to
the Prefect server's events endpoint (`POST {PREFECT_API_URL}/events`, a JSON list of events,
answered 204), with basic auth from PREFECT_API_AUTH_STRING and, when the server protects its
API against CSRF (both stacks do), the token of `GET /csrf-token?client=...` in the
Prefect-Csrf-Token / Prefect-Csrf-Client headers, as Prefect's own client sends them.

Sending happens on a daemon thread of its own, with a bounded timeout: never on a request's
path, never holding up the model poller. A failure is logged, never raised.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests

from nyctaxi import names
from services.predict.backoff import Refusal
from services.predict.redact import redact
from services.predict.settings import PredictSettings

logger = logging.getLogger(__name__)

TIMEOUT = (3.0, 5.0)  # connect, read (seconds)


def refused_event(
    model_name: str, alias: str, refusal: Refusal, *, pid: int, host: str
) -> dict[str, Any]:
    """One event in the shape of Prefect's `Event` (id, occurred, event, resource, payload)."""
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": names.REFUSED_EVENT,
        "resource": {
            "prefect.resource.id": names.model_resource_id(model_name),
            "prefect.resource.name": model_name,
        },
        "related": [],
        "payload": {
            "model": model_name,
            "alias": alias,
            "version": refusal.version,
            "run_id": refusal.run_id,
            "reason": refusal.detail,
            "attempts": refusal.attempts,
            "next_retry_seconds": round(refusal.delay, 1),
            "worker": {"pid": pid, "host": host},
        },
    }


class PrefectEvents:
    """Sends events to a Prefect server's API (PREFECT_API_URL, e.g. http://host:4200/api)."""

    def __init__(
        self,
        api_url: str,
        auth_string: str | None = None,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._session = session or requests.Session()
        if auth_string:
            user, _, password = auth_string.partition(":")
            self._session.auth = (user, password)
        self._client_id = str(uuid.uuid4())

    def emit(self, event: dict[str, Any]) -> threading.Thread:
        """Send in the background; the thread is returned for tests to join."""
        thread = threading.Thread(
            target=self.send, args=(event,), name="prefect-event", daemon=True
        )
        thread.start()
        return thread

    def send(self, event: dict[str, Any]) -> bool:
        try:
            response = self._session.post(
                f"{self.api_url}/events", json=[event], headers=self._csrf(), timeout=TIMEOUT
            )
            response.raise_for_status()
        except (requests.RequestException, ValueError, KeyError) as error:
            # redact: the URL may hold credentials; the auth header is never in the text
            logger.warning("could not send the %s event: %s", event["event"], redact(str(error)))
            return False
        logger.info("sent the %s event %s", event["event"], event["id"])
        return True

    def _csrf(self) -> dict[str, str]:
        """Prefect's CSRF headers; none when the server does not protect against CSRF."""
        response = self._session.get(
            f"{self.api_url}/csrf-token", params={"client": self._client_id}, timeout=TIMEOUT
        )
        if response.status_code in (404, 422):  # an older server, or CSRF protection off
            return {}
        response.raise_for_status()
        return {
            "Prefect-Csrf-Token": response.json()["token"],
            "Prefect-Csrf-Client": self._client_id,
        }


def refusal_notifier(settings: PredictSettings) -> Callable[[Refusal], None] | None:
    """Sends a refused event per call, when PREFECT_API_URL is set for the service."""
    if not settings.prefect_api_url:
        return None
    auth = settings.prefect_api_auth_string
    events = PrefectEvents(settings.prefect_api_url, auth.get_secret_value() if auth else None)
    host = socket.gethostname()

    def notify(refusal: Refusal) -> None:
        event = refused_event(
            settings.model_name, settings.model_alias, refusal, pid=os.getpid(), host=host
        )
        events.emit(event)

    return notify
