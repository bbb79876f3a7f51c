"""What bench/soak.py reads about the prediction service's workers: pids and resident memory
from the process table (/proc) and the per-worker gauges of /metrics.

/proc works for a service on this machine: ours, `make run`'s (its gunicorn master is found by
the listening port) or any gunicorn master whose pid is given (a container's:
`docker inspect --format '{{.State.Pid}}'`). Elsewhere RSS comes from the service's gauge.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

PROC = Path("/proc")
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp
# The prometheus multiprocess collector labels each worker's value of an "all"/"liveall" gauge
# with the worker's pid; aggregated modes (max, livemax, ...) have one value and no such label.
PID_LABEL = "pid"
ALL_WORKERS = "all"
# Per-worker gauges of the service (multiprocess mode "liveall": a `pid` label per live worker).
SYS_PATH_FRAGMENT = "sys_path"  # predict_worker_sys_path_entries
RSS_FRAGMENT = "resident_memory"  # predict_worker_resident_memory_bytes


def parent_pid(pid: int) -> int | None:
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # the process ended meanwhile
    return int(fields[1])  # after "(comm)": state ppid ...


def children(pid: int) -> list[int]:
    """Live child processes of pid (a gunicorn master's children are its workers)."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_kib(pid: int) -> int | None:
    """VmRSS of pid in KiB; None once the process is gone."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def master_listening_on(port: int) -> int | None:
    """The gunicorn master serving port on this machine: of the processes holding the listening
    socket (the master and its workers inherit it), the one whose parent does not hold it."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    holders = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in targets for fd in (entry / "fd").iterdir()):
                holders.add(int(entry.name))
    masters = [pid for pid in holders if parent_pid(pid) not in holders]
    return masters[0] if len(masters) == 1 else None


def per_worker_gauge(metrics_text: str, fragment: str) -> dict[str, float] | None:
    """Values of the first metric whose name contains fragment, by worker pid (ALL_WORKERS when
    the gauge is aggregated over workers); None when the service has no such metric."""
    for family in text_string_to_metric_families(metrics_text):
        if fragment in family.name and family.samples:
            return {
                sample.labels.get(PID_LABEL, ALL_WORKERS): sample.value for sample in family.samples
            }
    return None


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the soak's start
    rss_kib: dict[int, int]  # worker pid -> VmRSS
    sys_path: dict[str, float] | None  # worker pid (or ALL_WORKERS) -> sys.path entries


@dataclass
class Sampler:
    """Every `interval` s, in a thread: each worker's RSS and sys.path length.

    RSS comes from /proc when the gunicorn master is known and has workers here, else from the
    service's per-worker RSS gauge (a port published by docker-proxy finds no workers); sys.path
    only from the service's gauge."""

    master_pid: int | None
    metrics_url: str
    headers: dict[str, str]
    interval: float = 5.0
    samples: list[Sample] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)  # where the RSS values came from
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def rss_source(self) -> str:
        return " and ".join(sorted(self.sources)) or "n/a"

    def sample(self, at: float) -> Sample:
        text = self._scrape()
        sys_path = per_worker_gauge(text, SYS_PATH_FRAGMENT) if text else None
        rss: dict[int, int] = {}
        if self.master_pid is not None:
            rss = {pid: kib for pid in children(self.master_pid) if (kib := rss_kib(pid))}
            self.sources.update(["/proc VmRSS"] if rss else [])
        if not rss and text:
            gauge = per_worker_gauge(text, RSS_FRAGMENT) or {}
            rss = {int(pid): int(value // 1024) for pid, value in gauge.items() if pid.isdigit()}
            self.sources.update([f"/metrics {RSS_FRAGMENT} gauge"] if rss else [])
        found = Sample(at, rss, sys_path)
        self.samples.append(found)
        return found

    def _scrape(self) -> str | None:
        try:
            response = requests.get(self.metrics_url, headers=self.headers, timeout=10)
            response.raise_for_status()
        except requests.RequestException:
            return None
        return response.text

    def run(self, clock: Callable[[], float]) -> threading.Thread:
        """Start sampling in a daemon thread; `clock()` gives seconds since the soak's start."""

        def loop() -> None:
            while not self._stop.is_set():
                started = time.monotonic()
                self.sample(clock())
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

        thread = threading.Thread(target=loop, name="soak-sampler", daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join(30)
