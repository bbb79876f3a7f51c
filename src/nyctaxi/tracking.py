"""MLflow side of a training run: experiment set-up, logging, registration, champion scoring.

Kept out of the flows so they stay orchestration only; exercised by the integration tests
against a real MLflow server.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow
import pandas as pd
import xgboost as xgb
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nyctaxi import evaluation, modelcode
from nyctaxi.cleaning import target
from nyctaxi.config import PipelineSettings
from nyctaxi.features import INPUT_COLUMNS
from nyctaxi.model import log_model
from nyctaxi.registry import CHAMPION, PromotionDecision, apply_decision, version_with_alias
from nyctaxi.report import MonthSummary
from nyctaxi.training import TrainingParams

logger = logging.getLogger(__name__)

# Params, tags and metrics are named train_* / val_*, matching the flow's parameters.
ROLE_PREFIX = {"train": "train", "validation": "val"}
RETRAIN_REASON_TAG = "retrain_reason"
# MLflow's codes for a server that failed or is overloaded (its client reports a refused or
# dropped connection as INTERNAL_ERROR too); every other code answers the request itself.
TRANSIENT_MLFLOW_CODES = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
)


def is_transient(error: BaseException) -> bool:
    """Whether trying the same MLflow call again may succeed: a network or server fault, not
    a refused request (a param logged twice, a missing model, no permission) or a bug."""
    if isinstance(error, MlflowException):
        return error.error_code in TRANSIENT_MLFLOW_CODES
    return isinstance(error, OSError)  # connection refused / reset, timeouts


def configure(settings: PipelineSettings) -> str:
    """Point MLflow at the configured store and select the experiment; returns its id."""
    mlflow.set_tracking_uri(settings.tracking_uri())
    if settings.mlflow_tracking_uri is None:
        settings.local_mlflow_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        experiment_id = client.create_experiment(
            settings.mlflow_experiment, artifact_location=settings.local_artifact_location()
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def score_champion(model_name: str, val: pd.DataFrame) -> tuple[str, float] | None:
    """Score the current champion on these validation rows, so the gate compares like with like."""
    champion = version_with_alias(MlflowClient(), model_name, CHAMPION)
    if champion is None:
        return None
    # With the code it was logged with: last month's champion may predate today's feature code.
    model = modelcode.load_model(f"models:/{model_name}/{champion.version}")
    predictions = model.pyfunc.predict(val[INPUT_COLUMNS])
    rmse = evaluation.rmse(target(val), predictions)
    logger.info("champion v%s scores RMSE %.4f on these validation rows", champion.version, rmse)
    return str(champion.version), rmse


def _by_role(months: Sequence[MonthSummary]) -> dict[str, list[MonthSummary]]:
    grouped: dict[str, list[MonthSummary]] = {}
    for month in months:
        grouped.setdefault(ROLE_PREFIX[month.role], []).append(month)
    return grouped


def month_params(months: Sequence[MonthSummary]) -> dict[str, str]:
    """train_month (the newest training month), train_from, train_to, val_month."""
    params: dict[str, str] = {}
    for prefix, role_months in _by_role(months).items():
        params[f"{prefix}_month"] = role_months[-1].month
        if prefix == "train":
            params["train_from"] = role_months[0].month
            params["train_to"] = role_months[-1].month
    return params


def month_tags(months: Sequence[MonthSummary]) -> dict[str, str]:
    """Each file's checksum: `sha256_YYYY-MM`, and `<role>_sha256` when a role has one month."""
    tags = {f"sha256_{month.month}": month.sha256 for month in months}
    for prefix, role_months in _by_role(months).items():
        if len(role_months) == 1:
            tags[f"{prefix}_sha256"] = role_months[0].sha256
    return tags


def month_metrics(months: Sequence[MonthSummary]) -> dict[str, float]:
    """Rows read and dropped per role, summed over a window's months."""
    metrics: dict[str, float] = {}
    for prefix, role_months in _by_role(months).items():
        metrics[f"{prefix}_rows_read"] = float(sum(m.rows_read for m in role_months))
        metrics[f"{prefix}_rows_dropped"] = float(
            sum(m.rows_read - m.rows_kept for m in role_months)
        )
        metrics[f"{prefix}_months"] = float(len(role_months))
    return metrics


def log_run(
    settings: PipelineSettings,
    booster: xgb.Booster,
    metrics: dict[str, float],
    months: Sequence[MonthSummary],
    hyperparams: TrainingParams,
    val: pd.DataFrame,
    tags: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Log params, metrics, data provenance, a plot and the model; returns (run_id, version)."""
    with mlflow.start_run() as run:
        mlflow.log_params(hyperparams.model_dump())
        mlflow.log_params(month_params(months))
        mlflow.set_tags({**month_tags(months), **(tags or {})})
        mlflow.log_metrics(month_metrics(months))
        mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
        mlflow.log_dict([dataclasses.asdict(month) for month in months], "data/months.json")
        with tempfile.TemporaryDirectory() as tmp:
            plot = Path(tmp) / "residuals.png"
            evaluation.plot_residuals(target(val), evaluation.predict_trips(booster, val), plot)
            mlflow.log_artifact(str(plot), "plots")
        info = log_model(
            booster,
            input_example=val[INPUT_COLUMNS].head(5),
            registered_model_name=settings.model_name,
        )
    version = str(info.registered_model_version)
    return run.info.run_id, version


def promote(
    model_name: str,
    version: str,
    decision: PromotionDecision,
    val_rmse: float,
    *,
    train_month: str,
    val_month: str,
) -> None:
    """Tag the version with its months and score, then move the decided alias onto it."""
    apply_decision(
        MlflowClient(),
        model_name,
        version,
        decision,
        val_rmse,
        train_month=train_month,
        val_month=val_month,
    )


def tag_retrain_reason(model_name: str, version: str, run_id: str, reason: str) -> None:
    """Record why this version was trained (the monitoring verdict that asked for it)."""
    client = MlflowClient()
    client.set_model_version_tag(model_name, version, RETRAIN_REASON_TAG, reason)
    client.set_tag(run_id, RETRAIN_REASON_TAG, reason)


def run_url(settings: PipelineSettings, run_id: str) -> str | None:
    """Link to the run in the MLflow UI (None for a local store that has no UI)."""
    base = settings.mlflow_public_url or settings.mlflow_tracking_uri
    if not base or not base.startswith(("http://", "https://")):
        return None
    run = MlflowClient().get_run(run_id)
    return f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
