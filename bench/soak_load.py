"""The load of bench/soak.py and what its answers say.

A fixed-rate client (open loop: request i of the run is sent at start + i / rate whatever the
answers before it took, so a slow swap cannot slow the load down and hide itself) records the
status, latency and served model version (X-Model-Version) of every request. The analysis cuts
the run into windows and follows the version in the answers across alias moves.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import requests

NO_ANSWER = 0  # status recorded when a request got no HTTP answer (refused, reset, timeout)
LATE_SECONDS = 0.05  # a request sent this much after its slot: the client could not keep up


@dataclass(frozen=True)
class Outcome:
    sent: float  # seconds since the soak's start
    seconds: float  # latency: send to full answer
    status: int  # NO_ANSWER when none came
    version: str | None  # the model version that answered


@dataclass(frozen=True)
class Move:
    at: float  # seconds since the soak's start when the registry confirmed the alias move
    version: str


class FixedRateLoad:
    """`threads` client sessions share the schedule: thread k sends requests k, k+threads, ..."""

    def __init__(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        rate: float,
        threads: int,
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._body = body
        self._headers = {"Content-Type": "application/json", **headers}
        self._rate = rate
        self._threads = threads
        self._timeout = timeout
        self._results: list[list[Outcome]] = [[] for _ in range(threads)]
        self._late = [0] * threads

    @property
    def late(self) -> int:
        """Requests sent more than LATE_SECONDS after their slot (the client fell behind)."""
        return sum(self._late)

    def _send(self, k: int, session: requests.Session, origin: float, slot: float) -> Outcome:
        started = time.monotonic()
        if started - slot > LATE_SECONDS:
            self._late[k] += 1
        try:
            response = session.post(
                self._url, data=self._body, headers=self._headers, timeout=self._timeout
            )
            status, version = response.status_code, response.headers.get("X-Model-Version")
        except requests.RequestException:
            status, version = NO_ANSWER, None
        return Outcome(started - origin, time.monotonic() - started, status, version)

    def _worker(self, k: int, origin: float, seconds: float) -> None:
        results = self._results[k]
        with requests.Session() as session:
            i = k
            while (offset := i / self._rate) < seconds:
                slot = origin + offset
                delay = slot - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the open-loop schedule, not waiting on a state
                results.append(self._send(k, session, origin, slot))
                i += self._threads

    def start(self, origin: float, seconds: float) -> list[threading.Thread]:
        """Send from monotonic time `origin` for `seconds`; join the threads, then `outcomes()`."""
        threads = [
            threading.Thread(
                target=self._worker, args=(k, origin, seconds), name=f"soak-load-{k}", daemon=True
            )
            for k in range(self._threads)
        ]
        for thread in threads:
            thread.start()
        return threads

    def outcomes(self) -> list[Outcome]:
        return sorted((o for results in self._results for o in results), key=lambda o: o.sent)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ok(outcome: Outcome) -> bool:
    return 200 <= outcome.status < 300


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    requests: int
    non2xx: int  # HTTP answers outside 2xx
    no_answer: int
    p50_ms: float
    p99_ms: float


def windows(outcomes: list[Outcome], width: float, total: float) -> list[Window]:
    """Requests sent in [k * width, (k + 1) * width), the last window cut at `total`."""
    found = []
    for k in range(math.ceil(total / width)):
        start, end = k * width, min((k + 1) * width, total)
        inside = [o for o in outcomes if start <= o.sent < end]
        latencies = [o.seconds * 1000 for o in inside]
        found.append(
            Window(
                start,
                end,
                requests=len(inside),
                non2xx=sum(o.status != NO_ANSWER and not ok(o) for o in inside),
                no_answer=sum(o.status == NO_ANSWER for o in inside),
                p50_ms=percentile(latencies, 50),
                p99_ms=percentile(latencies, 99),
            )
        )
    return found


@dataclass(frozen=True)
class SwapSeen:
    move: Move
    first_seen_after: float | None  # s from the move to the first answer by the new version
    all_after: float | None  # s from the move to the last answer by another version
    settled: str | None  # the version of the last 2xx answer before the next move (or the end)


def follow_moves(outcomes: list[Outcome], moves: list[Move], total: float) -> list[SwapSeen]:
    """For each alias move: when the answers first came from the new version, when the last
    answer from another version was sent, and which version answered last in its segment."""
    seen = []
    for move, end in zip(moves, [m.at for m in moves[1:]] + [total], strict=True):
        segment = [o for o in outcomes if move.at <= o.sent < end and ok(o)]
        new = [o.sent for o in segment if o.version == move.version]
        other = [o.sent for o in segment if o.version != move.version]
        seen.append(
            SwapSeen(
                move,
                first_seen_after=new[0] - move.at if new else None,
                all_after=(other[-1] - move.at if other else 0.0) if new else None,
                settled=segment[-1].version if segment else None,
            )
        )
    return seen


def version_changes(outcomes: list[Outcome], seen: list[SwapSeen]) -> int:
    """How often the version answering at the end of a segment (the start of the run up to the
    first move, then each move's segment) differs from the previous segment's."""
    first_move = seen[0].move.at if seen else math.inf
    before = [o.version for o in outcomes if o.sent < first_move and ok(o)]
    settled = [before[-1] if before else None] + [s.settled for s in seen]
    return sum(
        1
        for a, b in zip(settled, settled[1:], strict=False)
        if a is not None and b not in (a, None)
    )
