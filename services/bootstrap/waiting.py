"""Bounded waiting: poll a condition until it holds or a deadline passes, never a fixed sleep."""

from __future__ import annotations

import argparse
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable

logger = logging.getLogger(__name__)


class ServiceNotReady(RuntimeError):
    """A service did not become healthy before the deadline."""


def wait_until(
    probe: Callable[[], str | None],
    *,
    what: str,
    timeout: float,
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Call `probe` until it returns None (healthy); it returns a reason while not healthy.

    Raises ServiceNotReady naming `what`, the time waited and the last reason.
    """
    deadline = clock() + timeout
    reason = probe()
    while reason is not None:
        if clock() >= deadline:
            raise ServiceNotReady(f"{what} not healthy after {timeout:.0f}s: {reason}")
        logger.info("waiting for %s: %s", what, reason)
        pause(interval)
        reason = probe()


def http_probe(
    url: str, *, timeout: float = 5.0, reachable_is_enough: bool = False
) -> Callable[[], str | None]:
    """A probe that is healthy when GET `url` answers 2xx (any status below 500 when
    `reachable_is_enough`: e.g. Prefect Cloud answers 401 to a request without its key)."""

    def probe() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return None
                return f"GET {url} answered {response.status}"
        except urllib.error.HTTPError as exc:
            if reachable_is_enough and exc.code < 500:
                return None
            return f"GET {url} answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return f"GET {url} failed: {exc}"

    return probe


def mlflow_health_url(tracking_uri: str) -> str | None:
    """The server's /health URL, or None when the tracking URI is not a server (a local store)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return tracking_uri.rstrip("/") + "/health"


def main(argv: list[str] | None = None) -> int:
    """`python -m services.bootstrap.waiting URL... [--timeout S]`: wait until every URL answers.

    Cheap (no Prefect or MLflow import): the Procfile puts it in front of processes that must
    not start before a server answers, e.g. the Prefect worker.
    """
    parser = argparse.ArgumentParser(description="Wait until each URL answers (status < 500).")
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        for url in args.urls:
            wait_until(http_probe(url, reachable_is_enough=True), what=url, timeout=args.timeout)
    except ServiceNotReady as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
