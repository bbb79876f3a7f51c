"""Serving benchmark: our Flask service vs `mlflow models serve` on the same registered version.

    .venv/bin/python bench/serving.py                 # train + register a model in a temp store
    .venv/bin/python bench/serving.py --tracking-uri http://127.0.0.1:5000   # an existing model

Both servers run 2 worker processes with one OpenMP thread each and get the same single-ride
POST from wrk (loopback, 8 connections, the same duration). Prints req/s, p50 and p99 of both,
the ratio, and the p50 latency of a 1,000-ride batch on our service. Exits 1 when a bar fails:
throughput >= 10x mlflow's, single-ride p99 <= 15 ms, batch p50 <= 50 ms, no non-2xx answer.
Needs `wrk` (apt-get install -y wrk). Every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: make bench.* and tests.* importable

import requests  # noqa: E402

from tests.servers import (  # noqa: E402
    VENV_BIN,
    free_port,
    http_ok,
    ride_payloads,
    running_process,
    taxi_data_dir,
    wait_until,
)

RIDE = {
    "PULocationID": 43,
    "DOLocationID": 151,
    "trip_distance": 1.2,
    "lpep_pickup_datetime": "2023-03-01T08:15:00",
}
RATIO_BAR = 10.0
P99_BAR_MS = 15.0
BATCH_BAR_MS = 50.0
BATCH_SIZE = 1000
START_TIMEOUT = 300  # seconds; imports alone take tens of seconds on a busy 2-core machine

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT {{\\"requests\\": %d, \\"duration_us\\": %d, \\"non2xx\\": %d, "
    .. "\\"socket_errors\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d}}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Server:
    url: str
    pgid: int  # the server runs in its own process group (running_process starts a session)


@dataclass(frozen=True)
class LoadResult:
    name: str
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the live processes in a process group (a server and workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime stime
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(
    name: str,
    server: Server,
    path: str,
    body: str,
    *,
    seconds: int,
    connections: int,
    workdir: Path,
) -> LoadResult:
    script = workdir / f"{name.split()[0]}.lua"
    script.write_text(WRK_SCRIPT.format(body=body))
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s"]
    cpu_before = group_cpu_seconds(server.pgid)
    output = subprocess.run(
        [*args, str(script), server.url + path], check=True, capture_output=True, text=True
    ).stdout
    cpu = group_cpu_seconds(server.pgid) - cpu_before
    line = next(line for line in output.splitlines() if line.startswith("WRK_RESULT "))
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    return LoadResult(
        name=name,
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        non2xx=raw["non2xx"],
        socket_errors=raw["socket_errors"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        cpu_ms_per_request=cpu * 1000 / max(raw["requests"], 1),
    )


def register_benchmark_model(tracking_uri: str, name: str, tmp: Path, month: str) -> str:
    """Train with the pipeline's default hyper-parameters on a real month; alias champion."""
    from bench.serving_model import clean_month, register_version, train_booster

    trips = clean_month(taxi_data_dir(), month)
    booster = train_booster(trips)
    artifacts = (tmp / "artifacts").as_uri()
    return register_version(
        tracking_uri, name, booster, trips, alias="champion", artifact_location=artifacts
    )


def alive(process: subprocess.Popen[bytes], log_file: Path) -> bool:
    """True while process runs; raises (with the log's tail) once it has exited."""
    if process.poll() is None:
        return True
    tail = "\n".join(log_file.read_text().splitlines()[-30:])
    raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{tail}")


def all_workers_ready(url: str) -> bool:
    """/ready speaks for one worker; the gauge aggregated over workers (livemin) for all. A
    worker still importing and loading would steal the CPU from the measurement."""
    try:
        text = requests.get(url + "/metrics", timeout=5).text
    except requests.RequestException:
        return False
    return "predict_model_ready 1.0" in text.splitlines()


@contextlib.contextmanager
def our_service(tmp: Path, env: dict[str, str], worker_class: str) -> Iterator[Server]:
    port = free_port()
    service_env = {
        # The prediction log (on by default) goes to the bench's temp folder, not a real home.
        "PREDICTION_LOG_DIR": str(tmp / "prediction-log"),
        **env,
        "PREDICT_HOST": "127.0.0.1",
        "PREDICT_PORT": str(port),
        "PREDICT_WORKERS": "2",
        "PREDICT_WORKER_CLASS": worker_class,
        "PREDICT_THREADS": "4" if worker_class == "gthread" else "1",
        "PREDICT_MODEL_CACHE_DIR": str(tmp / "model-cache"),
        # A token `make` exported from .env would lock the bench's own /metrics probe out.
        "PREDICT_API_TOKEN": "",
    }
    args = [
        str(VENV_BIN / "gunicorn"),
        "--config",
        "services/predict/gunicorn_conf.py",
        "services.predict.app:create_app()",
    ]
    log_file = tmp / "predict.log"
    with running_process(args, log_file=log_file, env=service_env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: alive(process, log_file) and all_workers_ready(url),
            timeout=START_TIMEOUT,
            what="predict service",
            log_file=log_file,
        )
        yield Server(url, process.pid)


