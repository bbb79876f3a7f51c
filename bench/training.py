"""Training benchmark: our recipe against the MLOps-zoomcamp course recipe, in one run.

Both train on the same month and are scored on the same validation rows (duration 1-60 minutes,
nothing else dropped). Time is fit + evaluate wall time (feature building, training, predicting
the validation rows, metrics); reading the files is not timed for either. Peak RSS is measured in
a child process that does one whole training run on one month (read, clean, train, evaluate).

    python bench/training.py --train-month 2023-01 --val-month 2023-02
    python bench/training.py --all          # 2021-01/02, 2023-01/02, 2023-03/04

Exits 1 when a bar of issue #2 fails: RMSE >= 10% below the course, >= 10x faster, RSS < 1.5 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# libgomp reads this when xgboost loads it, so it must be set before the imports below. Spinning
# OpenMP threads (the default) make 2-thread training 3-10x slower when other processes share the
# cores; PASSIVE threads sleep at barriers. It applies to both recipes alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402
import xgboost as xgb  # noqa: E402
from sklearn.feature_extraction import DictVectorizer  # noqa: E402

from nyctaxi import cleaning, evaluation, features, training  # noqa: E402
from nyctaxi.months import file_name, parse_month  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIRS = (("2021-01", "2021-02"), ("2023-01", "2023-02"), ("2023-03", "2023-04"))
MIN_IMPROVEMENT = 0.10
MIN_SPEEDUP = 10.0
MAX_RSS_BYTES = 1.5 * 1024**3
# The course's tuned parameters (MLOps zoomcamp, module 3), 100 rounds.
COURSE_PARAMS = {
    "learning_rate": 0.09585355369315604,
    "max_depth": 30,
    "min_child_weight": 1.060597050922164,
    "objective": "reg:linear",
    "reg_alpha": 0.018060244040060163,
    "reg_lambda": 0.011658731377413597,
    "seed": 42,
}
COURSE_ROUNDS = 100


@dataclass(frozen=True)
class Result:
    rmse: float
    seconds: float  # wall time
    cpu_seconds: float  # this process's CPU time (all threads): less sensitive to a busy machine


class Stopwatch:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def result(self, rmse: float) -> Result:
        return Result(rmse, time.perf_counter() - self.wall, time.process_time() - self.cpu)


def read_month(data_dir: Path, month: str) -> pd.DataFrame:
    path = data_dir / file_name(month)
    if not path.is_file():
        sys.exit(f"missing {path}: set --data-dir or TAXI_DATA_DIR")
    return pd.read_parquet(path)


def course_recipe(train: pd.DataFrame, val: pd.DataFrame) -> Result:
    """DictVectorizer over PU_DO + trip_distance, XGBoost depth 30, 100 rounds."""

    def dicts(trips: pd.DataFrame) -> list[dict]:
        frame = pd.DataFrame(
            {
                "PU_DO": trips["PULocationID"].astype(str)
                + "_"
                + trips["DOLocationID"].astype(str),
                "trip_distance": trips["trip_distance"],
            }
        )
        return frame.to_dict(orient="records")

    watch = Stopwatch()
    vectorizer = DictVectorizer()
    X_train = vectorizer.fit_transform(dicts(train))
    X_val = vectorizer.transform(dicts(val))
    dtrain = xgb.DMatrix(X_train, label=cleaning.target(train))
    booster = xgb.train(COURSE_PARAMS, dtrain, num_boost_round=COURSE_ROUNDS)
    predicted = booster.predict(xgb.DMatrix(X_val))
    return watch.result(evaluation.rmse(cleaning.target(val), predicted))


def our_recipe(train_clean: pd.DataFrame, val: pd.DataFrame) -> Result:
    """What flows.training times as train_seconds: features, fit, evaluate."""
    watch = Stopwatch()
    booster = training.train_on_trips(train_clean, training.TrainingParams())
    return watch.result(evaluation.evaluate_on_trips(booster, val).rmse)


def peak_rss_bytes(data_dir: Path, train_month: str, val_month: str) -> int:
    """Peak RSS of a child process doing one whole training run on one month."""
    command = [sys.executable, __file__, "--rss-probe", "--data-dir", str(data_dir)]
    command += ["--train-month", train_month, "--val-month", val_month]
    subprocess.run(command, check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux


def rss_probe(data_dir: Path, train_month: str, val_month: str) -> None:
    train, _ = cleaning.clean_trips(read_month(data_dir, train_month), train_month)
    val = cleaning.course_rows(read_month(data_dir, val_month))
    our_recipe(train, val)


def bench_pair(data_dir: Path, train_month: str, val_month: str, repeats: int) -> bool:
    train_raw, val_raw = read_month(data_dir, train_month), read_month(data_dir, val_month)
    val = cleaning.course_rows(val_raw)
    train_clean, dropped = cleaning.clean_trips(train_raw, train_month)
    train_course = cleaning.course_rows(train_raw)
    course = course_recipe(train_course, val)
    ours_runs = [our_recipe(train_clean, val) for _ in range(repeats)]
    ours = Result(
        ours_runs[0].rmse,
        statistics.median(r.seconds for r in ours_runs),
        statistics.median(r.cpu_seconds for r in ours_runs),
    )
    improvement = 1 - ours.rmse / course.rmse
    speedup = course.seconds / ours.seconds
    print(f"\n== train {train_month}, validate {val_month} ({len(val)} validation rows) ==")
    print(f"train rows: course {len(train_course)}, ours {len(train_clean)} (dropped {dropped})")
    print(f"{'recipe':<8}{'val RMSE':>10}{'train_seconds':>15}{'cpu_seconds':>13}")
    for name, result in (("course", course), ("ours", ours)):
        print(f"{name:<8}{result.rmse:>10.3f}{result.seconds:>15.2f}{result.cpu_seconds:>13.2f}")
    print(f"ours: median of {repeats} runs: " + ", ".join(f"{r.seconds:.2f}s" for r in ours_runs))
    print(f"load average (1, 5, 15 min): {os.getloadavg()} on {os.cpu_count()} cores")
    print(f"RMSE improvement: {improvement:.1%} (bar >= {MIN_IMPROVEMENT:.0%})")
    print(f"speed ratio: {speedup:.1f}x (bar >= {MIN_SPEEDUP:.0f}x)")
    return improvement >= MIN_IMPROVEMENT and speedup >= MIN_SPEEDUP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-month", default="2023-01")
    parser.add_argument("--val-month", default="2023-02")
    parser.add_argument("--all", action="store_true", help="run the three reference pairs")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("TAXI_DATA_DIR", REPO.parent / "shared" / "data" / "tlc")),
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median)")
    parser.add_argument("--rss-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pairs = PAIRS if args.all else ((args.train_month, args.val_month),)
    for train_month, val_month in pairs:
        parse_month(train_month), parse_month(val_month)  # fail early on a typo
    if args.rss_probe:
        rss_probe(args.data_dir, args.train_month, args.val_month)
        return 0

    print(f"xgboost {xgb.__version__}, {os.cpu_count()} cores, features: {features.FEATURE_NAMES}")
    print(f"our params: {training.TrainingParams().model_dump()}")
    # Measured first, while this process has started no other child.
    rss = peak_rss_bytes(args.data_dir, *pairs[0])
    passed = [bench_pair(args.data_dir, t, v, args.repeats) for t, v in pairs]
    rss_ok = rss < MAX_RSS_BYTES
    print(
        f"\npeak RSS of one training run on {pairs[0][0]}: {rss / 1024**2:.0f} MiB "
        f"(bar < {MAX_RSS_BYTES / 1024**3:.1f} GiB)"
    )
    ok = all(passed) and rss_ok
    print("ALL BARS PASS" if ok else "A BAR FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
