"""Monitoring flows: watch the champion, and ask for a retraining when it degrades.

- `monitoring` (deployment monitoring/monitor-month, parameter `month`): score the champion on a
  labelled month from the same sources as training, compare it with its own training month
  (Evidently: drift of inputs, features and prediction; RMSE, MAE, errors by borough and hour),
  log one MLflow run per month (experiment nyc-taxi-monitoring), publish the verdict as Prefect
  artifacts and, when the month is degraded, emit `nyctaxi.model.degraded`: the bootstrap's
  automation answers it with a training run (train the month before, validate this month).
- `monitoring-live` (deployment monitoring-live/monitor-live, daily): the same drift comparison
  on the rides the prediction service logged in a time window. No labels, so no RMSE and no
  retraining: the verdict is reported, the retraining waits for the labelled month.

The logic is in the library (nyctaxi.monitorpipeline, nyctaxi.drift, nyctaxi.monitoring); the
flows only order the steps.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict

from flows.ingest import ingest_flow
from flows.prepare import prepare_month
from flows.retrying import retry_when
from nyctaxi import modelcode, monitortracking, names, predictionlog, tracking
from nyctaxi.config import MonitoringSettings, Thresholds
from nyctaxi.features import INPUT_COLUMNS
from nyctaxi.monitoring import ChampionFacts
from nyctaxi.monitorpipeline import (
    Assessment,
    assess_month,
    assess_traffic,
    degraded_payload,
    month_record,
    reference_frame,
    save_report,
    traffic_record,
)
from nyctaxi.monitorreport import drift_rows, error_rows, render_markdown
from nyctaxi.months import parse_month
from nyctaxi.schedule import run_date, shift_month

_mlflow_may_recover = retry_when(tracking.is_transient)


class MonitoringResult(BaseModel):
    """What a monitoring run returns."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: str
    subject: str
    reference_month: str
    rows: int
    degraded: bool
    reason: str
    figures: dict[str, float]
    run_id: str | None = None
    event: str | None = None  # the event emitted, if any


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_mlflow_may_recover
)
def find_champion(model_name: str) -> ChampionFacts:
    champion = monitortracking.champion_facts(model_name)
    get_run_logger().info(
        "champion %s v%s: trained on %s, validation RMSE %s on %s",
        champion.name,
        champion.version,
        champion.train_month,
        champion.val_rmse,
        champion.val_month,
    )
    return champion


def _predictor(champion: ChampionFacts) -> Any:
    """The champion's predict function, with the code it was logged with."""
    model = modelcode.load_model(champion.uri)
    return lambda trips: model.pyfunc.predict(trips[INPUT_COLUMNS])


@task(cache_policy=NO_CACHE)
def assess_labelled_month(
    month: str,
    champion: ChampionFacts,
    reference_trips: pd.DataFrame,
    trips: pd.DataFrame,
    thresholds: Thresholds,
) -> Assessment:
    predict = _predictor(champion)
    reference = reference_frame(reference_trips, predict)
    assessment = assess_month(month, champion, reference, trips, predict, thresholds)
    get_run_logger().info("%s: %s %s", month, assessment.verdict.summary, assessment.figures())
    return assessment


@task(cache_policy=NO_CACHE)
def assess_logged_rides(
    subject: str,
    champion: ChampionFacts,
    reference_trips: pd.DataFrame,
    rides: pd.DataFrame,
    thresholds: Thresholds,
) -> Assessment:
    reference = reference_frame(reference_trips, _predictor(champion))
    return assess_traffic(subject, champion, reference, rides, thresholds)


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_mlflow_may_recover
)
def log_to_mlflow(
    settings: MonitoringSettings, record: monitortracking.MonitoringRecord, assessment: Assessment
) -> tuple[str, str | None]:
    """The run id and its link in the MLflow UI."""
    run_id = monitortracking.log_monitoring_run(settings, record, save_report(assessment))
    return run_id, tracking.run_url(settings, run_id)


@task(cache_policy=NO_CACHE)
def publish(
    assessment: Assessment,
    thresholds: Thresholds,
    run_url: str | None,
    retraining: str | None,
    key: str,
) -> None:
    markdown = render_markdown(assessment, thresholds, run_url=run_url, retraining=retraining)
    description = f"{assessment.champion.name} v{assessment.champion.version}"
    create_markdown_artifact(markdown=markdown, key=key, description=description)
    create_table_artifact(table=drift_rows(assessment), key=f"{key}-drift", description="drift")
    if assessment.tables:
        create_table_artifact(
            table=error_rows(assessment), key=f"{key}-errors", description="errors"
        )


