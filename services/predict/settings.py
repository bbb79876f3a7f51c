"""Settings of the prediction service, read from the environment.

Nothing here runs at import time: `PredictSettings()` is built by `create_app()` and by the
gunicorn config, each in the process that needs it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nyctaxi import names
from nyctaxi.config import default_home


class PredictSettings(BaseSettings):
    """Which model to serve, where from, how to run the server and what input it accepts.

    The shared variables (MLFLOW_TRACKING_URI, MODEL_NAME, MODEL_ALIAS, NYCTAXI_HOME) keep their
    names; the service's own ones start with PREDICT_.
    """

    model_config = SettingsConfigDict(
        env_prefix="PREDICT_", env_file=None, extra="ignore", populate_by_name=True
    )

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
        description="MLflow tracking server (or store); unset: the pipeline's local SQLite store.",
    )
    nyctaxi_home: Path = Field(
        default_factory=default_home,
        validation_alias=AliasChoices("NYCTAXI_HOME", "nyctaxi_home"),
        description="Local state folder; holds the local MLflow store when no URI is set.",
    )
    model_name: str = Field(
        default=names.MODEL_NAME, validation_alias=AliasChoices("MODEL_NAME", "model_name")
    )
    model_alias: str = Field(
        default=names.CHAMPION_ALIAS, validation_alias=AliasChoices("MODEL_ALIAS", "model_alias")
    )

    # Loopback unless told otherwise (the container sets PREDICT_HOST=0.0.0.0): a `make serve`
    # on a laptop is not reachable from the network by accident.
    host: str = "127.0.0.1"
    port: int = Field(default=9696, ge=1, le=65535)
    workers: int = Field(default=2, ge=1, description="gunicorn worker processes")
    worker_class: str = Field(default="sync", description="gunicorn worker class: sync or gthread")
    threads: int = Field(default=1, ge=1, description="threads per worker (gthread only)")
    model_threads: int = Field(
        default=1, ge=1, description="XGBoost threads per worker; 1 because workers are processes"
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="PREDICT_API_TOKEN: when set, /predict, /model and /metrics need "
        "`Authorization: Bearer <token>`; unset or empty: no authentication",
    )

    reload_interval_seconds: float = Field(
        default=5.0, gt=0, description="how often each worker asks the registry where the alias is"
    )
    retry_interval_seconds: float = Field(
        default=2.0, gt=0, description="how often to retry while no model is loaded"
    )
    startup_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        le=50,
        description="how long a starting worker waits for its first model (from the registry "
        "or the cache) before it takes requests; below gunicorn's 60 s worker timeout",
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="local copy of the served model and its checksum, shared by the workers; "
        "unset: NYCTAXI_HOME/predict/model-cache",
    )
    model_cache_keep: int = Field(
        default=3,
        ge=1,
        description="most recently used versions kept in the model cache (one an alias was "
        "last served by is never deleted)",
    )
    refused_retry_seconds: float = Field(
        default=5.0, gt=0, description="first wait before retrying a version that failed to load"
    )
    refused_retry_max_seconds: float = Field(
        default=600.0, gt=0, description="longest wait between attempts at a refused version"
    )
    prefect_api_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_API_URL", "prefect_api_url"),
        description="Prefect API the nyctaxi.model.refused event goes to; unset: no event",
    )
    prefect_api_auth_string: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_API_AUTH_STRING", "prefect_api_auth_string"),
        description="`user:password` of the Prefect server's basic auth",
    )
    max_batch_rides: int = Field(default=10_000, ge=1, description="rides per request, at most")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="request body size, at most"
    )
    max_trip_distance: float = Field(
        default=100.0, gt=0, description="larger trip_distance values (miles) are rejected"
    )

    log_enabled: bool = Field(
        default=True, description="record every ride served in the prediction log"
    )
    prediction_log_dir: str | None = Field(
        default=None,
        validation_alias=AliasChoices(names.PREDICTION_LOG_DIR_VARIABLE, "prediction_log_dir"),
        description="the prediction log's folder, shared with the monitoring flow; "
        "unset: NYCTAXI_HOME/prediction-log",
    )
    log_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="each worker writes its queued rides this often: a crash loses at most "
        "about this much",
    )
    log_batch_rows: int = Field(
        default=10_000, ge=1, description="a worker writes sooner once this many rides wait"
    )
    log_max_queued_rows: int = Field(
        default=100_000,
        ge=1,
        description="rides a worker keeps waiting for the disk, at most; beyond, new rides are "
        "served but not logged (counted in predict_log_dropped_rides_total)",
    )

    @field_validator(
        "api_token",
        "prefect_api_auth_string",
        "prefect_api_url",
        "model_cache_dir",
        "prediction_log_dir",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `PREDICT_API_TOKEN=` in an env file means "no token", not "the empty token"; stray
        # blanks around a token would never match the header value (its blanks are stripped).
        if isinstance(value, str):
            return value.strip() or None
        return value

    def tracking_uri(self) -> str:
        """The configured MLflow URI, else the local store the training CLI writes by default."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.nyctaxi_home / 'mlflow' / 'mlflow.db'}"

    def cache_dir(self) -> Path:
        """Where each worker keeps the model it serves (a volume in Docker)."""
        if self.model_cache_dir is not None:
            return self.model_cache_dir
        return self.nyctaxi_home / "predict" / "model-cache"

    def log_dir(self) -> Path:
        """The prediction log's folder (a volume shared with the Prefect worker in Docker)."""
        # Imported here: the gunicorn master reads these settings and needs no pyarrow.
        from nyctaxi import predictionlog

        return predictionlog.log_dir(self.prediction_log_dir, self.nyctaxi_home)
