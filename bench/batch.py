"""Batch-scoring benchmark: one real month scored by the library in this process, against the
same month through the batch flow on a throwaway Prefect server, measured in the same run.

    python bench/batch.py                      # 2023-02, 5 runs of each
    python bench/batch.py --month 2023-03 --runs 3

A champion is trained on the month before (the library, default hyperparameters) into a
temporary NYCTAXI_HOME; nothing outside temporary folders is touched and no download is
allowed. For each path it prints rows/s of read + features + predict + write (the library's own
timing of the month, median over the runs) and, for the flow, the whole run's wall-clock time:
the difference is Prefect's own overhead (flow and task runs, the ingest subflow, API calls;
plus the model load and the month's checksum, which the library timing leaves out too), printed
apart. The flow's first run (which starts the throwaway server) is left out of the median.

Exits 1 when the bar of issue #11 fails: in-process >= 200,000 rows/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAR_ROWS_PER_SECOND = 200_000


def _environment(home: Path) -> None:
    os.environ.update(
        NYCTAXI_HOME=str(home / "home"),
        PREFECT_HOME=str(home / "prefect"),
        BATCH_OUTPUT_DIR=str(home / "out"),
        TAXI_DATA_DIR=os.environ.get("TAXI_DATA_DIR") or str(REPO.parent / "shared/data/tlc"),
        TLC_ALLOW_DOWNLOAD="false",
        MODEL_NAME="nyc-taxi-bench",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "DASK_SCHEDULER_ADDRESS"):
        os.environ.pop(name, None)


def _train_champion(month: str) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from nyctaxi import cleaning, model, tracking, training
    from nyctaxi.batch import BatchSettings
    from nyctaxi.months import file_name, parse_month

    settings = BatchSettings()
    tracking.configure(settings)
    previous = str(parse_month(month).previous())
    path = settings.taxi_data_dir / file_name(previous)  # type: ignore[operator]
    trips = cleaning.prepare_month(path, previous, "-").trips
    booster = training.train_on_trips(trips, training.TrainingParams())
    with mlflow.start_run():
        info = model.log_model(booster, input_example=trips, registered_model_name="nyc-taxi-bench")
    MlflowClient().set_registered_model_alias(
        "nyc-taxi-bench", "champion", str(info.registered_model_version)
    )


def _library_runs(month: str, runs: int) -> list[tuple[int, float]]:
    from nyctaxi import batchrun
    from nyctaxi.batch import BatchSettings
    from nyctaxi.months import file_name

    settings = BatchSettings()
    batchrun.configure(settings)
    model = batchrun.resolve_model(settings.model_name)
    source = settings.taxi_data_dir / file_name(month)  # type: ignore[operator]
    results = []
    for _ in range(runs):
        scored = batchrun.run_month(source, month, model, settings)
        results.append((scored.summary.rows, scored.summary.seconds))
    return results


def _flow_runs(month: str, runs: int) -> tuple[float, list[tuple[int, float, float]]]:
    """(first run's wall seconds, [(rows, scoring seconds, wall seconds)] of the others)."""
    from flows.batch.flow import batch_flow

    results = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        result = batch_flow(month=month)
        results.append((result.rows, result.seconds, time.perf_counter() - started))
    return results[0][2], results[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--month", default="2023-02")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nyctaxi-bench-batch-") as tmp:
        _environment(Path(tmp))
        import logging

        logging.basicConfig(level=logging.WARNING)
        _train_champion(args.month)
        library = _library_runs(args.month, args.runs)
        first_flow, flow = _flow_runs(args.month, args.runs)
    rows = library[0][0]
    lib_seconds = statistics.median(s for _, s in library)
    flow_scoring = statistics.median(s for _, s, _ in flow)
    flow_wall = statistics.median(w for _, _, w in flow)
    lines = [
        f"batch scoring {args.month}: {rows:,} rides, median of {args.runs} runs each",
        f"  {'path':<50} {'seconds':>8} {'rows/s':>12}",
        f"  {'library in-process (read+features+predict+write)':<50} "
        f"{lib_seconds:>8.3f} {rows / lib_seconds:>12,.0f}",
        f"  {'same, inside the Prefect flow (its scoring)':<50} "
        f"{flow_scoring:>8.3f} {rows / flow_scoring:>12,.0f}",
        f"  {'Prefect flow run, wall-clock':<50} {flow_wall:>8.3f} {rows / flow_wall:>12,.0f}",
        f"  Prefect's own overhead per run (wall - scoring): {flow_wall - flow_scoring:.2f} s "
        f"(first flow run, starting the throwaway server: {first_flow:.1f} s)",
    ]
    passed = rows / lib_seconds >= BAR_ROWS_PER_SECOND
    lines.append(
        f"  bar: in-process >= {BAR_ROWS_PER_SECOND:,} rows/s: {'PASS' if passed else 'FAIL'}"
    )
    print("\n".join(lines))  # noqa: T201 - the benchmark's own output
    return 0 if passed else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