def announce_degraded(assessment: Assessment) -> dict[str, Any]:
    """The event the retraining automation answers; returns its payload."""
    payload = degraded_payload(assessment)
    emit_event(
        event=names.DEGRADED_EVENT,
        resource={
            "prefect.resource.id": names.model_resource_id(assessment.champion.name),
            "prefect.resource.name": assessment.champion.name,
        },
        payload=payload,
    )
    return payload


def _settings(model_name: str | None) -> MonitoringSettings:
    settings = MonitoringSettings()
    if model_name:
        settings = settings.model_copy(update={"model_name": model_name})
    monitortracking.configure(settings)
    return settings


def _result(
    assessment: Assessment, run_id: str | None, event: str | None = None
) -> MonitoringResult:
    return MonitoringResult(
        model_name=assessment.champion.name,
        model_version=assessment.champion.version,
        subject=assessment.subject,
        reference_month=assessment.champion.train_month,
        rows=assessment.rows,
        degraded=assessment.verdict.degraded,
        reason=assessment.verdict.summary,
        figures=assessment.figures(),
        run_id=run_id,
        event=event,
    )


@flow(name=names.MONITORING_FLOW)
def monitoring_flow(
    month: str | None = None, model_name: str | None = None, as_of: date | None = None
) -> MonitoringResult:
    """Score the champion on a labelled month against its training month; emit
    nyctaxi.model.degraded when the month is beyond the thresholds. Without a month (a scheduled
    run) it monitors the newest month TLC has published (MONITOR_LAG_MONTHS before the run's)."""
    settings = _settings(model_name)
    if not month:
        today = as_of or run_date(flow_run.get_scheduled_start_time())
        month = shift_month(f"{today.year:04d}-{today.month:02d}", -settings.monitor_lag_months)
    month = str(parse_month(month))  # a malformed month fails here, before any work
    thresholds = settings.thresholds()
    champion = find_champion(settings.model_name)
    reference_in, month_in = ingest_flow([champion.train_month, month])
    reference, current = prepare_month(reference_in), prepare_month(month_in)
    assessment = assess_labelled_month(month, champion, reference.trips, current.trips, thresholds)
    run_id, run_url = log_to_mlflow(settings, month_record(assessment), assessment)
    event, retraining = None, None
    if assessment.verdict.degraded:
        payload, event = announce_degraded(assessment), names.DEGRADED_EVENT
        retraining = (
            f"Emitted `{event}`: the retraining automation trains on {payload['train_month']} "
            f"and validates on {payload['val_month']}; the promotion gate decides."
        )
    publish(assessment, thresholds, run_url, retraining, key=f"monitoring-{month}")
    return _result(assessment, run_id, event)


@flow(name=names.MONITOR_LIVE_FLOW)
def monitor_live_flow(
    window_hours: float = 24.0, until: datetime | None = None, model_name: str | None = None
) -> MonitoringResult | None:
    """Drift of the rides served in the last `window_hours` (the prediction log) against the
    champion's training month. Returns None when too few rides were logged to judge."""
    settings = _settings(model_name)
    end = until or flow_run.get_scheduled_start_time() or datetime.now(UTC)
    end = end.astimezone(UTC)
    start = end - timedelta(hours=window_hours)
    rides = predictionlog.read_window(settings.log_dir(), start, end)
    subject = f"{start:%Y-%m-%dT%H:%MZ}..{end:%Y-%m-%dT%H:%MZ}"
    logger = get_run_logger()
    if len(rides) < settings.monitor_live_min_rides:
        message = (
            f"{len(rides)} ride(s) logged in {subject} under {settings.log_dir()}: fewer than "
            f"MONITOR_LIVE_MIN_RIDES={settings.monitor_live_min_rides}, no drift verdict"
        )
        logger.warning(message)
        create_markdown_artifact(
            markdown=f"# Live traffic {subject}\n\n{message}\n", key="monitoring-live"
        )
        return None
    thresholds = settings.thresholds()
    champion = find_champion(settings.model_name)
    (reference_in,) = ingest_flow([champion.train_month])
    reference = prepare_month(reference_in)
    assessment = assess_logged_rides(subject, champion, reference.trips, rides, thresholds)
    step = int(start.timestamp() // 3600)
    run_id, run_url = log_to_mlflow(settings, traffic_record(assessment, step), assessment)
    note = None
    if assessment.verdict.degraded:
        note = (
            "Live traffic drifted. Retraining needs labels: it runs when the month is "
            "published and monitored (`make monitor MONTH=YYYY-MM`)."
        )
    publish(assessment, thresholds, run_url, note, key="monitoring-live")
    return _result(assessment, run_id)
