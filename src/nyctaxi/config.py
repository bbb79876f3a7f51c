"""Settings of the training pipeline (flows and the training CLI), read from the environment.

Nothing here runs at import time: call `PipelineSettings()` where the settings are needed.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from nyctaxi import names


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
