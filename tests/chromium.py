"""Headless Chromium driven over the Chrome DevTools Protocol, for checks of web UIs.

No Selenium, no Playwright (its browser download fails here): the `chromium` package and the
websocket client Prefect already depends on. `headless_page()` starts a fresh browser and yields
one tab; the tab polls the DOM with a deadline instead of sleeping.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.servers import running_process, wait_until

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container: the sandbox needs user namespaces we may not have
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-proxy-server",  # only loopback pages: a proxy from the environment must not see them
    "--window-size=1280,900",  # wide enough for the desktop layout (sidebar navigation)
    "--remote-debugging-port=0",
]


def chromium_binary() -> str:
    """The installed Chromium; installed with apt when missing and we may (CI runs as root)."""
    if found := _which_browser():
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium on PATH and no root apt-get to install it: apt install chromium")
    _apt_install("chromium")
    if found := _which_browser():
        return found
    raise RuntimeError("apt-get installed chromium but no chromium binary is on PATH")


def _which_browser() -> str | None:
    return next(filter(None, map(shutil.which, BROWSER_NAMES)), None)


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", package]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # A fresh image has no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)


class Page:
    """One browser tab, attached over the browser's DevTools websocket (flattened session)."""

    def __init__(self, socket: ClientConnection, session_id: str) -> None:
        self._socket = socket
        self._session_id = session_id
        self._ids = itertools.count(1)

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call a DevTools method in this tab; return its result (events are skipped)."""
        return _call(self._socket, next(self._ids), method, params, self._session_id)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_for(self, expression: str, *, what: str, timeout: float = 60) -> None:
        """Poll until the expression is truthy; on timeout fail with the page's text."""
        # As a boolean: a DOM node cannot be returned by value.
        condition = f"!!({expression})"
        deadline = time.monotonic() + timeout
        error: RuntimeError | None = None
        while time.monotonic() < deadline:
            try:
                if self.evaluate(condition):
                    return
            except RuntimeError as exc:  # e.g. the page navigated away mid-evaluation
                error = exc
            time.sleep(0.2)
        url = self.evaluate("location.href")
        raise TimeoutError(
            f"{what} not shown after {timeout:.0f}s at {url} (last error: {error}):\n"
            + self.text()[:2000]
        )

    def fill(self, selector: str, value: str) -> None:
        """Type into an input as a user would, so that Vue's and React's bindings see it."""
        # React tracks the value the element last set itself: go through the prototype's setter.
        script = """(([selector, value]) => {
            const input = document.querySelector(selector);
            const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
            setter.call(input, value);
            input.dispatchEvent(new Event('input', {bubbles: true}));
            input.dispatchEvent(new Event('change', {bubbles: true}));
        })(%s)"""
        self.evaluate(script % json.dumps([selector, value]))

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


def _call(
    socket: ClientConnection,
    message_id: int,
    method: str,
    params: dict[str, Any] | None,
    session_id: str | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
    if session_id:
        message["sessionId"] = session_id
    socket.send(json.dumps(message))
    deadline = time.monotonic() + timeout
    while True:
        reply = json.loads(socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        if reply.get("id") != message_id:
            continue  # an event, or the reply to another session's call
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        return dict(reply["result"])


@contextlib.contextmanager
def headless_page(log_dir: Path) -> Iterator[Page]:
    """A fresh headless Chromium (own profile, stopped on exit) and a blank tab in it."""
    binary = chromium_binary()
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    args = [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
    try:
        with (
            running_process(args, log_file=log_dir / "chromium.log"),
            connect(_devtools_url(profile, log_dir), proxy=None, max_size=None) as socket,
        ):
            yield _open_tab(socket)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_url(profile: Path, log_dir: Path) -> str:
    """The browser's websocket, from the file Chromium writes once it listens: port, then path."""
    active_port = profile / "DevToolsActivePort"
    wait_until(
        lambda: len(_lines(active_port)) >= 2,
        timeout=60,
        what="Chromium DevTools",
        log_file=log_dir / "chromium.log",
    )
    port, path = _lines(active_port)[:2]
    return f"ws://127.0.0.1:{port}{path}"


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _open_tab(socket: ClientConnection) -> Page:
    ids = itertools.count(1_000_000)  # browser-level calls: ids apart from the tab's
    target = _call(socket, next(ids), "Target.createTarget", {"url": "about:blank"})
    attached = _call(
        socket,
        next(ids),
        "Target.attachToTarget",
        {"targetId": target["targetId"], "flatten": True},
    )
    return Page(socket, attached["sessionId"])
