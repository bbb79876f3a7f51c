"""The comparison table and the bars of bench/soak.py (anchor: minute 1 of the same run)."""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass

from bench.soak_load import NO_ANSWER, Outcome, SwapSeen, ok, version_changes, windows
from bench.soak_procs import Sample

RSS_GROWTH_BAR = 10.0  # percent, minute 1 -> last minute, per worker
MINUTE = 60.0


@dataclass(frozen=True)
class Bar:
    label: str
    result: bool | None  # None: not measurable here (printed n/a, does not fail the run)
    bar: str

    @property
    def passed(self) -> bool:
        return self.result is not False

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.result]
        return f"{verdict}  {self.label}  (bar {self.bar})"


@dataclass(frozen=True)
class WorkerRss:
    pid: int
    minute_1_kib: float
    last_minute_kib: float
    peak_kib: int

    @property
    def change_pct(self) -> float:
        return (self.last_minute_kib / self.minute_1_kib - 1) * 100


def worker_rss(samples: list[Sample], total: float) -> list[WorkerRss]:
    """Median VmRSS of each worker in minute 1 and in the last minute (the final sample after
    the load counts to the last minute)."""
    first = next((s.rss_kib for s in samples if s.rss_kib), {})
    found = []
    for pid in sorted(first):
        early = [s.rss_kib[pid] for s in samples if s.at < MINUTE and pid in s.rss_kib]
        late = [s.rss_kib[pid] for s in samples if s.at >= total - MINUTE and pid in s.rss_kib]
        every = [s.rss_kib[pid] for s in samples if pid in s.rss_kib]
        if early and late:
            found.append(
                WorkerRss(pid, statistics.median(early), statistics.median(late), max(every))
            )
    return found


def workers_replaced(samples: list[Sample]) -> int | None:
    """Worker pids seen during the run that were not there at its start: a replaced worker
    (crashed, timed out, recycled) starts small again and would hide a leak."""
    sets = [set(s.rss_kib) for s in samples if s.rss_kib]
    return None if not sets else len(set().union(*sets) - sets[0])


def _replaced_text(replaced: int | None) -> str:
    return "n/a" if replaced is None else str(replaced)


def sys_path_start_end(
    samples: list[Sample], workers: set[int]
) -> dict[str, tuple[float, float, float]] | None:
    """Per worker (pid label): sys.path entries in the first and last scrape, and the maximum.
    Gauges of dead processes (multiprocess mode "all") are dropped when the workers are known."""
    scrapes = [s.sys_path for s in samples if s.sys_path is not None]
    if not scrapes:
        return None
    keys = set(scrapes[0]) & set(scrapes[-1])
    if workers:
        keys = {k for k in keys if not k.isdigit() or int(k) in workers} or keys
    return {
        k: (scrapes[0][k], scrapes[-1][k], max(s.get(k, 0.0) for s in scrapes))
        for k in sorted(keys)
    }


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def _move_text(swap: SwapSeen | None) -> str:
    if swap is None:
        return ""
    text = f"-> v{swap.move.version} at {swap.move.at:.1f} s: "
    if swap.first_seen_after is None:
        return text + "never answered"
    return text + f"first +{swap.first_seen_after:.1f} s, all +{swap.all_after:.1f} s"


def _print_windows(
    outcomes: list[Outcome], seen: list[SwapSeen], width: float, total: float
) -> None:
    print(f"{'window':<14}{'requests':>9}{'non-2xx':>8}{'no answer':>10}{'p50 ms':>8}"
          f"{'p99 ms':>8}  alias move in the window, answers by the new version")  # fmt: skip
    for window in windows(outcomes, width, total):
        swap = next((s for s in seen if window.start <= s.move.at < window.end), None)
        label = f"{window.start / MINUTE:g}-{window.end / MINUTE:g} min"
        print(
            f"{label:<14}{window.requests:>9}{window.non2xx:>8}{window.no_answer:>10}"
            f"{window.p50_ms:>8.2f}{window.p99_ms:>8.2f}  {_move_text(swap)}"
        )


