"""Serving benchmark of the prediction log: the same service with the log off (the anchor) and
on, side by side in one run, under the same load.

    .venv/bin/python bench/serving_log.py               # train + register a model in a temp store
    .venv/bin/python bench/serving_log.py --tracking-uri http://127.0.0.1:5000   # an existing one

Both services (gunicorn sync x2, one OpenMP thread per worker) serve the same registered version
and run at the same time; wrk (loopback, 8 connections) loads them in turn, each round one run
of each, alternating which goes first, so a busy neighbour on the machine weighs on a round's
pair alike. Prints req/s, p50, p99 and server CPU per request of every run, their medians, the
per-round throughput ratios and p99 deltas, and the rides the log wrote. Exits 1 when a bar
fails (issue 10; medians of the per-round figures): throughput with the log >= 0.9x without,
p99 <= +1 ms; and no ride dropped or failed, no non-2xx answer.
Needs `wrk` (apt-get install -y wrk). Every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: make bench.* and tests.* importable

import requests  # noqa: E402

from bench.serving import (  # noqa: E402
    RIDE,
    LoadResult,
    Server,
    our_service,
    register_benchmark_model,
    run_wrk,
)
from nyctaxi.predictionlog import read_window  # noqa: E402
from tests.servers import wait_until  # noqa: E402

RATIO_BAR = 0.9
P99_DELTA_BAR_MS = 1.0
VARIANTS = ("log off", "log on")


@dataclass(frozen=True)
class Variant:
    name: str
    server: Server
    log_dir: Path | None


def counter(url: str, name: str) -> float:
    """The sum of a counter's samples (all label values) on the service's /metrics."""
    text = requests.get(url + "/metrics", timeout=10).text
    pattern = rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$"
    return sum(float(value) for value in re.findall(pattern, text, flags=re.MULTILINE))


@contextlib.contextmanager
def services(tmp: Path, env: dict[str, str]) -> Iterator[list[Variant]]:
    off_env = {**env, "PREDICT_LOG_ENABLED": "false"}
    log_dir = tmp / "on" / "prediction-log"
    on_env = {**env, "PREDICT_LOG_ENABLED": "true", "PREDICTION_LOG_DIR": str(log_dir)}
    for name in ("off", "on"):
        (tmp / name).mkdir()
    with (
        our_service(tmp / "off", off_env, "sync") as off,
        our_service(tmp / "on", on_env, "sync") as on,
    ):
        yield [Variant(VARIANTS[0], off, None), Variant(VARIANTS[1], on, log_dir)]


def measure(variants: list[Variant], args: argparse.Namespace, tmp: Path) -> list[LoadResult]:
    body = json.dumps(RIDE)
    load = {"connections": args.connections, "workdir": tmp}
    for variant in variants:  # warm-up: every worker of each
        run_wrk(variant.name, variant.server, "/predict", body, seconds=5, **load)
    results = []
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else variants[::-1]
        for variant in order:
            print(f"round {round_ + 1}/{args.rounds}: {variant.name} ...", flush=True)
            result = run_wrk(
                variant.name, variant.server, "/predict", body, seconds=args.duration, **load
            )
            results.append(result)
    return results


def logged_rides(variant: Variant, started: datetime) -> tuple[int, float, float, float]:
    """Rides in the log folder, and the service's written / dropped / failed counters, once
    the last flush is done (every worker writes each second)."""
    url = variant.server.url

    def settled() -> bool:
        written = counter(url, "predict_log_written_rides_total")
        served = counter(url, "predict_rides_predicted_total")
        lost = counter(url, "predict_log_dropped_rides_total")
        return written + lost + counter(url, "predict_log_failed_rides_total") >= served

    wait_until(settled, timeout=30, what="the log's last flush")
    assert variant.log_dir is not None
    rows = len(read_window(variant.log_dir, started, datetime.now(UTC) + timedelta(minutes=1)))
    return (
        rows,
        counter(url, "predict_log_written_rides_total"),
        counter(url, "predict_log_dropped_rides_total"),
        counter(url, "predict_log_failed_rides_total"),
    )


def median_of(results: list[LoadResult], name: str, field: str) -> float:
    return statistics.median(getattr(r, field) for r in results if r.name == name)


def print_report(
    results: list[LoadResult], logged: tuple[int, float, float, float], args: argparse.Namespace
) -> bool:
    print(
        f"\nsingle ride, wrk -c{args.connections}, {args.rounds} rounds of {args.duration} s "
        f"per service, loopback, {os.cpu_count()} cores shared by wrk and both services"
    )
    print(f"{'service':<12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>8}{'CPU ms/req':>11}")
    for r in results:
        print(
            f"{r.name:<12}{r.rps:>9.1f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{r.non2xx + r.socket_errors:>8}{r.cpu_ms_per_request:>11.3f}"
        )
    off, on = VARIANTS
    medians = {
        name: {f: median_of(results, name, f) for f in ("rps", "p50_ms", "p99_ms")}
        for name in VARIANTS
    }
    cpu = {name: median_of(results, name, "cpu_ms_per_request") for name in VARIANTS}
    for name in VARIANTS:
        m = medians[name]
        print(
            f"median {name}: {m['rps']:.1f} req/s, p50 {m['p50_ms']:.2f} ms, "
            f"p99 {m['p99_ms']:.2f} ms, CPU {cpu[name]:.3f} ms/req"
        )
    # Each round measures both back to back: a neighbour's load that comes and goes weighs on
    # a round's pair alike, so the bars take the median of the per-round ratios and deltas.
    pairs = list(zip(results[0::2], results[1::2], strict=True))
    by_round = [{p.name: p for p in pair} for pair in pairs]
    ratios = [r[on].rps / r[off].rps for r in by_round]
    deltas = [r[on].p99_ms - r[off].p99_ms for r in by_round]
    print("per round, on vs off: throughput " + ", ".join(f"{x:.3f}x" for x in ratios))
    print("per round, on vs off: p99 delta " + ", ".join(f"{x:+.2f} ms" for x in deltas))
    ratio, delta = statistics.median(ratios), statistics.median(deltas)
    rows, written, dropped, failed = logged
    errors = sum(r.non2xx + r.socket_errors for r in results)
    print(
        f"log: {rows} rides in the folder; counters: written {written:.0f}, "
        f"dropped {dropped:.0f}, failed {failed:.0f}"
    )
    bars = [
        (f"throughput with the log {ratio:.3f}x", ratio >= RATIO_BAR, f">= {RATIO_BAR}x"),
        (f"p99 delta {delta:+.2f} ms", delta <= P99_DELTA_BAR_MS, f"<= +{P99_DELTA_BAR_MS:g} ms"),
        (f"rides lost by the log {dropped + failed:.0f}", dropped + failed == 0, "0"),
        (f"rides in the folder {rows} = written {written:.0f}", rows == written, "equal"),
        (f"non-2xx and socket errors {errors}", errors == 0, "0"),
    ]
    print()
    for label, passed, bar in bars:
        print(f"{'PASS' if passed else 'FAIL'}  {label}  (bar {bar})")
    summary = {
        "off_rps": round(medians[off]["rps"], 1),
        "on_rps": round(medians[on]["rps"], 1),
        "off_p50_ms": medians[off]["p50_ms"],
        "on_p50_ms": medians[on]["p50_ms"],
        "off_p99_ms": medians[off]["p99_ms"],
        "on_p99_ms": medians[on]["p99_ms"],
        "ratio": round(ratio, 3),
        "p99_delta_ms": round(delta, 2),
        "off_cpu_ms_per_request": round(cpu[off], 3),
        "on_cpu_ms_per_request": round(cpu[on], 3),
        "logged_rides": rows,
        "cores": os.cpu_count(),
    }
    print(json.dumps(summary))
    return all(passed for _, passed, _ in bars)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="use this MLflow store's model instead of training")
    parser.add_argument("--model-name", default="nyc-taxi-duration")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--month", default="2023-01", help="month to train on")
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds: one run of each service")
    parser.add_argument("--connections", type=int, default=8)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-serving-log-") as tmp_name:
        tmp = Path(tmp_name)
        tracking_uri = args.tracking_uri
        if tracking_uri is None:
            tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
            print(f"training and registering {args.model_name} on {args.month} ...", flush=True)
            register_benchmark_model(tracking_uri, args.model_name, tmp, args.month)
        env = {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MODEL_NAME": args.model_name,
            "MODEL_ALIAS": args.alias,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        print("starting the service twice: log off, log on ...", flush=True)
        started = datetime.now(UTC)
        with services(tmp, env) as variants:
            results = measure(variants, args, tmp)
            logged = logged_rides(variants[1], started)
    return 0 if print_report(results, logged, args) else 1


if __name__ == "__main__":
    sys.exit(main())
