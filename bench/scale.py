"""Scaling benchmark: fit time and peak memory per process, in-process against Dask (1, 2 workers).

Data sets: 1, 3 and 9 real months (2022-01; 2022-01..03; all nine) and SYNTHETIC x10 and x30 of
the nine (bench/growth.py, generated on first use); validation month 2023-01 (real) for all.

Each measurement runs in a fresh child process, so each peak is that run's own:
- in-process: the child prepares the months and fits as the in-process runner does
  (pipeline.prepare_in_process + fit_window_in_process); its peak RSS (VmHWM) at the end.
- dask: the child starts a LocalCluster (processes, spawned workers, no dashboard, no spilling,
  10 GiB limit per worker) and runs daskfit.prepare_window + fit_window; each worker reports its
  own peak RSS (client.run); the child's own is the driver's (client + scheduler).
Threads: 2 cores, so 1 worker x 2 threads and 2 workers x 1 thread, like the in-process fit's
2 threads: every engine gets the same cores, and the times compare engines, not thread counts.

prepare s = read + clean the training and validation months; fit s = features, XGBoost fit and
scoring the validation month (Fit.train_seconds). Synthetic rows are for time and memory only:
their RMSE is a sanity figure, never an accuracy claim.

    python bench/scale.py              # everything (x30 included)
    python bench/scale.py --quick      # without x30
    python bench/scale.py --factors 10 --growth-dir /tmp/growth

Exits 1 when the bar of issue #11 fails: on the largest set, the peak of each Dask worker (2
workers) <= 0.7 x the in-process peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make bench.* importable

from bench.growth import default_data_dir, default_out_dir, generate  # noqa: E402
from nyctaxi.months import file_name  # noqa: E402

VAL_MONTH = "2023-01"
REAL_SETS = (("1 month", ("2022-01",)), ("3 months", ("2022-01", "2022-02", "2022-03")))
NINE = ("2021-01", "2021-02", "2022-01", "2022-02", "2022-03")
NINE += ("2023-01", "2023-02", "2023-03", "2023-04")
ENGINES = (("in-process", 1), ("dask", 1), ("dask", 2))
BAR_RATIO = 0.7
WORKER_MEMORY_LIMIT = "10GiB"
CHILD_TIMEOUT_SECONDS = 3600
MB = 1024 * 1024


@dataclass(frozen=True)
class DataSet:
    name: str
    kind: str  # "real" or "synthetic"
    files: tuple[tuple[str, str], ...]  # (month cleaning is told, path)
    val_in_train: bool = False


@dataclass(frozen=True)
class Measurement:
    dataset: str
    kind: str
    engine: str
    workers: int
    train_rows: int
    prepare_s: float
    fit_s: float
    peak_mb: float  # the process's own peak (in-process) or the largest worker's (dask)
    worker_peaks_mb: tuple[float, ...]
    base_mb: float  # RSS with the libraries loaded, before any data
    driver_mb: float  # dask: the child's (client + scheduler) peak
    rmse: float
    load: float  # 1-minute load average when the run ended (the machine is shared)
    val_in_train: bool


# ---- child side: one measurement --------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _peak_mb() -> float:
    """This process's peak RSS since it started its program (VmHWM). Not ru_maxrss: Linux carries
    that across exec, so a child starts with its parent's RSS at fork time as its "peak" (here the
    parent that generated the synthetic files made every in-process child read 864 MB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: KiB on Linux


def _loaded_rss_mb() -> float:
    """RSS with the fit's libraries loaded and no data yet: what a process costs before rows."""
    import dask.dataframe  # noqa: F401
    import xgboost.dask  # noqa: F401

    import nyctaxi.daskfit  # noqa: F401
    import nyctaxi.monthcache  # noqa: F401

    return _rss_mb()


def _ingested(month: str, path: str):  # noqa: ANN202 - imported lazily
    from nyctaxi.locate import IngestedMonth

    return IngestedMonth(month, path, "-", "local", None)