def _print_workers(
    rss: list[WorkerRss], paths: dict[str, tuple[float, float, float]] | None
) -> None:
    print(f"{'worker pid':<12}{'RSS min 1':>12}{'RSS last min':>14}{'change':>9}"
          f"{'peak':>12}{'sys.path start':>16}{'end':>6}{'max':>6}")  # fmt: skip
    for worker in rss:
        start, end, peak = (paths or {}).get(str(worker.pid), (None, None, None))
        path_text = f"{'n/a':>16}"
        if start is not None:
            path_text = f"{start:>16.0f}{end:>6.0f}{peak:>6.0f}"
        print(
            f"{worker.pid:<12}{_mib(worker.minute_1_kib):>12}{_mib(worker.last_minute_kib):>14}"
            f"{worker.change_pct:>+8.1f}%{_mib(worker.peak_kib):>12}{path_text}"
        )
    if not rss:
        print("(RSS n/a: no workers of --master-pid in /proc, no RSS gauge in /metrics)")
    for key, (start, end, peak) in (paths or {}).items():
        if not any(str(w.pid) == key for w in rss):
            print(f"{key:<12}{'':>12}{'':>14}{'':>9}{'':>12}{start:>16.0f}{end:>6.0f}{peak:>6.0f}")


def _bars(
    outcomes: list[Outcome],
    seen: list[SwapSeen],
    rss: list[WorkerRss],
    paths: dict[str, tuple[float, float, float]] | None,
    replaced: int | None,
) -> list[Bar]:
    non2xx = sum(o.status != NO_ANSWER and not ok(o) for o in outcomes)
    no_answer = sum(o.status == NO_ANSWER for o in outcomes)
    changes = version_changes(outcomes, seen)
    growth = ", ".join(f"{w.pid} {w.change_pct:+.1f}%" for w in rss) or "n/a"
    path_text = "n/a: the service has no sys_path gauge"
    if paths:
        path_text = ", ".join(f"{k} {s:.0f}->{e:.0f}" for k, (s, e, _) in paths.items())
    return [
        Bar(f"non-2xx {non2xx}, no answer {no_answer} of {len(outcomes)}",
            non2xx == 0 and no_answer == 0, "0"),
        Bar(f"RSS minute 1 -> last minute: {growth}",
            all(w.change_pct <= RSS_GROWTH_BAR for w in rss) if rss else None,
            f"<= +{RSS_GROWTH_BAR:g}% per worker"),
        Bar(f"sys.path entries start -> end: {path_text}",
            all(e <= s for s, e, _ in paths.values()) if paths else None, "no growth"),
        Bar(f"version in answers changed {changes} times for {len(seen)} alias moves",
            changes == len(seen) and all(s.first_seen_after is not None for s in seen),
            "every move"),
        Bar(f"workers replaced during the run: {_replaced_text(replaced)}",
            None if replaced is None else replaced == 0, "none"),
    ]  # fmt: skip


def print_report(
    args: argparse.Namespace,
    outcomes: list[Outcome],
    seen: list[SwapSeen],
    samples: list[Sample],
    *,
    late: int,
    rss_source: str,
) -> list[Bar]:
    total = args.minutes * MINUTE
    print(f"\nsoak: {args.minutes} min, {args.rate:g} req/s open loop ({args.threads} client "
          f"threads, loopback), alias move every {args.swap_every:g} s; latency client side; "
          f"{late} requests sent > 50 ms late")  # fmt: skip
    _print_windows(outcomes, seen, args.swap_every, total)
    rss = worker_rss(samples, total)
    paths = sys_path_start_end(samples, {w.pid for w in rss})
    print(f"\nRSS: {rss_source}; sys.path: the service's per-worker gauge")
    _print_workers(rss, paths)
    bars = _bars(outcomes, seen, rss, paths, workers_replaced(samples))
    print()
    for bar in bars:
        print(bar.line())
    summary = {
        "requests": len(outcomes),
        "non2xx": sum(o.status != NO_ANSWER and not ok(o) for o in outcomes),
        "no_answer": sum(o.status == NO_ANSWER for o in outcomes),
        "alias_moves": len(seen),
        "version_changes": version_changes(outcomes, seen),
        "rss_change_pct": {str(w.pid): round(w.change_pct, 1) for w in rss},
        "sys_path": {k: [s, e] for k, (s, e, _) in (paths or {}).items()},
        "late_requests": late,
    }
    print(json.dumps(summary))
    return bars
