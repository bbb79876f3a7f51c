"""The batch-scoring command:

    python -m flows.batch --month 2023-03 --json
    python -m flows.batch --from 2023-01 --to 2023-04 --model-version 3

- With PREFECT_API_URL set (or `--engine prefect`), it runs the batch flow on Prefect: the ingest
  flow (bucket included), tasks, the batch-YYYY-MM artifacts.
- Otherwise the same library steps run in this process without importing Prefect: months from
  TAXI_DATA_DIR, the download cache or TLC (no bucket: its block lives on a Prefect server).

Either way the months are scored on the Dask cluster at DASK_SCHEDULER_ADDRESS when it is set,
else in the scoring process. The JSON line holds the flow's result (nyctaxi.batchreport
.BatchResult: rows, seconds and rows_per_second of read + features + predict + write, output,
engine "dask" or "in-process", workers, per-month figures) plus `total_seconds`, the command's
wall-clock time. Arguments are checked before the heavy libraries are imported.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flows.training.cli import quiet_defaults
from nyctaxi.batchmonths import months_to_score
from nyctaxi.credentials import load_native_credentials

if TYPE_CHECKING:
    from nyctaxi.batchreport import BatchResult

logger = logging.getLogger("flows.batch")

ENGINES = ("auto", "prefect", "in-process")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments; exits 2 with the reason on bad months or versions."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.batch",
        description="Score whole months with a registered model; write Parquet predictions.",
    )
    parser.add_argument("--month", help="YYYY-MM")
    parser.add_argument("--from", dest="from_month", help="YYYY-MM, first month of a range")
    parser.add_argument("--to", dest="to_month", help="YYYY-MM, last month of a range")
    parser.add_argument("--model-name", default=None, help="default: MODEL_NAME")
    parser.add_argument(
        "--model-version", default=None, help="a version number (default: the champion alias)"
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="auto (default): the batch flow on Prefect when PREFECT_API_URL is set, else "
        "in-process; prefect: always the flow; in-process: never Prefect. Where the months are "
        "scored (Dask or this process) is DASK_SCHEDULER_ADDRESS's choice either way.",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    try:
        args.months = months_to_score(args.month, args.from_month, args.to_month)
    except ValueError as error:
        parser.error(str(error))
    if args.model_version is not None and not args.model_version.isdigit():
        parser.error(f"--model-version takes a version number, got {args.model_version!r}")
    return args


def on_prefect(engine: str, environ: Mapping[str, str]) -> bool:
    return engine == "prefect" or (engine == "auto" and bool(environ.get("PREFECT_API_URL")))


def _run_on_prefect(args: argparse.Namespace) -> BatchResult:
    from flows.batch.flow import batch_flow  # imports Prefect: only on this path

    return batch_flow(
        month=args.month,
        from_month=args.from_month,
        to_month=args.to_month,
        model_name=args.model_name,
        model_version=args.model_version,
    )


def _run_in_process(args: argparse.Namespace) -> BatchResult:
    # Imported here, after the arguments are checked: pandas, XGBoost and MLflow take seconds.
    import functools

    from nyctaxi import batchrun, cluster, locate
    from nyctaxi.batchreport import batch_result, render_markdown

    settings = batchrun.configured_settings(args.model_name)
    model = batchrun.resolve_model(settings.model_name, args.model_version)
    ingested = locate.ingest_months(
        args.months,
        settings,
        None,
        functools.partial(locate.download_from_tlc, settings=settings),
        no_bucket="S3 bucket: not looked in (no Prefect server: set PREFECT_API_URL)",
    )
    address = cluster.scheduler_address()
    with batchrun.month_scorer(model, settings, address=address) as score:
        scored = [score(month.path, month.month) for month in ingested]
    result = batch_result(scored, str(settings.output_dir()))
    for month in result.months:
        logger.info(
            "summary (a Prefect artifact when run as the flow):\n%s", render_markdown(month, result)
        )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The native stack's generated credentials, before Prefect (which reads them at import).
    load_native_credentials()
    quiet_defaults(os.environ)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.perf_counter()
    prefect = on_prefect(args.engine, os.environ)
    logger.info("scoring %s (%s)", ", ".join(args.months), "flow" if prefect else "in-process")
    result = _run_on_prefect(args) if prefect else _run_in_process(args)
    summary = {**result.model_dump(), "total_seconds": round(time.perf_counter() - started, 3)}
    if args.json:
        print(json.dumps(summary))  # noqa: T201 - the CLI's own output
    else:
        for key, value in summary.items():
            if key != "months":
                print(f"{key:>16}: {value}")  # noqa: T201
    gc.freeze()  # skip the shutdown collections over the imported modules (see flows.training)
    return 0
