"""Settings of the training pipeline (flows and the training CLI), read from the environment.

Nothing here runs at import time: call `PipelineSettings()` where the settings are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from nyctaxi import names
from nyctaxi.schedule import PUBLICATION_LAG_MONTHS


def default_home() -> Path:
    """Local state folder of every nyctaxi process: never the current directory."""
    return Path.home() / ".local" / "share" / "nyctaxi"


class PipelineSettings(BaseSettings):
    """Where data comes from, where runs are tracked and how the model is registered."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    nyctaxi_home: Path = Field(
        default_factory=default_home,
        description="Local state: download cache, embedded MLflow store. Never the cwd.",
    )
    taxi_data_dir: Path | None = Field(
        default=None, description="Folder holding green_tripdata_YYYY-MM.parquet files."
    )
    tlc_base_url: str = "https://d37ci6vzurychx.cloudfront.net/trip-data"
    allow_download: bool = Field(default=True, alias="TLC_ALLOW_DOWNLOAD")
    download_timeout_seconds: float = 60.0
    download_attempts: int = 4

    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = names.EXPERIMENT
    mlflow_public_url: str | None = Field(
        default=None, description="MLflow UI address for links in reports, if it differs."
    )
    model_name: str = names.MODEL_NAME

    # The promotion lock (flows: a Prefect global concurrency limit; in-process: a file lock).
    promotion_wait_seconds: float = Field(
        default=1800.0, gt=0, description="How long a run waits for another run's promotion."
    )
    promotion_lease_seconds: float = Field(
        default=60.0,
        ge=60,  # the Prefect server's minimum
        description="A crashed holder's slot is freed this long after its last lease renewal.",
    )

    s3_bucket_block: str = Field(
        default=names.RAW_BUCKET_BLOCK, description="prefect-aws S3Bucket block holding raw months."
    )

    @property
    def cache_dir(self) -> Path:
        return self.nyctaxi_home / "cache" / "raw"

    @property
    def local_mlflow_dir(self) -> Path:
        return self.nyctaxi_home / "mlflow"

    def promotion_lock_file(self, model_name: str) -> Path:
        return self.nyctaxi_home / "locks" / f"promotion-{model_name}.lock"

    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the configured one, else a SQLite store under nyctaxi_home."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.local_mlflow_dir / 'mlflow.db'}"

    def local_artifact_location(self) -> str | None:
        """Artifact root for a local (non-server) store, so artifacts never land in the cwd."""
        if self.tracking_uri().startswith(("http://", "https://", "databricks")):
            return None
        return (self.local_mlflow_dir / "artifacts").as_uri()


@dataclass(frozen=True)
class Thresholds:
    """When a month counts as degraded (settings MONITOR_RMSE_INCREASE, MONITOR_DRIFT_SHARE)."""

    rmse_increase: float = 0.10  # RMSE above the champion's own validation RMSE by this share
    drift_share: float = 0.5  # share of the input columns that drifted


class MonitoringSettings(PipelineSettings):
    """The monitoring flows' thresholds and where they find the prediction log."""

    monitor_rmse_increase: float = Field(
        default=0.10,
        gt=0,
        description="Degraded when the RMSE on a month exceeds the champion's own validation "
        "RMSE by more than this share.",
    )
    monitor_drift_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Degraded when more than this share of the input columns drifted.",
    )
    monitor_lag_months: int = Field(
        default=PUBLICATION_LAG_MONTHS,
        ge=0,
        description="A scheduled run (no month given) monitors the month this many months "
        "before the run's own: the newest labelled month TLC has published.",
    )
    monitor_experiment: str = names.MONITORING_EXPERIMENT
    prediction_log_dir: Path | None = Field(
        default=None,
        description="The prediction service's log; unset: NYCTAXI_HOME/prediction-log.",
    )
    monitor_live_min_rides: int = Field(
        default=100, ge=1, description="Fewer logged rides in a window: no drift verdict."
    )

    def thresholds(self) -> Thresholds:
        return Thresholds(self.monitor_rmse_increase, self.monitor_drift_share)

    def log_dir(self) -> Path:
        """PREDICTION_LOG_DIR, else under NYCTAXI_HOME (as nyctaxi.predictionlog.log_dir)."""
        if self.prediction_log_dir is not None:
            return self.prediction_log_dir.expanduser()
        return self.nyctaxi_home / names.PREDICTION_LOG_FOLDER
