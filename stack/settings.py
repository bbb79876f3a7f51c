"""Settings of the native launcher (`make run`), read from the environment (and `.env`).

Field names are the environment variables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from nyctaxi import names
from nyctaxi.config import default_home


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
    mlflow_artifacts_bucket: str = names.MLFLOW_ARTIFACTS_BUCKET
    s3_endpoint_url: str | None = None

    @property
    def state_dir(self) -> Path:
        return self.nyctaxi_home.expanduser() / "stack"

    @property
    def local_host(self) -> str:
        """Where clients on this machine reach the servers."""
        return "127.0.0.1" if self.bind_host in {"0.0.0.0", "::", ""} else self.bind_host
