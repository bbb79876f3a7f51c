"""The training command, paying only for what a run uses:

    python -m flows.training --train-month 2023-01 --val-month 2023-02 --json
    python -m flows.training --train-from 2022-01 --train-to 2022-03 --val-month 2023-01 --json

- With DASK_SCHEDULER_ADDRESS set, the training months are prepared on that Dask cluster and the
  booster is fitted there (xgboost.dask), on either path below; the JSON says which `engine`
  fitted it ("dask" or "in-process") and with how many `workers`.

- With PREFECT_API_URL set, or `--data-source s3` (the bucket's S3Bucket block lives on a Prefect
  server), it runs the training flow on Prefect like a deployment run: tasks with retries, the
  result-cached cleaned months, report artifacts, the promotion event. Without a server URL,
  Prefect starts a throwaway server for the run (`--engine prefect` forces this path).
- Otherwise it runs the same pipeline (`nyctaxi.pipeline.run_training`) in this process with the
  library functions as steps: no Prefect import, no throwaway server. The cleaned months are
  cached as files under NYCTAXI_HOME (nyctaxi.monthcache, same key as the flow's cache); the report
  goes to the log; nothing is retried.

Arguments are checked before the heavy libraries are imported: a bad month pair exits 2 at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Literal

from nyctaxi.credentials import load_native_credentials
from nyctaxi.months import check_training_window

if TYPE_CHECKING:
    from collections.abc import Sequence

    from distributed import Client

    from nyctaxi.config import PipelineSettings
    from nyctaxi.locate import IngestedMonth
    from nyctaxi.pipeline import PreparedMonths, Steps, TrainingResult
    from nyctaxi.report import RunReport

logger = logging.getLogger("flows.training")

Engine = Literal["prefect", "in-process"]
ENGINES = ("auto", "prefect", "in-process")
NO_SERVER_BUCKET = (
    "S3 bucket: not looked in (no Prefect server, where its S3Bucket block lives: "
    "set PREFECT_API_URL)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments; exits 2 with the reason on a bad month pair or combination."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.training",
        description="Train, track and register the trip-duration model.",
    )
    parser.add_argument("--train-month", help="YYYY-MM: a window of one month")
    parser.add_argument("--train-from", help="YYYY-MM: the first month of the training window")
    parser.add_argument(
        "--train-to", help="YYYY-MM: the last month of the training window (included)"
    )
    parser.add_argument("--val-month", required=True, help="YYYY-MM, after the training months")
    parser.add_argument("--data-source", choices=["local", "s3"], default="local")
    parser.add_argument("--model-name", default=None)
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="auto (default): the training flow on Prefect when PREFECT_API_URL is set or the "
        "data source is s3, else in-process; prefect: always the flow (a throwaway Prefect "
        "server without PREFECT_API_URL); in-process: never Prefect",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.train_month and (args.train_from or args.train_to):
        parser.error("give --train-month or --train-from/--train-to, not both")
    args.train_from = args.train_from or args.train_to or args.train_month
    args.train_to = args.train_to or args.train_from
    if not args.train_from:
        parser.error("give --train-month, or --train-from and --train-to")
    try:  # before any work, and before a Prefect server is started for nothing
        check_training_window(args.train_from, args.train_to, args.val_month)
    except ValueError as error:  # a malformed month or a MonthPairError
        parser.error(str(error))
    if args.engine == "in-process" and args.data_source == "s3":
        parser.error(
            "--data-source s3 reads the bucket through its Prefect S3Bucket block: use "
            "--engine auto or prefect"
        )
    return args


def choose_engine(engine: str, data_source: str, environ: Mapping[str, str]) -> Engine:
    """Where a run goes: Prefect when asked, when a server is configured or the bucket is needed."""
    if engine == "prefect" or (
        engine == "auto" and (environ.get("PREFECT_API_URL") or data_source == "s3")
    ):
        return "prefect"
    return "in-process"


def quiet_defaults(environ: MutableMapping[str, str]) -> None:
    """Defaults for this process and any server it starts; a value set by the user wins."""
    # Telemetry is a network call per process (failed DNS lookups offline) for nothing we use.
    environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    environ.setdefault("DO_NOT_TRACK", "true")  # the Prefect SDK's opt-out (MLflow honours it too)
    environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # a throwaway server's
    # libgomp reads this when xgboost loads it: spinning OpenMP threads (the default) slow a
    # 2-core fit several times when another process (a throwaway server) wants the cores too.
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def _patient_ephemeral_server() -> Iterator[None]:
    """Without PREFECT_API_URL, Prefect starts a throwaway server; on a busy 2-core machine that
    can take longer than Prefect's 20 s default, so wait up to 2 minutes."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout
    from prefect.settings import temporary_settings

    if os.environ.get("PREFECT_API_URL") or os.environ.get(timeout.name):
        yield
        return
    with temporary_settings(updates={timeout: 120}):
        yield


