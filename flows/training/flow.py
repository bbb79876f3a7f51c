"""Training flow: ingest -> clean -> features -> XGBoost -> MLflow -> promotion gate -> report.

The step order is `nyctaxi.pipeline.run_training`; this flow runs each step as a Prefect task
(retries, the cleaned-month result cache, artifacts, the promotion event). Run locally:

    python -m flows.training --train-month 2023-01 --val-month 2023-02 --json

(see flows/training/cli.py: with PREFECT_API_URL set it runs this flow on that server, without
it the same pipeline in-process, with no Prefect at all).
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Any, Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.events import emit_event
from prefect.runtime import flow_run

from flows.ingest import ingest_flow
from flows.retrying import retry_when
from flows.training.promotion_lock import promotion_lock
from nyctaxi import monthcache, names, pipeline, tracking
from nyctaxi.cleaning import PreparedMonth
from nyctaxi.config import PipelineSettings
from nyctaxi.locate import IngestedMonth
from nyctaxi.pipeline import Champion, Fit, TrainingResult
from nyctaxi.report import MonthSummary, RunReport, render_markdown, table_rows
from nyctaxi.schedule import resolve_months, run_date
from nyctaxi.training import TrainingParams

__all__ = ["TrainingResult", "training_flow"]


def _prepare_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Everything the cleaned month depends on, and nothing else (nyctaxi.monthcache)."""
    ingested: IngestedMonth = parameters["ingested"]
    return monthcache.cache_key(ingested.month, ingested.sha256)


@task(cache_key_fn=_prepare_cache_key, persist_result=True)
def prepare_month(ingested: IngestedMonth) -> PreparedMonth:
    """Read, normalise and clean one month; the dropped-rows counts go to the log and the report.

    Cached: the same file is prepared once whatever role later runs give it."""
    prepared = monthcache.prepare_ingested(ingested)
    facts = prepared.facts
    get_run_logger().info(
        "%s: kept %d of %d rows; dropped %s",
        facts.month,
        facts.rows_kept,
        facts.rows_read,
        dict(facts.dropped),
    )
    return prepared


@task(cache_policy=NO_CACHE)
def train_model(train: pd.DataFrame, val: pd.DataFrame, hyperparams: TrainingParams) -> Fit:
    """Fit on the train month, score on the validation month; train_seconds times both."""
    fit = pipeline.fit_and_evaluate(train, val, hyperparams)
    get_run_logger().info(
        "validation RMSE %.4f, MAE %.4f, fit+evaluate %.2fs",
        fit.val_rmse,
        fit.val_mae,
        fit.train_seconds,
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
        prepare=prepare_month,
        fit=train_model,
        score_champion=champion_on,
        log_and_register=functools.partial(log_and_register, settings),
        promote=tracking.promote,
        promotion_lock=functools.partial(promotion_lock, settings),
        run_url=functools.partial(tracking.run_url, settings),
        announce_promotion=announce_promotion,
        publish_report=publish_report,
    )


@flow(name=names.TRAINING_FLOW)
def training_flow(
    train_month: str | None = None,
    val_month: str | None = None,
    data_source: Literal["local", "s3"] = "local",
    model_name: str | None = None,
    hyperparams: TrainingParams | None = None,
    as_of: date | None = None,
    retrain_reason: str | None = None,
) -> TrainingResult:
    """Train on one month, validate on a later one, register, and promote only a better model.

    Months left empty (a scheduled run) default to the newest month published by `as_of` (the
    day the run was scheduled for, when not given) for validation and the month before it for
    training; one month given, the other is its neighbour. Validation must come after training.
    `retrain_reason` (set by the retraining automation: why the champion was found degraded)
    is tagged on the MLflow run and the registered version.
    """
    today = as_of or run_date(flow_run.get_scheduled_start_time())
    train_month, val_month = resolve_months(train_month, val_month, today)
    settings = PipelineSettings()
    if model_name:
        settings = settings.model_copy(update={"model_name": model_name})
    # Before any work: a bad pair fails here with a clear error and nothing logged.
    request = pipeline.TrainingRequest(
        train_month, val_month, settings.model_name, hyperparams or TrainingParams()
    )
    tracking.configure(settings)
    result = pipeline.run_training(request, _flow_steps(settings, data_source))
    if retrain_reason:
        tracking.tag_retrain_reason(
            result.model_name, result.model_version, result.run_id, retrain_reason
        )
    return result
