"""The prediction log of one worker process: every ride served, written off the request path.

A request copies its rides (the arrays validation parsed, the predictions) and one small
per-request entry (request id, time, model name and version) into preallocated column arrays
(nyctaxi.predictionlog.RideBuffer): microseconds, no pandas, no I/O. A daemon thread swaps the
buffer for an empty one and writes it as a Parquet file (layout and schema:
nyctaxi.predictionlog) every PREDICT_LOG_FLUSH_SECONDS, or sooner once PREDICT_LOG_BATCH_ROWS
rides wait. Turning a buffer into a table takes a few array operations whatever the traffic, so
the writer holds the GIL, which the request thread needs, for well under a millisecond a flush.

What can be lost, and what cannot break serving:
- Graceful stop (SIGTERM, SIGINT, SIGQUIT, a worker recycled or timed out): nothing. gunicorn's
  `worker_exit` hook (gunicorn_conf.py) and atexit call `close_all()`, which writes what is
  queued before the process ends.
- Crash (SIGKILL, the OOM killer, power loss): the rides of the last flush interval (about
  PREDICT_LOG_FLUSH_SECONDS) that were still queued. Files already renamed into place stay
  whole (see the library's atomic write).
- Bounded memory: at most PREDICT_LOG_MAX_QUEUED_ROWS rides wait (plus the batch being
  written; about 50 bytes a ride and 200 a request). Beyond (the disk is slower than the
  traffic), new rides are dropped and counted (predict_log_dropped_rides_total), with a warning
  at most every WARN_EVERY_SECONDS. Requests are still answered.
- A write that fails (disk full, folder gone or read-only) loses that flush's rides, counted
  (predict_log_failed_rides_total) and logged; serving goes on, the next flush tries again.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nyctaxi import predictionlog
from services.predict.holder import LoadedModel
from services.predict.settings import PredictSettings
from services.predict.validation import Rides

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
WARN_EVERY_SECONDS = 30.0
CLOSE_TIMEOUT_SECONDS = 10.0  # below gunicorn's graceful_timeout


def request_id(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token (<= 64 of [A-Za-z0-9._-]), else a new
    one: a header value never reaches the log (or a file) unchecked."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class LogCounters(Protocol):
    """Where the log counts rides (ServiceMetrics; tests pass their own)."""

    def log_written(self, rides: int) -> None: ...

    def log_dropped(self, rides: int) -> None: ...

    def log_failed(self, rides: int) -> None: ...


class _NoCounters:
    def log_written(self, rides: int) -> None:
        pass

    def log_dropped(self, rides: int) -> None:
        pass

    def log_failed(self, rides: int) -> None:
        pass


@dataclass
class _Totals:
    written: int = 0
    dropped: int = 0
    failed: int = 0
    files: int = 0


class _Throttle:
    """True at most once per `every` seconds: one warning line for a storm of failures."""

    def __init__(self, every: float) -> None:
        self._every = every
        self._last = -float("inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last < self._every:
            return False
        self._last = now
        return True


class PredictionLog:
    """The buffer and the writer thread of one process (started on the first record)."""

    def __init__(
        self,
        directory: Path,
        *,
        flush_seconds: float = 1.0,
        batch_rows: int = 10_000,
        max_queued_rows: int = 100_000,
        counters: LogCounters | None = None,
    ) -> None:
        self.directory = directory
        self._flush_seconds = flush_seconds
        self._batch_rows = batch_rows
        self._max_queued_rows = max_queued_rows
        self._counters = counters or _NoCounters()
        self._buffer = predictionlog.RideBuffer(max_queued_rows)
        self._lock = threading.Lock()  # the buffer (swapped for an empty one by each flush)
        self._flush_lock = threading.Lock()  # one flush at a time (the thread, close())
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._owner_pid = -1
        self._totals = _Totals()
        self._drop_warning = _Throttle(WARN_EVERY_SECONDS)
        self._dropped_since_warning = 0
        self._failure_warning = _Throttle(WARN_EVERY_SECONDS)

    def record(
        self, request_id: str, rides: Rides, minutes: np.ndarray, loaded: LoadedModel
    ) -> None:
        """Queue the rides of one answered request (on the request thread: a few array copies,
        no I/O, no pandas)."""
        served_at_us = time.time_ns() // 1000
        inputs = (rides.pu_location_id, rides.do_location_id, rides.trip_distance, rides.pickup)
        model = (loaded.name, loaded.version)
        with self._lock:
            buffer = self._buffer
            try:
                kept = not self._closed and buffer.append(
                    request_id, served_at_us, inputs, minutes, model
                )
            except Exception:  # noqa: BLE001 - odd arrays: the answer goes out all the same
                if self._failure_warning.ready():
                    logger.exception("prediction log: could not queue request %s", request_id)
                kept = False
            if not kept:
                self._drop(len(rides))
                return
            full = buffer.rows >= self._batch_rows
        if self._owner_pid != os.getpid():
            self._start()
        if full:
            self._wake.set()

    def _drop(self, count: int) -> None:
        # Called holding self._lock.
        self._totals.dropped += count
        self._dropped_since_warning += count
        self._counters.log_dropped(count)
        if self._drop_warning.ready():
            why = "the log is closed" if self._closed else "the writer is behind"
            logger.warning(
                "prediction log: dropped %d ride(s) (%s; at most %d rides are queued)",
                self._dropped_since_warning,
                why,
                self._max_queued_rows,
            )
            self._dropped_since_warning = 0

    def _start(self) -> None:
        # The first record of this process (threads do not survive a fork: a process forked
        # after it started gets its own thread, and an empty buffer).
        with self._lock:
            if self._owner_pid == os.getpid():
                return
            if self._owner_pid != -1:  # inherited from the parent: its rides are its own
                self._buffer = predictionlog.RideBuffer(self._max_queued_rows)
            self._owner_pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="prediction-log-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write the queued rides now; how many were written (0 on a failure, logged)."""
        with self._flush_lock:
            if self._buffer.rows == 0:  # a quiet interval: no file
                return 0
            fresh = predictionlog.RideBuffer(self._max_queued_rows)  # made outside the lock
            with self._lock:
                taken, self._buffer = self._buffer, fresh
            rows = taken.rows
            try:
                table = taken.to_table()
                paths = predictionlog.write_batch(self.directory, table, datetime.now(UTC))
            except Exception as error:  # noqa: BLE001 - whatever it is, serving goes on
                self._failed(rows, error)
                return 0
            self._totals.written += rows
            self._totals.files += len(paths)
            self._counters.log_written(rows)
            return rows

    def _failed(self, rows: int, error: Exception) -> None:
        self._totals.failed += rows
        self._counters.log_failed(rows)
        if self._failure_warning.ready():
            logger.warning(
                "prediction log: could not write %d ride(s) to %s (%s: %s); serving goes on",
                rows,
                self.directory,
                type(error).__name__,
                error,
            )

    def close(self) -> None:
        """Write everything queued and stop the writer (idempotent). Later records are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and self._owner_pid == os.getpid() and thread.is_alive():
            thread.join(CLOSE_TIMEOUT_SECONDS)
        self.flush()  # what the thread did not take (or all of it, when it never started)

    def state(self) -> dict[str, Any]:
        """What /model shows of the log (this worker's own figures)."""
        with self._lock:
            queued = self._buffer.rows
        totals = self._totals
        return {
            "dir": str(self.directory),
            "queued_rides": queued,
            "written_rides": totals.written,
            "written_files": totals.files,
            "dropped_rides": totals.dropped,
            "failed_rides": totals.failed,
        }


_OPEN: list[PredictionLog] = []


def close_all() -> None:
    """Flush and close every log of this process (gunicorn's worker_exit hook, atexit)."""
    while _OPEN:
        log = _OPEN.pop()
        try:
            log.close()
        except Exception:  # noqa: BLE001 - an exit hook must not raise
            logger.exception("prediction log: closing %s failed", log.directory)


atexit.register(close_all)


def probe(directory: Path) -> None:
    """Raise OSError unless files can be created (and renamed) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    marker.write_bytes(b"")
    marker.unlink()


def open_log(
    settings: PredictSettings, counters: LogCounters | None = None
) -> PredictionLog | None:
    """The worker's log (closed by close_all), or None: off by PREDICT_LOG_ENABLED=false, or
    its folder cannot be written (a warning logged; the service serves without a log)."""
    if not settings.log_enabled:
        return None
    directory = settings.log_dir()
    try:
        probe(directory)
    except OSError as error:
        logger.warning(
            "prediction log disabled: cannot write to %s (%s); rides are served, not logged",
            directory,
            error,
        )
        return None
    log = PredictionLog(
        directory,
        flush_seconds=settings.log_flush_seconds,
        batch_rows=settings.log_batch_rows,
        max_queued_rows=settings.log_max_queued_rows,
        counters=counters,
    )
    _OPEN.append(log)
    return log
