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

    # Dask (README, Scale-out on Dask). A scheduler of your own: make run starts no cluster and
    # gives its address to the Prefect workers (with the TLS variables you set yourself).
    dask_scheduler_address: str | None = None
    dask_local_workers: int = Field(0, ge=0, description="local Dask workers; 0: no cluster")
    dask_scheduler_port: int = 8786
    dask_dashboard_port: int = 8787
    dask_dashboard_bind: str = Field("127.0.0.1", description="the dashboard has no login")
    dask_worker_nthreads: int = Field(1, ge=1)
    dask_worker_memory_limit: str = Field("2GiB", description="per worker, e.g. 2GiB; 0: none")

    @property
    def state_dir(self) -> Path:
        return self.nyctaxi_home.expanduser() / "stack"

    @property
    def local_cluster(self) -> bool:
        """make run starts a Dask cluster: workers asked for, and no scheduler of the user's."""
        return self.dask_local_workers > 0 and not (self.dask_scheduler_address or "").strip()

    @property
    def dask_tls_dir(self) -> Path:
        return self.nyctaxi_home.expanduser() / "dask-tls"

    @property
    def local_host(self) -> str:
        """Where clients on this machine reach the servers."""
        return "127.0.0.1" if self.bind_host in {"0.0.0.0", "::", ""} else self.bind_host
