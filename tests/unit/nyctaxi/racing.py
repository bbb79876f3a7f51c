"""Two runs doing the same thing at once, as threads: for the "first complete copy wins" tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_at_once(call: Callable[[], T], times: int = 2) -> list[T | BaseException]:
    """Call `call` in `times` threads at once; its results or errors, in the order they ended."""
    results: list[T | BaseException] = []

    def run() -> None:
        try:
            results.append(call())
        except BaseException as error:  # noqa: BLE001 - the caller's assertions report it
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results