def _measure_in_process(train: list, val: object) -> dict:
    from nyctaxi import monthcache, pipeline
    from nyctaxi.training import TrainingParams

    base = _loaded_rss_mb()
    started = time.perf_counter()
    window, prepared_val = pipeline.prepare_in_process(monthcache.prepare_ingested, train, val)
    prepare_s = time.perf_counter() - started
    fit = pipeline.fit_window_in_process(window, prepared_val.trips, TrainingParams())
    peak = _peak_mb()
    return dict(prepare_s=prepare_s, fit=fit, peak_mb=peak, worker_peaks_mb=(peak,), base_mb=base)


def _measure_dask(train: list, val: object, workers: int) -> dict:
    import dask.config
    from distributed import Client, LocalCluster

    from nyctaxi import daskfit, monthcache
    from nyctaxi.training import TrainingParams

    # No spilling to disk: what is measured is what the workers hold.
    memory = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False}
    with (
        dask.config.set(memory),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=max(1, (os.cpu_count() or 2) // workers),
            processes=True,
            memory_limit=WORKER_MEMORY_LIMIT,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        base = max(client.run(_loaded_rss_mb).values())
        started = time.perf_counter()
        window = daskfit.prepare_window(client, train, monthcache.prepare_ingested)
        prepared_val = monthcache.prepare_ingested(val)
        prepare_s = time.perf_counter() - started
        fit = daskfit.fit_window(client, window, prepared_val.trips, TrainingParams())
        peaks = tuple(client.run(_peak_mb).values())
    return dict(
        prepare_s=prepare_s,
        fit=fit,
        peak_mb=max(peaks),
        worker_peaks_mb=peaks,
        base_mb=base,
        driver_mb=_peak_mb(),
    )


def run_child(spec: dict) -> dict:
    train = [_ingested(month, path) for month, path in spec["files"]]
    val = _ingested(VAL_MONTH, spec["val"])
    if spec["engine"] == "in-process":
        result = _measure_in_process(train, val)
    else:
        result = _measure_dask(train, val, spec["workers"])
    fit = result.pop("fit")
    return {
        **result,
        "driver_mb": result.get("driver_mb", 0.0),
        "fit_s": fit.train_seconds,
        "train_rows": fit.train_rows,
        "rmse": fit.val_rmse,
        "load": os.getloadavg()[0],
    }


# ---- parent side: data sets, children, table ---------------------------------------------------


def datasets(data_dir: Path, growth_dir: Path, factors: list[int]) -> list[DataSet]:
    def real(months: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        return tuple((month, str(data_dir / file_name(month))) for month in months)

    sets = [DataSet(name, "real", real(months)) for name, months in REAL_SETS]
    sets.append(DataSet("9 months", "real", real(NINE), val_in_train=VAL_MONTH in NINE))
    for factor in factors:
        files = generate(factor, growth_dir, data_dir=data_dir, months=NINE)
        pairs = tuple((f.month, str(f.path)) for f in files)
        sets.append(DataSet(f"x{factor} of 9", "synthetic", pairs))
    return sets


def measure(dataset: DataSet, engine: str, workers: int, val_path: Path, log: Path) -> Measurement:
    spec = {"engine": engine, "workers": workers, "files": dataset.files, "val": str(val_path)}
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # as bench/training.py: shared cores
    with log.open("a") as stderr:
        stderr.write(f"\n==== {dataset.name} {engine} {workers}\n")
        stderr.flush()
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            timeout=CHILD_TIMEOUT_SECONDS,
        )
    if done.returncode != 0:
        sys.exit(f"{dataset.name} / {engine} x{workers} failed: see {log}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["worker_peaks_mb"] = tuple(result["worker_peaks_mb"])
    return Measurement(
        dataset.name, dataset.kind, engine, workers, val_in_train=dataset.val_in_train, **result
    )


def _rmse_cell(m: Measurement) -> str:
    if m.kind == "synthetic":
        return f"({m.rmse:.3f})s"  # sanity figure only
    return f"{m.rmse:.3f}{'*' if m.val_in_train else ''}"


def print_table(results: list[Measurement]) -> None:
    header = (
        f"{'dataset':<10} {'kind':<9} {'train rows':>11} {'engine':<10} {'wk':>2} "
        f"{'prep s':>7} {'fit s':>7} {'total s':>8} {'peak MB/proc':>12} {'workers MB':>13} "
        f"{'base MB':>7} {'driver MB':>9} {'RMSE':>9} {'load':>4}"
    )
    print(header)
    print("-" * len(header))
    for m in results:
        per_worker = "/".join(f"{p:.0f}" for p in m.worker_peaks_mb) if m.engine == "dask" else "-"
        driver = f"{m.driver_mb:.0f}" if m.engine == "dask" else "-"
        print(
            f"{m.dataset:<10} {m.kind:<9} {m.train_rows:>11,} {m.engine:<10} {m.workers:>2} "
            f"{m.prepare_s:>7.1f} {m.fit_s:>7.1f} {m.prepare_s + m.fit_s:>8.1f} "
            f"{m.peak_mb:>12.0f} {per_worker:>13} {m.base_mb:>7.0f} {driver:>9} "
            f"{_rmse_cell(m):>9} {m.load:>4.1f}"
        )
    print(
        f"validation month {VAL_MONTH} (real) for every row. * the validation month is one of "
        "the training months (RMSE optimistic). (x)s synthetic: sanity figure only, never "
        "accuracy. peak MB/proc: in-process = the process; dask = the largest worker "
        "(workers MB: each worker). base MB: RSS with the libraries loaded, before any data "
        "(largest worker for dask). "
        "load: 1-min load average at the end (2 cores, shared machine)."
    )


def bar_verdict(results: list[Measurement]) -> bool:
    """Print the bar's line for the largest set; True when it holds."""
    largest = results[-1].dataset
    of = {(m.engine, m.workers): m for m in results if m.dataset == largest}
    single, two = of[("in-process", 1)], of[("dask", 2)]
    ratio = two.peak_mb / single.peak_mb
    print(f"largest set ({largest}): dask worker peak / in-process peak = {ratio:.2f} (bar <= 0.7)")
    one = of[("dask", 1)]
    above = (two.peak_mb - two.base_mb) / (single.peak_mb - single.base_mb)
    print(
        f"  (dask 1 worker: {one.peak_mb / single.peak_mb:.2f}; 2 workers, above each process's "
        f"base RSS: {above:.2f})"
    )
    return ratio <= BAR_RATIO


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="10,30", help="synthetic sizes (default 10,30)")
    parser.add_argument("--quick", action="store_true", help="skip factors above 10")
    parser.add_argument("--growth-dir", type=Path, default=None, help=f"{default_out_dir()}")
    parser.add_argument("--data-dir", type=Path, default=None, help="the real months")
    parser.add_argument("--results", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    factors = [int(f) for f in args.factors.split(",") if f.strip()]
    if args.quick:
        factors = [f for f in factors if f <= 10]
    data_dir = args.data_dir or default_data_dir()
    sets = datasets(data_dir, args.growth_dir or default_out_dir(), factors)
    log = Path(tempfile.mkdtemp(prefix="nyctaxi-scale-")) / "children.log"
    print(f"children's logs: {log}", file=sys.stderr)
    results = []
    for dataset in sets:
        for engine, workers in ENGINES:
            m = measure(dataset, engine, workers, data_dir / file_name(VAL_MONTH), log)
            print(
                f"{m.dataset} {m.engine} x{m.workers}: {m.prepare_s:.1f}+{m.fit_s:.1f}s "
                f"peak {m.peak_mb:.0f} MB",
                file=sys.stderr,
            )
            results.append(m)
    if args.results:
        args.results.write_text(json.dumps([asdict(m) for m in results], indent=1))
    print_table(results)
    return 0 if bar_verdict(results) else 1


if __name__ == "__main__":
    sys.exit(main())