def _run_on_prefect(args: argparse.Namespace) -> TrainingResult:
    from flows.training.flow import training_flow  # imports Prefect: only on this path

    with _patient_ephemeral_server():
        return training_flow(
            train_from=args.train_from,
            train_to=args.train_to,
            val_month=args.val_month,
            data_source=args.data_source,
            model_name=args.model_name,
        )


def _log_promotion(report: RunReport) -> None:
    from nyctaxi import names

    logger.info(
        "%s v%s promoted to champion (run in-process: no %s event, no Prefect server to send "
        "it to)",
        report.model_name,
        report.model_version,
        names.PROMOTED_EVENT,
    )


def _log_report(report: RunReport) -> None:
    from nyctaxi.report import render_markdown

    logger.info(
        "training report (a Prefect artifact when run as the flow):\n%s", render_markdown(report)
    )


def in_process_steps(settings: PipelineSettings) -> Steps:
    """The pipeline's steps as plain library calls (the flow wraps the same calls in tasks)."""
    from nyctaxi import locate, locking, monthcache, pipeline, tracking

    cache = monthcache.CleanedMonthCache(monthcache.cache_folder(settings))
    ingest = functools.partial(
        locate.ingest_months,
        settings=settings,
        bucket=None,
        fetch=functools.partial(locate.download_from_tlc, settings=settings),
        no_bucket=NO_SERVER_BUCKET,
    )
    return pipeline.Steps(
        ingest=ingest,
        prepare=functools.partial(pipeline.prepare_in_process, cache.prepare),
        fit=pipeline.fit_window_in_process,
        score_champion=tracking.score_champion,
        log_and_register=functools.partial(pipeline.log_and_register, settings),
        promote=tracking.promote,
        # One machine's lock: in-process runs share no server that could hold a global one.
        promotion_lock=lambda model_name: locking.file_lock(
            settings.promotion_lock_file(model_name)
        ),
        run_url=functools.partial(tracking.run_url, settings),
        announce_promotion=_log_promotion,
        publish_report=_log_report,
    )


def dask_steps(settings: PipelineSettings, client: Client) -> Steps:
    """in_process_steps with the training months prepared and fitted on the Dask cluster."""
    from nyctaxi import daskfit, monthcache

    cache = monthcache.CleanedMonthCache(monthcache.cache_folder(settings))

    def prepare(train: Sequence[IngestedMonth], val: IngestedMonth) -> PreparedMonths:
        return daskfit.prepare_window(client, train, cache.prepare), cache.prepare(val)

    return dataclasses.replace(
        in_process_steps(settings),
        prepare=prepare,
        fit=functools.partial(daskfit.fit_window, client),
    )


def _run_in_process(args: argparse.Namespace) -> TrainingResult:
    # Imported here, after the arguments are checked: pandas, XGBoost and MLflow take seconds.
    from nyctaxi import cluster, pipeline, tracking
    from nyctaxi.config import PipelineSettings
    from nyctaxi.training import TrainingParams

    settings = PipelineSettings()
    if args.model_name:
        settings = settings.model_copy(update={"model_name": args.model_name})
    request = pipeline.TrainingRequest(
        args.train_from, args.train_to, args.val_month, settings.model_name, TrainingParams()
    )
    tracking.configure(settings)
    address = cluster.scheduler_address()
    if address is None:
        return pipeline.run_training(request, in_process_steps(settings))
    with cluster.connect(address) as client:
        return pipeline.run_training(request, dask_steps(settings, client))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The native stack's generated credentials, before Prefect (which reads them at import).
    load_native_credentials()
    quiet_defaults(os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.perf_counter()
    engine = choose_engine(args.engine, args.data_source, os.environ)
    logger.info(
        "training %s..%s -> %s (%s)", args.train_from, args.train_to, args.val_month, engine
    )
    result = _run_on_prefect(args) if engine == "prefect" else _run_in_process(args)
    summary = {**result.model_dump(), "seconds": round(time.perf_counter() - started, 3)}
    if args.json:
        print(json.dumps(summary))  # noqa: T201 - the CLI's own output
    else:
        for key, value in summary.items():
            print(f"{key:>14}: {value}")  # noqa: T201
    # A run leaves ~3,000 modules and their objects behind; the garbage collections during
    # interpreter shutdown walk them all (~1 s here). Frozen objects are skipped by those; exit
    # handlers and stream flushes still run, and the process ends right after.
    gc.freeze()
    return 0
