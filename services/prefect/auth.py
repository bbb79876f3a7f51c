"""Basic auth in front of everything else the Prefect server does with an API request.

Prefect checks PREFECT_SERVER_API_AUTH_STRING itself, but inside its API app, behind its CSRF
middleware: a write without credentials is refused there with 403 "Missing CSRF token", which
hides the real reason. This ASGI middleware sits outermost and answers 401 first, with the
same exemptions Prefect makes (GET /api/health and /api/ready, for healthchecks) and none for
anything else. CORS preflights (OPTIONS, which browsers send without credentials) and websockets
(Prefect authenticates those itself) pass through to Prefect unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIX = "/api"
OPEN_PATHS = frozenset({"/api/health", "/api/ready"})
UNAUTHORIZED_BODY = b'{"exception_message":"Unauthorized"}'


def needs_credentials(method: str, path: str) -> bool:
    """Whether a request must carry the auth string: every API route but the open probes."""
    if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
        return False  # the UI's static files and /ui-settings; the UI then asks for the login
    if method == "OPTIONS":
        return False
    return not (method == "GET" and path in OPEN_PATHS)


def is_authorized(header: str | None, auth_string: str) -> bool:
    """`Authorization: Basic base64(user:password)` matching the auth string."""
    if not header:
        return False
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(decoded.encode(), auth_string.encode())


class RequireBasicAuth:
    """ASGI middleware: 401 for API requests without the auth string, before anything else."""

    def __init__(self, app: ASGIApp, auth_string: str) -> None:
        self.app = app
        self.auth_string = auth_string

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            if needs_credentials(scope["method"], path) and not is_authorized(
                _header(scope, b"authorization"), self.auth_string
            ):
                await _unauthorized(send)
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _unauthorized(send: Send) -> None:
    # No WWW-Authenticate header, like Prefect's own 401: with it, a browser answers the UI's
    # login check with its native password dialog instead of letting the UI say "Invalid".
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
