"""Training flow: ingest -> clean -> features -> XGBoost -> MLflow -> promotion gate -> report.

The step order is `nyctaxi.pipeline.run_training`; this flow runs each step as a Prefect task
(retries, the cleaned-month result cache, artifacts, the promotion event). Run locally:

    python -m flows.training --train-month 2023-01 --val-month 2023-02 --json

(see flows/training/cli.py: with PREFECT_API_URL set it runs this flow on that server, without
it the same pipeline in-process, with no Prefect at all).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from flows.ingest import ingest_flow
from flows.prepare import prepare_month
from flows.retrying import retry_when
from flows.training import runner
from flows.training.promotion_lock import promotion_lock
from nyctaxi import names, pipeline, tracking
from nyctaxi.cleaning import PreparedMonth
from nyctaxi.config import PipelineSettings
from nyctaxi.locate import IngestedMonth
from nyctaxi.pipeline import Champion, Fit, TrainingResult, TrainingWindow
from nyctaxi.report import MonthSummary, RunReport, render_markdown, table_rows
from nyctaxi.schedule import resolve_window, run_date
from nyctaxi.training import TrainingParams

__all__ = ["TrainingResult", "training_flow"]


def prepare_months(
    train: Sequence[IngestedMonth], val: IngestedMonth
) -> tuple[TrainingWindow, PreparedMonth]:
    """Every month at once (task mapping): in threads here, or on the Dask workers."""
    window_futures = prepare_month.map(list(train))
    val_future = prepare_month.submit(val)
    return runner.window_from(window_futures), val_future.result()


@task(cache_policy=NO_CACHE)
def train_model(window: TrainingWindow, val: pd.DataFrame, hyperparams: TrainingParams) -> Fit:
    """Fit on the training window (xgboost.dask on the cluster, if any), score on the validation
    month; train_seconds times both. Runs in the flow's process: on Dask it only drives."""
    client = runner.dask_client()
    if client is None:
        fit = pipeline.fit_window_in_process(window, val, hyperparams)
    else:
        from nyctaxi import daskfit

        fit = daskfit.fit_window(client, window, val, hyperparams)
    get_run_logger().info(
        "validation RMSE %.4f, MAE %.4f, fit+evaluate %.2fs (%s, %d workers, %d rows)",
        fit.val_rmse,
        fit.val_mae,
        fit.train_seconds,
        fit.engine,
        fit.workers,
        fit.train_rows,
    )
    return fit


# MLflow calls are retried after network or server faults only: a refused request fails the
# same way again, and each retry of log_and_register would leave one more failed MLflow run.
_mlflow_may_recover = retry_when(tracking.is_transient)


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_mlflow_may_recover
)
def champion_on(model_name: str, val: pd.DataFrame) -> Champion | None:
    """The current champion's version and RMSE on *these* validation rows (None if none)."""
    return tracking.score_champion(model_name, val)


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_mlflow_may_recover
)
def log_and_register(
    settings: PipelineSettings,
    fit: Fit,
    months: list[MonthSummary],
    hyperparams: TrainingParams,
    val: pd.DataFrame,
) -> tuple[str, str]:
    return pipeline.log_and_register(settings, fit, months, hyperparams, val)


def announce_promotion(report: RunReport) -> None:
    """The event automations react to (e.g. the prediction service's reload webhook)."""
    emit_event(
        event=names.PROMOTED_EVENT,
        resource={"prefect.resource.id": names.model_resource_id(report.model_name)},
        payload={
            "version": report.model_version,
            "val_rmse": report.val_rmse,
            "reason": report.reason,
        },
    )


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


def _flow_steps(settings: PipelineSettings, data_source: Literal["local", "s3"]) -> pipeline.Steps:
    """Each pipeline step as a task (or a plain call where Prefect adds nothing)."""
    return pipeline.Steps(
        ingest=functools.partial(ingest_flow, require_bucket=data_source == "s3"),
        prepare=prepare_months,
        fit=train_model,
        score_champion=champion_on,
        log_and_register=functools.partial(log_and_register, settings),
        promote=tracking.promote,
        promotion_lock=functools.partial(promotion_lock, settings),
        run_url=functools.partial(tracking.run_url, settings),
        announce_promotion=announce_promotion,
        publish_report=publish_report,
    )


@flow(name=names.TRAINING_FLOW, task_runner=runner.task_runner())
def training_flow(
    train_month: str | None = None,
    val_month: str | None = None,
    data_source: Literal["local", "s3"] = "local",
    model_name: str | None = None,
    hyperparams: TrainingParams | None = None,
    as_of: date | None = None,
    retrain_reason: str | None = None,
    train_from: str | None = None,
    train_to: str | None = None,
) -> TrainingResult:
    """Train on a window of months, validate on a later one, register, and promote only a
    better model.

    The window is `train_from`..`train_to` (both included; one end given, that month alone),
    else the single `train_month` (which a window given sets aside: deployments carry it as a
    default). Months left empty (a scheduled run) default to the newest month
    published by `as_of` (the day the run was scheduled for, when not given) for validation and
    the month before it for training; only one side given, the other is its neighbour.
    Validation must come after training. With DASK_SCHEDULER_ADDRESS set, the months are
    prepared on the Dask workers and the booster is fitted there (xgboost.dask).
    `retrain_reason` (set by the retraining automation: why the champion was found degraded)
    is tagged on the MLflow run and the registered version.
    """
    today = as_of or run_date(flow_run.get_scheduled_start_time())
    if train_month and (train_from or train_to):
        get_run_logger().info(
            "training on the window %s..%s given (train_month=%s set aside)",
            train_from or train_to,
            train_to or train_from,
            train_month,
        )
    train_from, train_to, val_month = resolve_window(
        train_month, train_from, train_to, val_month, today
    )
    settings = PipelineSettings()
    if model_name:
        settings = settings.model_copy(update={"model_name": model_name})
    # Before any work: a bad window fails here with a clear error and nothing logged.
    request = pipeline.TrainingRequest(
        train_from, train_to, val_month, settings.model_name, hyperparams or TrainingParams()
    )
    runner.dask_client()  # a cluster without workers fails the run now, not at the first task
    tracking.configure(settings)
    result = pipeline.run_training(request, _flow_steps(settings, data_source))
    if retrain_reason:
        tracking.tag_retrain_reason(
            result.model_name, result.model_version, result.run_id, retrain_reason
        )
    return result
