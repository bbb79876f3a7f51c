"""A lock for one machine: the in-process training CLI's stand-in for Prefect's concurrency limit.

`flock` locks belong to the open file: the kernel drops them when the holder exits, however it
exits, so a crashed run never leaves the lock taken.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


@contextmanager
def file_lock(path: Path) -> Iterator[float]:
    """Hold an exclusive lock on `path` (created if missing); yields the seconds spent waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for %s (another run holds it)", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
