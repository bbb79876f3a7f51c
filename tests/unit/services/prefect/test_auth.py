"""Basic auth answered before Prefect's own middleware: 401 for every API route but health."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from services.prefect.auth import RequireBasicAuth, is_authorized, needs_credentials

AUTH = "admin:s3cret"


def basic(value: str) -> str:
    return "Basic " + base64.b64encode(value.encode()).decode()


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/deployments/filter", True),
        ("DELETE", "/api/flows/1", True),
        ("GET", "/api/admin/settings", True),
        ("GET", "/api/csrf-token", True),
        ("POST", "/api/health", True),
        ("GET", "/api/health", False),
        ("GET", "/api/ready", False),
        ("GET", "/api/healthz", True),
        ("OPTIONS", "/api/flows/filter", False),
        ("GET", "/", False),
        ("GET", "/ui-settings", False),
        ("GET", "/apiary", False),
    ],
)
def test_which_requests_need_the_key(method: str, path: str, expected: bool) -> None:
    assert needs_credentials(method, path) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic(AUTH), True),
        (basic("admin:wrong"), False),
        (basic(AUTH + "x"), False),
        ("Bearer " + base64.b64encode(AUTH.encode()).decode(), False),
        ("Basic not-base64!", False),
        ("", False),
        (None, False),
    ],
)
def test_only_the_exact_auth_string_is_accepted(header: str | None, expected: bool) -> None:
    assert is_authorized(header, AUTH) is expected


def call(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, list[Any]]:
    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(RequireBasicAuth(app, AUTH)(scope, receive, send))
    return sent[0]["status"], reached


def test_a_write_without_the_key_is_refused_with_401_before_prefect_sees_it() -> None:
    status, reached = call("POST", "/api/deployments/filter", [])
    assert (status, reached) == (401, [])


def test_with_the_key_prefect_handles_the_request() -> None:
    status, reached = call("POST", "/api/flows/filter", [(b"authorization", basic(AUTH).encode())])
    assert (status, reached) == (200, ["/api/flows/filter"])


def test_health_stays_open() -> None:
    assert call("GET", "/api/health", []) == (200, ["/api/health"])
