"""CLI training benchmark: the local training command end to end, against the flow on a
throwaway Prefect server (the command's only path before it learned to run in-process).

    python bench/cli_training.py                      # 3 runs of each, 2023-01 -> 2023-02
    python bench/cli_training.py --runs 5 --train-month 2023-03 --val-month 2023-04

Each run is a fresh process timed from spawn to exit (imports, MLflow store, everything), the
two commands alternating so that both see the same load. Both start from an empty NYCTAXI_HOME
(and the anchor from an empty PREFECT_HOME), so each one's first run also creates the MLflow
store and cleans the months, as a first run on a new machine does; later runs reuse them. No
server URL is passed on (PREFECT_API_URL, MLFLOW_TRACKING_URI): nothing outside the temporary
folders is touched, and no download is allowed.

Exits 1 when the bar of issue #7 fails: median <= 20 s, same JSON keys as the flow's result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nyctaxi.pipeline import TrainingResult

REPO = Path(__file__).resolve().parents[1]
MAX_MEDIAN_SECONDS = 20.0
# The JSON contract of `python -m flows.training --json` (TrainingResult + seconds); the
# integration test spells it out literally.
KEYS = (*TrainingResult.model_fields, "seconds")
CANDIDATE = "in-process (auto, no PREFECT_API_URL)"
ANCHOR = "flow on a throwaway Prefect server (--engine prefect)"


@dataclass(frozen=True)
class Run:
    wall: float  # spawn to exit, as the user waits
    result: dict[str, object]


def data_dir() -> str:
    configured = os.environ.get("TAXI_DATA_DIR")
    return configured or str(REPO.parent / "shared" / "data" / "tlc")


def environment(home: Path, prefect_home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")
    }
    env.update(
        NYCTAXI_HOME=str(home),
        PREFECT_HOME=str(prefect_home),
        TAXI_DATA_DIR=data_dir(),
        TLC_ALLOW_DOWNLOAD="false",
    )
    return env


def run_once(command: list[str], env: dict[str, str]) -> Run:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}")
    return Run(wall, json.loads(done.stdout.strip().splitlines()[-1]))


def command(args: argparse.Namespace, engine: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flows.training",
        "--train-month",
        args.train_month,
        "--val-month",
        args.val_month,
        "--engine",
        engine,
        "--json",
    ]


def print_row(label: str, ours: float, theirs: float, note: str = "") -> None:
    print(f"{label:<7}{ours:>40.1f} s{theirs:>56.1f} s{note}", flush=True)  # noqa: T201


def report(candidate: list[Run], anchor: list[Run]) -> bool:
    """Print the medians and the comparison; True when the bar holds."""
    ours_median = statistics.median(run.wall for run in candidate)
    theirs_median = statistics.median(run.wall for run in anchor)
    print_row("median", ours_median, theirs_median)
    keys_ok = all(tuple(run.result) == KEYS for run in candidate + anchor)
    same_model = {round(float(run.result["val_rmse"]), 6) for run in candidate + anchor}
    fast = ours_median <= MAX_MEDIAN_SECONDS
    print(  # noqa: T201
        f"in-process median {ours_median:.1f} s vs anchor {theirs_median:.1f} s: "
        f"{theirs_median / ours_median:.1f}x faster, {theirs_median - ours_median:.1f} s saved "
        f"per run; bar <= {MAX_MEDIAN_SECONDS:.0f} s: {'PASS' if fast else 'FAIL'}"
    )
    print(  # noqa: T201
        f"JSON keys as the contract: {'yes' if keys_ok else 'NO'}; "
        f"validation RMSE of every run: {sorted(same_model)}"
    )
    return fast and keys_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-month", default="2023-01")
    parser.add_argument("--val-month", default="2023-02")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(  # noqa: T201
        f"{args.runs} runs each of python -m flows.training --train-month {args.train_month} "
        f"--val-month {args.val_month} --json (data: {data_dir()})",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        ours_env = environment(Path(tmp) / "ours", Path(tmp) / "ours-prefect")
        anchor_env = environment(Path(tmp) / "anchor", Path(tmp) / "anchor-prefect")
        candidate, anchor = [], []
        print(f"{'run':<7}{CANDIDATE:>42}{ANCHOR:>58}", flush=True)  # noqa: T201
        for number in range(1, args.runs + 1):  # alternating: both see the same load
            candidate.append(run_once(command(args, "auto"), ours_env))
            anchor.append(run_once(command(args, "prefect"), anchor_env))
            note = "  (fresh NYCTAXI_HOME)" if number == 1 else ""
            print_row(str(number), candidate[-1].wall, anchor[-1].wall, note)
    return 0 if report(candidate, anchor) else 1


if __name__ == "__main__":
    sys.exit(main())