@contextlib.contextmanager
def mlflow_models_serve(tmp: Path, env: dict[str, str], model_uri: str) -> Iterator[Server]:
    port = free_port()
    args = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager"]
    args += ["local", "-w", "2", "-h", "127.0.0.1", "-p", str(port)]
    log_file = tmp / "mlflow-models-serve.log"
    # It execs `uvicorn` through bash: the venv's bin must be on PATH.
    serve_env = {**env, "OMP_NUM_THREADS": "1", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    with running_process(args, log_file=log_file, env=serve_env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: alive(process, log_file) and http_ok(url + "/ping"),
            timeout=START_TIMEOUT,
            what="mlflow models serve",
            log_file=log_file,
        )
        yield Server(url, process.pid)


def batch_rides(month: str) -> list[dict[str, object]]:
    from bench.serving_model import clean_month

    trips = clean_month(taxi_data_dir(), month).head(BATCH_SIZE)
    return ride_payloads(trips)


def batch_p50_ms(url: str, rides: list[dict[str, object]], repeats: int) -> float:
    body = json.dumps(rides)
    headers = {"Content-Type": "application/json"}
    timings = []
    with requests.Session() as session:
        for _ in range(repeats):
            started = time.perf_counter()
            response = session.post(url + "/predict", data=body, headers=headers, timeout=30)
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            if len(response.json()["predictions"]) != len(rides):
                raise AssertionError("a batch answer lost rides")
    return statistics.median(timings)


def same_model_check(ours: str, theirs: str) -> tuple[str, float, float]:
    """Both servers answer the sample ride with the same model (up to our 3-decimal rounding)."""
    mine = requests.post(ours + "/predict", json=RIDE, timeout=30).json()
    reply = requests.post(
        theirs + "/invocations", json={"dataframe_records": [RIDE]}, timeout=60
    ).json()
    other = float(reply["predictions"][0])
    if abs(mine["duration"] - other) > 0.01:
        raise AssertionError(f"different answers: ours {mine['duration']}, mlflow's {other}")
    return mine["model"]["version"], mine["duration"], other


def print_report(results: list[LoadResult], batch_ms: float, args: argparse.Namespace) -> bool:
    ours, theirs = results
    ratio = ours.rps / theirs.rps if theirs.rps else float("inf")
    print(f"\nsingle ride, wrk -c{args.connections} for {args.duration} s each, loopback")
    header = f"{'server':<40}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>8}{'errors':>7}"
    print(header + f"{'CPU ms/req':>11}")
    for result in results:
        print(
            f"{result.name:<40}{result.rps:>9.1f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
            f"{result.non2xx:>8}{result.socket_errors:>7}{result.cpu_ms_per_request:>11.2f}"
        )
    cpu_ratio = theirs.cpu_ms_per_request / max(ours.cpu_ms_per_request, 1e-9)
    # On a busy machine wall-clock numbers mostly measure the wait for a CPU; CPU time per
    # request (server processes only) shows the cost of the code itself.
    print(f"CPU time per request, mlflow / ours: {cpu_ratio:.1f}x")
    no_errors = ours.non2xx == 0 and ours.socket_errors == 0
    bars = [
        (f"throughput ratio {ratio:.1f}x", ratio >= RATIO_BAR, f">= {RATIO_BAR:g}x"),
        (f"single p99 {ours.p99_ms:.2f} ms", ours.p99_ms <= P99_BAR_MS, f"<= {P99_BAR_MS:g} ms"),
        (f"batch of {BATCH_SIZE} p50 {batch_ms:.2f} ms", batch_ms <= BATCH_BAR_MS,
         f"<= {BATCH_BAR_MS:g} ms"),
        (f"non-2xx {ours.non2xx}, socket errors {ours.socket_errors}", no_errors, "0"),
    ]  # fmt: skip
    print()
    for label, passed, bar in bars:
        print(f"{'PASS' if passed else 'FAIL'}  {label}  (bar {bar})")
    summary = {
        "ours_rps": round(ours.rps, 1),
        "ours_p50_ms": ours.p50_ms,
        "ours_p99_ms": ours.p99_ms,
        "mlflow_rps": round(theirs.rps, 1),
        "mlflow_p50_ms": theirs.p50_ms,
        "mlflow_p99_ms": theirs.p99_ms,
        "ratio": round(ratio, 1),
        "ours_cpu_ms_per_request": round(ours.cpu_ms_per_request, 3),
        "mlflow_cpu_ms_per_request": round(theirs.cpu_ms_per_request, 3),
        "cpu_ratio": round(cpu_ratio, 1),
        "batch_1000_p50_ms": round(batch_ms, 2),
        "worker_class": args.worker_class,
    }
    print(json.dumps(summary))
    return all(passed for _, passed, _ in bars)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="use this MLflow store's model instead of training")
    parser.add_argument("--model-name", default="nyc-taxi-duration")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--month", default="2023-01", help="month to train on and batch from")
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per server")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch-repeats", type=int, default=40)
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_name:
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
        model_uri = f"models:/{args.model_name}@{args.alias}"
        print(f"starting both servers on {model_uri} ...", flush=True)
        with (
            our_service(tmp, env, args.worker_class) as ours,
            mlflow_models_serve(tmp, env, model_uri) as theirs,
        ):
            version, mine, other = same_model_check(ours.url, theirs.url)
            print(f"version {version}: sample ride {mine} min (ours) vs {other:.3f} (mlflow)")
            targets = [
                (f"predict service (gunicorn {args.worker_class} x2)", ours, "/predict", RIDE),
                (
                    "mlflow models serve (-w 2)",
                    theirs,
                    "/invocations",
                    {"dataframe_records": [RIDE]},
                ),
            ]
            results = []
            for name, server, path, payload in targets:
                load = {"connections": args.connections, "workdir": tmp}
                body = json.dumps(payload)
                run_wrk(name, server, path, body, seconds=5, **load)  # warm-up: every worker
                print(f"measuring {name} ...", flush=True)
                results.append(run_wrk(name, server, path, body, seconds=args.duration, **load))
            batch_ms = batch_p50_ms(ours.url, batch_rides(args.month), args.batch_repeats)
    return 0 if print_report(results, batch_ms, args) else 1


if __name__ == "__main__":
    sys.exit(main())
