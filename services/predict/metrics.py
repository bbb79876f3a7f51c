"""Prometheus metrics of the service, correct under gunicorn's several worker processes.

When PROMETHEUS_MULTIPROC_DIR is set (gunicorn_conf.py sets it before workers start),
prometheus_client keeps every value in per-process files there and /metrics aggregates all
workers' files. Otherwise (tests, `flask run`) each app keeps its own registry.
"""

from __future__ import annotations

import os
import sys

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from services.predict.holder import LoadedModel

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Label values come from a fixed set: every distinct value is a new series held forever by every
# worker, so a client inventing methods (or paths: the app passes "<unmatched>" for those) must
# not be able to grow the scrape without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER_METHOD


class ServiceMetrics:
    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        # In multiprocess mode values live in files, so metrics register nowhere; the scrape
        # builds a fresh registry over the files.
        self._registry = None if self.multiprocess_dir else CollectorRegistry()
        registry = self._registry
        self.requests = Counter(
            "predict_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "predict_http_request_duration_seconds",
            "Time spent answering a request, by route, method and status",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "predict_rides_predicted_total",
            "Rides predicted (a batch counts each ride), by model version",
            ["version"],
            registry=registry,
        )
        # Info metrics do not work across processes: a 0/1 gauge per version does, and with
        # "livemax" a version shows 1 while any live worker still serves it.
        self.model_info = Gauge(
            "predict_model_info",
            "The model version served (1) or served before (0)",
            ["name", "version", "alias", "run_id"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "predict_model_ready",
            "1 when a model is loaded in this worker",
            registry=registry,
            multiprocess_mode="livemin",
        )

        # What a soak test watches across model swaps, per live worker (a `pid` label in
        # multiprocess mode): neither may grow with each swap.
        self.sys_path_entries = Gauge(
            "predict_worker_sys_path_entries",
            "Entries on sys.path of the worker process",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.resident_memory = Gauge(
            "predict_worker_resident_memory_bytes",
            "Resident memory (RSS) of the worker process",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.from_cache = Gauge(
            "predict_model_from_cache",
            "1 when a worker serves a version loaded from its local cache that the registry "
            "has not confirmed yet (registry unreachable at start)",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.registry_up = Gauge(
            "predict_registry_up",
            "1 when the model registry answered the worker's last look at the alias",
            registry=registry,
            multiprocess_mode="livemin",
        )

        # The prediction log (prediction_log.py), summed over workers: every ride served is
        # written, dropped (the queue was full) or failed (its write failed).
        self.log_written_rides = Counter(
            "predict_log_written_rides",
            "Rides written to the prediction log",
            registry=registry,
        )
        self.log_dropped_rides = Counter(
            "predict_log_dropped_rides",
            "Rides served but not logged: the prediction log's queue was full",
            registry=registry,
        )
        self.log_failed_rides = Counter(
            "predict_log_failed_rides",
            "Rides served but not logged: writing their batch failed (disk full, folder gone)",
            registry=registry,
        )

    def log_written(self, rides: int) -> None:
        self.log_written_rides.inc(rides)

    def log_dropped(self, rides: int) -> None:
        self.log_dropped_rides.inc(rides)

    def log_failed(self, rides: int) -> None:
        self.log_failed_rides.inc(rides)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count a request; `route` is a url rule of the app (or one catch-all value)."""
        labels = (route, method_label(method), str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def sample_process(self) -> None:
        """Refresh the process gauges: on swaps, scrapes and each poll of the registry (the
        app's poll listener), never on the request path."""
        self.sys_path_entries.set(len(sys.path))
        rss = resident_memory_bytes()
        if rss is not None:
            self.resident_memory.set(rss)

    def serving_state(self, loaded: LoadedModel | None, registry_state: str) -> None:
        """Where the served model came from and whether the registry answers (each poll)."""
        self.from_cache.set(1 if loaded is not None and loaded.origin == "cache" else 0)
        self.registry_up.set(1 if registry_state == "reachable" else 0)

    def model_swapped(self, old: LoadedModel | None, new: LoadedModel) -> None:
        if old is not None:
            self.model_info.labels(old.name, old.version, old.alias, old.run_id or "").set(0)
        self.model_info.labels(new.name, new.version, new.alias, new.run_id or "").set(1)
        self.model_ready.set(1)
        self.sample_process()

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        else:
            registry = self._registry
        return generate_latest(registry), CONTENT_TYPE_LATEST


def resident_memory_bytes() -> int | None:
    """Current RSS of this process: /proc/self/statm on Linux (resident pages), else None."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
