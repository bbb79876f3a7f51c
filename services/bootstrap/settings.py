"""Settings of the stack's one-shot bootstrap (`python -m services.bootstrap`).

Read from the environment (and `.env`); field names are the environment variables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from nyctaxi import names


class BootstrapSettings(BaseSettings):
    """What `python -m services.bootstrap` needs to know about the running stack."""

    # Empty variables count as unset: compose passes `NOTIFY_WEBHOOK_URL: ${NOTIFY_WEBHOOK_URL:-}`.
    model_config = SettingsConfigDict(env_file=None, extra="ignore", env_ignore_empty=True)

    prefect_api_url: str | None = Field(
        None, description="Prefect API, e.g. http://127.0.0.1:4200/api (else Prefect's profile)"
    )
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    model_name: str = names.MODEL_NAME

    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_default_region: str = "us-east-1"
    raw_bucket: str = names.RAW_BUCKET
    mlflow_artifacts_bucket: str = names.MLFLOW_ARTIFACTS_BUCKET
    taxi_data_dir: Path | None = None

    notify_webhook_url: SecretStr | None = None
    # The automation answering `nyctaxi.model.degraded` (the monitoring flow's verdict) with a
    # run of the training deployment; false removes it and monitoring only reports.
    retrain_on_degraded: bool = Field(
        True, description="retrain (run the training deployment) when the champion is degraded"
    )

    # MLflow's basic-auth accounts (services/bootstrap/mlflow_accounts.py). Without an admin
    # password the server is taken to run without authentication and the step is skipped. The
    # bootstrap's own MLflow client calls use MLFLOW_TRACKING_USERNAME / _PASSWORD (the trainer).
    mlflow_admin_username: str = Field(names.MLFLOW_ADMIN_USER, min_length=1)
    mlflow_admin_password: SecretStr | None = None
    # Required when the admin's is set; checked by the accounts step, not here: pydantic's error
    # for a too-short value would quote it.
    mlflow_trainer_password: SecretStr | None = None
    mlflow_predictor_password: SecretStr | None = None

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
    # Crash detection. The workers' flow runs must beat at this period: both stacks pass it to
    # them as PREFECT_FLOWS_HEARTBEAT_FREQUENCY (Prefect's minimum is 30). A run that misses
    # this many beats in a row is marked Crashed (it would otherwise stay Running for ever).
    flow_run_heartbeat_seconds: int = Field(
        30, ge=30, description="seconds between flow-run heartbeats (Prefect's minimum: 30)"
    )
    flow_run_missed_heartbeats: int = Field(
        3, ge=2, description="missed heartbeats after which a Running flow run is marked Crashed"
    )

    @property
    def s3_enabled(self) -> bool:
        return bool(self.s3_endpoint_url)

    @property
    def first_run_deployment(self) -> str:
        if self.bootstrap_deployment:
            return self.bootstrap_deployment
        name = names.TRAIN_S3_DEPLOYMENT if self.s3_enabled else names.TRAIN_LOCAL_DEPLOYMENT
        return f"{names.TRAINING_FLOW}/{name}"

    @property
    def promoted_resource_id(self) -> str:
        return names.model_resource_id(self.model_name)
