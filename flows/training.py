"""Training flow: ingest -> clean -> features -> XGBoost -> MLflow -> promotion gate -> report.

Run locally (an ephemeral Prefect API is started when PREFECT_API_URL is unset):

    python -m flows.training --train-month 2023-01 --val-month 2023-02 --json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import date
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Literal

import pandas as pd
import xgboost as xgb
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as _EPHEMERAL_TIMEOUT
from prefect.settings import temporary_settings
from pydantic import BaseModel

from flows.ingest import IngestedMonth, ingest_flow
from flows.retrying import retry_when
from nyctaxi import cleaning, evaluation, names, tracking
from nyctaxi.codehash import code_digest
from nyctaxi.config import PipelineSettings
from nyctaxi.months import check_training_pair
from nyctaxi.registry import decide_promotion
from nyctaxi.report import MonthSummary, RunReport, render_markdown, table_rows
from nyctaxi.schedule import resolve_months, run_date
from nyctaxi.training import TrainingParams, train_on_trips


class TrainingResult(BaseModel):
    run_id: str
    model_name: str
    model_version: str
    alias: str
    reason: str
    val_rmse: float
    val_mae: float
    champion_rmse: float | None
    train_rows: int
    val_rows: int
    train_seconds: float
    train_month: str
    val_month: str


@functools.cache
def _cleaning_fingerprint() -> str:
    """The cleaning code this process runs (with every library module it imports) and the
    libraries that read and pickle the frame: fixed for the life of the process."""
    libraries = "-".join(f"{name}{package_version(name)}" for name in ("pandas", "pyarrow"))
    return f"{code_digest(cleaning)[:16]}-{libraries}"


def _prepare_cache_key(context: object, parameters: dict[str, object]) -> str:
    """Everything the cleaned month depends on, and nothing else: the file's content and the
    cleaning fingerprint. Never a DataFrame hash, never the caller's role for the month."""
    ingested = parameters["ingested"]
    assert isinstance(ingested, IngestedMonth)
    return f"prepare-{ingested.month}-{ingested.sha256}-{_cleaning_fingerprint()}"


@task(cache_key_fn=_prepare_cache_key, persist_result=True)
def prepare_month(ingested: IngestedMonth) -> tuple[pd.DataFrame, cleaning.CleanedMonth]:
    """Read, normalise and clean one month; the dropped-rows counts go to the log and the report.

    Cached: the same file is prepared once whatever role later runs give it."""
    raw = cleaning.read_trips(Path(ingested.path))
    clean, dropped = cleaning.clean_trips(raw, ingested.month)
    get_run_logger().info(
        "%s: kept %d of %d rows; dropped %s", ingested.month, len(clean), len(raw), dict(dropped)
    )
    facts = cleaning.CleanedMonth(ingested.month, ingested.sha256, len(raw), len(clean), dropped)
    return clean, facts


@task(cache_policy=NO_CACHE)
def train_model(
    train: pd.DataFrame, val: pd.DataFrame, hyperparams: TrainingParams
) -> tuple[xgb.Booster, dict[str, float]]:
    """Fit on the train month, score on the validation month; train_seconds times both."""
    started = time.perf_counter()
    booster = train_on_trips(train, hyperparams)
    scores = evaluation.evaluate_on_trips(booster, val)
    metrics = {
        "val_rmse": scores.rmse,
        "val_mae": scores.mae,
        "train_seconds": round(time.perf_counter() - started, 3),
        "train_rows": len(train),
        "val_rows": len(val),
    }
    get_run_logger().info(
        "validation RMSE %.4f, MAE %.4f, fit+evaluate %.2fs",
        metrics["val_rmse"],
        metrics["val_mae"],
        metrics["train_seconds"],
    )
    return booster, metrics


# MLflow calls are retried after network or server faults only: a refused request fails the
# same way again, and each retry of log_and_register would leave one more failed MLflow run.
_mlflow_may_recover = retry_when(tracking.is_transient)


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_mlflow_may_recover
)
def champion_on(model_name: str, val: object) -> tuple[str, float] | None:
    """The current champion's version and RMSE on *these* validation rows (None if none)."""
    return tracking.score_champion(model_name, val)


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_mlflow_may_recover
)
def log_and_register(
    settings: PipelineSettings,
    booster: object,
    metrics: dict,
    months: list[MonthSummary],
    hyperparams: TrainingParams,
    val: object,
) -> tuple[str, str]:
    return tracking.log_run(settings, booster, metrics, months, hyperparams, val)


