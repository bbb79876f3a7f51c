"""MLflow side of monitoring: the champion's facts, and one run per monitored month in the
`nyc-taxi-monitoring` experiment (metrics, the Evidently report's HTML, the error tables).

Runs are keyed by a tag: monitoring a month again replaces its run (the old one is deleted), so
the experiment holds one run per month and its charts read as the model's history.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from nyctaxi.config import MonitoringSettings
from nyctaxi.monitoring import ChampionFacts, MonitoringRecord
from nyctaxi.registry import CHAMPION, version_with_alias

logger = logging.getLogger(__name__)

SUBJECT_TAG = "monitored"  # "month:YYYY-MM" or "live:<window start>"


class NoChampionError(RuntimeError):
    """There is no model to monitor yet."""


def champion_facts(model_name: str) -> ChampionFacts:
    """The version under the champion alias and the months it was trained and validated on."""
    version = version_with_alias(MlflowClient(), model_name, CHAMPION)
    if version is None:
        raise NoChampionError(
            f"model {model_name!r} has no @{CHAMPION} version to monitor: train one first "
            "(make train)"
        )
    tags = version.tags or {}
    train_month = tags.get("train_month")
    if not train_month:
        raise NoChampionError(
            f"{model_name} v{version.version} has no train_month tag: it was not registered by "
            "the training flow, so there is no reference month to compare with"
        )
    val_rmse = tags.get("val_rmse")
    return ChampionFacts(
        model_name,
        str(version.version),
        train_month,
        tags.get("val_month"),
        float(val_rmse) if val_rmse else None,
    )


def configure(settings: MonitoringSettings) -> None:
    """Point MLflow at the configured store (the champion is read from its registry)."""
    mlflow.set_tracking_uri(settings.tracking_uri())
    if settings.mlflow_tracking_uri is None:
        settings.local_mlflow_dir.mkdir(parents=True, exist_ok=True)


def _experiment_id(settings: MonitoringSettings) -> str:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.monitor_experiment)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(
        settings.monitor_experiment, artifact_location=settings.local_artifact_location()
    )


def replace_previous(client: MlflowClient, experiment_id: str, subject: str) -> int:
    """Delete the earlier runs about the same subject; return how many."""
    earlier = client.search_runs(
        [experiment_id], filter_string=f"tags.{SUBJECT_TAG} = '{subject}'", max_results=100
    )
    for run in earlier:
        client.delete_run(run.info.run_id)
    return len(earlier)


def log_monitoring_run(settings: MonitoringSettings, record: MonitoringRecord, html: Path) -> str:
    """Log the record and the report's HTML as a new run (replacing the subject's earlier
    ones); return the run id."""
    experiment_id = _experiment_id(settings)
    client = MlflowClient()
    replaced = replace_previous(client, experiment_id, record.subject)
    with mlflow.start_run(experiment_id=experiment_id, run_name=record.run_name) as run:
        mlflow.set_tags({**record.tags, SUBJECT_TAG: record.subject})
        mlflow.log_params(record.params)
        mlflow.log_metrics(record.metrics, step=record.step)
        mlflow.log_artifact(str(html), "evidently")
        with tempfile.TemporaryDirectory() as tmp:
            for name, table in record.tables.items():
                path = Path(tmp) / f"{name}.csv"
                table.to_csv(path, index=False)
                mlflow.log_artifact(str(path), "errors")
    logger.info(
        "monitoring run %s logged (%s; %d earlier run(s) replaced)",
        run.info.run_id,
        record.subject,
        replaced,
    )
    return run.info.run_id
