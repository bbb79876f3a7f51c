"""Settings of the stack's one-shot bootstrap and of the native launcher (`make run`).

Both are read from the environment (and `.env`); field names are the environment variables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from nyctaxi.config import default_home

WORK_POOL = "nyctaxi-process"
AWS_CREDENTIALS_BLOCK = "nyctaxi-minio"
RAW_BUCKET_BLOCK = "nyctaxi-raw"
WEBHOOK_BLOCK = "nyctaxi-notify"
TRAINING_FLOW = "training"
CHAMPION_ALIAS = "champion"
PROMOTED_EVENT = "nyctaxi.model.promoted"


class BootstrapSettings(BaseSettings):
    """What `python -m nyctaxi.stack.bootstrap` needs to know about the running stack."""

    # Empty variables count as unset: compose passes `NOTIFY_WEBHOOK_URL: ${NOTIFY_WEBHOOK_URL:-}`.
    model_config = SettingsConfigDict(env_file=None, extra="ignore", env_ignore_empty=True)

    prefect_api_url: str | None = Field(
        None, description="Prefect API, e.g. http://127.0.0.1:4200/api (else Prefect's profile)"
    )
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    model_name: str = "nyc-taxi-duration"

    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_default_region: str = "us-east-1"
    raw_bucket: str = "nyctaxi-raw"
    mlflow_artifacts_bucket: str = "mlflow-artifacts"
    taxi_data_dir: Path | None = None

    notify_webhook_url: SecretStr | None = None

    bootstrap_timeout_seconds: float = Field(180.0, gt=0)
    bootstrap_deploy: bool = True
    bootstrap_redeploy: bool = Field(
        False,
        description="run `prefect deploy --all` even when prefect.yaml and flows/ are unchanged",
    )
    bootstrap_train: bool = True
    bootstrap_deployment: str | None = Field(
        None, description="deployment of the first run; default train-s3 with S3, else train-local"
    )
    prefect_file: Path = Path("prefect.yaml")
    bootstrap_crash_orphaned_runs: bool = Field(
        False, description="mark Running runs whose local process is gone Crashed (native stack)"
    )

    @property
    def s3_enabled(self) -> bool:
        return bool(self.s3_endpoint_url)

    @property
    def first_run_deployment(self) -> str:
        if self.bootstrap_deployment:
            return self.bootstrap_deployment
        name = "train-s3" if self.s3_enabled else "train-local"
        return f"{TRAINING_FLOW}/{name}"

    @property
    def promoted_resource_id(self) -> str:
        return f"nyctaxi.model.{self.model_name}"


class LocalStackSettings(BaseSettings):
    """The native stack (`make run`): ports, state folder and the optional Postgres / S3."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", env_ignore_empty=True)

    nyctaxi_home: Path = Field(default_factory=default_home)
    bind_host: str = Field("127.0.0.1", description="address the servers listen on")
    prefect_port: int = 4200
    mlflow_port: int = 5000
    predict_port: int = 9696
    nyctaxi_workers: int = Field(1, ge=1, description="Prefect worker processes")
    mlflow_workers: int = Field(1, ge=1, description="MLflow server worker processes")

    prefect_api_url: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_backend_store_uri: str | None = None
    mlflow_artifacts_destination: str | None = None
    mlflow_artifacts_bucket: str = "mlflow-artifacts"
    s3_endpoint_url: str | None = None

    @property
    def state_dir(self) -> Path:
        return self.nyctaxi_home.expanduser() / "stack"

    @property
    def local_host(self) -> str:
        """Where clients on this machine reach the servers."""
        return "127.0.0.1" if self.bind_host in {"0.0.0.0", "::", ""} else self.bind_host