@task(cache_policy=NO_CACHE)
def publish_report(report: RunReport) -> None:
    key = f"training-report-{report.model_name}".lower()
    create_markdown_artifact(
        markdown=render_markdown(report),
        key=key,
        description=f"{report.model_name} v{report.model_version}",
    )
    create_table_artifact(
        table=table_rows(report), key=f"{key}-table", description="rows and scores per month"
    )


@flow(name="training")
def training_flow(
    train_month: str | None = None,
    val_month: str | None = None,
    data_source: Literal["local", "s3"] = "local",
    model_name: str | None = None,
    hyperparams: TrainingParams | None = None,
    as_of: date | None = None,
) -> TrainingResult:
    """Train on one month, validate on a later one, register, and promote only a better model.

    Months left empty (a scheduled run) default to the newest month published by `as_of` (the
    day the run was scheduled for, when not given) for validation and the month before it for
    training; one month given, the other is its neighbour. Validation must come after training.
    """
    today = as_of or run_date(flow_run.get_scheduled_start_time())
    train_month, val_month = resolve_months(train_month, val_month, today)
    check_training_pair(train_month, val_month)  # before any work: a clear error, nothing logged
    settings = PipelineSettings()
    if model_name:
        settings = settings.model_copy(update={"model_name": model_name})
    hyperparams = hyperparams or TrainingParams()
    tracking.configure(settings)

    ingested = ingest_flow([train_month, val_month], require_bucket=data_source == "s3")
    train, train_facts = prepare_month(ingested[0])
    val, val_facts = prepare_month(ingested[1])
    train_summary = MonthSummary.of(train_facts, "train")
    val_summary = MonthSummary.of(val_facts, "validation")
    booster, metrics = train_model(train, val, hyperparams)

    champion = champion_on(settings.model_name, val)
    months = [train_summary, val_summary]
    run_id, version = log_and_register(settings, booster, metrics, months, hyperparams, val)
    decision = decide_promotion(
        metrics["val_rmse"],
        val_month=val_month,
        champion_version=champion[0] if champion else None,
        champion_rmse=champion[1] if champion else None,
    )
    tracking.promote(
        settings.model_name,
        version,
        decision,
        metrics["val_rmse"],
        train_month=train_month,
        val_month=val_month,
    )
    if decision.promoted:
        emit_event(
            event=names.PROMOTED_EVENT,
            resource={"prefect.resource.id": names.model_resource_id(settings.model_name)},
            payload={
                "version": version,
                "val_rmse": metrics["val_rmse"],
                "reason": decision.reason,
            },
        )
    report = RunReport(
        settings.model_name,
        version,
        decision.alias,
        decision.reason,
        metrics["val_rmse"],
        metrics["val_mae"],
        decision.champion_version,
        decision.champion_rmse,
        metrics["train_seconds"],
        (train_summary, val_summary),
        tracking.run_url(settings, run_id),
    )
    publish_report(report)
    return TrainingResult(
        run_id=run_id,
        model_name=settings.model_name,
        model_version=version,
        alias=decision.alias,
        reason=decision.reason,
        val_rmse=metrics["val_rmse"],
        val_mae=metrics["val_mae"],
        champion_rmse=decision.champion_rmse,
        train_rows=train_summary.rows_kept,
        val_rows=val_summary.rows_kept,
        train_seconds=metrics["train_seconds"],
        train_month=train_month,
        val_month=val_month,
    )


@contextlib.contextmanager
def _patient_ephemeral_server() -> Iterator[None]:
    """Without PREFECT_API_URL the CLI starts a throwaway Prefect server; on a busy 2-core
    machine that can take longer than Prefect's 20 s default, so wait up to 2 minutes."""
    if os.environ.get("PREFECT_API_URL") or os.environ.get(_EPHEMERAL_TIMEOUT.name):
        yield
        return
    with temporary_settings(updates={_EPHEMERAL_TIMEOUT: 120}):
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train, track and register the trip-duration model."
    )
    parser.add_argument("--train-month", required=True, help="YYYY-MM")
    parser.add_argument("--val-month", required=True, help="YYYY-MM, after --train-month")
    parser.add_argument("--data-source", choices=["local", "s3"], default="local")
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    try:  # before a Prefect server is started for nothing
        check_training_pair(args.train_month, args.val_month)
    except ValueError as error:  # a malformed month or a MonthPairError
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.perf_counter()
    with _patient_ephemeral_server():
        result = training_flow(
            train_month=args.train_month,
            val_month=args.val_month,
            data_source=args.data_source,
            model_name=args.model_name,
        )
    summary = {**result.model_dump(), "seconds": round(time.perf_counter() - started, 3)}
    if args.json:
        print(json.dumps(summary))  # noqa: T201 - the CLI's own output
    else:
        for key, value in summary.items():
            print(f"{key:>14}: {value}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
