"""Train a trip-duration model on a real TLC month and register it in MLflow.

Used by bench/serving.py and tests/integration/test_predict_service.py, which need a real
registered `TripDurationModel` without running the whole Prefect training flow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import xgboost as xgb
from mlflow.tracking import MlflowClient

from nyctaxi.cleaning import clean_trips, read_trips
from nyctaxi.model import log_model
from nyctaxi.months import file_name
from nyctaxi.training import TrainingParams, train_on_trips


def clean_month(data_dir: Path, month: str) -> pd.DataFrame:
    """Clean trips of a real TLC month from data_dir (green_tripdata_YYYY-MM.parquet)."""
    return clean_trips(read_trips(Path(data_dir) / file_name(month)), month).trips


def train_booster(trips: pd.DataFrame, **params: object) -> xgb.Booster:
    """A booster trained by the library's own code; params override TrainingParams' defaults."""
    return train_on_trips(trips, TrainingParams(**params))  # type: ignore[arg-type]


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[None]:
    # mlflow's fluent API is process-global: point it at `uri` only for this block.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def register_version(
    tracking_uri: str,
    model_name: str,
    booster: xgb.Booster,
    trips: pd.DataFrame,
    *,
    alias: str | None = None,
    experiment: str = "predict-service",
    artifact_location: str | None = None,
    metrics: dict[str, float] | None = None,
    package_dir: Path | None = None,
) -> str:
    """Log booster as a new version of model_name; optionally point `alias` at it.

    artifact_location: where a new experiment keeps artifacts (needed for a local sqlite
    store, which would otherwise write ./mlruns into the working directory).
    package_dir: the nyctaxi package the version ships (default: the installed one).
    """
    client = MlflowClient(tracking_uri)
    with _tracking(uri=tracking_uri):
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(experiment, artifact_location=artifact_location)
        )
        with mlflow.start_run(experiment_id=experiment_id):
            mlflow.log_metrics(metrics or {"train_rows": float(len(trips))})
            info = log_model(
                booster,
                input_example=trips,
                registered_model_name=model_name,
                package_dir=package_dir,
            )
    version = str(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(model_name, alias, version)
    return version
