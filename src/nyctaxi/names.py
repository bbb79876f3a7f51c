"""Names that more than one process must agree on, defined once.

The bootstrap creates these objects, the flows and the prediction service look them up, and
`prefect.yaml`, `docker-compose.yml` and the Procfile spell some of them out again (YAML and
shell cannot import Python): tests/unit/nyctaxi/test_names.py checks those files against them.
"""

from __future__ import annotations

# Where a model was fitted or a month scored: the `engine` of runs, reports and JSON lines.
ENGINE_IN_PROCESS = "in-process"
ENGINE_DASK = "dask"

# Prefect
WORK_POOL = "nyctaxi-process"
TRAINING_FLOW = "training"
INGEST_FLOW = "ingest"
MONITORING_FLOW = "monitoring"
MONITOR_LIVE_FLOW = "monitoring-live"
BATCH_FLOW = "batch"
TRAIN_LOCAL_DEPLOYMENT = "train-local"
TRAIN_S3_DEPLOYMENT = "train-s3"
INGEST_DEPLOYMENT = "ingest"
MONITOR_MONTH_DEPLOYMENT = "monitor-month"
MONITOR_LIVE_DEPLOYMENT = "monitor-live"
SCORE_MONTH_DEPLOYMENT = "score-month"
DEPLOYMENTS = {
    TRAIN_LOCAL_DEPLOYMENT: TRAINING_FLOW,
    TRAIN_S3_DEPLOYMENT: TRAINING_FLOW,
    INGEST_DEPLOYMENT: INGEST_FLOW,
    MONITOR_MONTH_DEPLOYMENT: MONITORING_FLOW,
    MONITOR_LIVE_DEPLOYMENT: MONITOR_LIVE_FLOW,
    SCORE_MONTH_DEPLOYMENT: BATCH_FLOW,
}
# Deployments with this tag read the raw-data bucket: a stack without S3 does not register them.
S3_TAG = "s3"
AWS_CREDENTIALS_BLOCK = "nyctaxi-minio"
RAW_BUCKET_BLOCK = "nyctaxi-raw"
WEBHOOK_BLOCK = "nyctaxi-notify"
PROMOTED_EVENT = "nyctaxi.model.promoted"
# A prediction worker refused a version (it failed to load or to warm up) and kept serving its
# current one; the payload says which version and why.
REFUSED_EVENT = "nyctaxi.model.refused"
# The monitoring flow found the champion degraded on a month (its RMSE, or the drift of its
# inputs, beyond the thresholds); the payload carries the figures and the months a retraining
# should use (train_month, val_month). The bootstrap's automation answers it with a training run.
DEGRADED_EVENT = "nyctaxi.model.degraded"
# Prefect global concurrency limit (1 slot) held while a training run scores the champion,
# registers its version and moves the alias: one promotion at a time, across all workers.
PROMOTION_LIMIT = "nyctaxi-promotion"

# MLflow
MODEL_NAME = "nyc-taxi-duration"
EXPERIMENT = "nyc-taxi-duration"
MONITORING_EXPERIMENT = "nyc-taxi-monitoring"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
# Accounts of MLflow's basic-auth app (the admin's name comes from MLFLOW_ADMIN_USERNAME): the
# bootstrap and the Prefect worker track, register and move aliases as the trainer; the
# prediction service reads the registered model as the predictor.
MLFLOW_ADMIN_USER = "admin"  # the default of MLFLOW_ADMIN_USERNAME
MLFLOW_TRAINER_USER = "trainer"
MLFLOW_PREDICTOR_USER = "predictor"

# S3 buckets (defaults; RAW_BUCKET / MLFLOW_ARTIFACTS_BUCKET override them)
RAW_BUCKET = "nyctaxi-raw"
MLFLOW_ARTIFACTS_BUCKET = "mlflow-artifacts"

# The prediction log: every served ride, as Parquet files partitioned by day, written by the
# prediction service and read by the monitoring flow (nyctaxi.predictionlog). This variable
# names its folder in both (a volume shared by the two containers in Docker); unset, it is
# NYCTAXI_HOME/prediction-log.
PREDICTION_LOG_DIR_VARIABLE = "PREDICTION_LOG_DIR"
PREDICTION_LOG_FOLDER = "prediction-log"

# Native stack (`make run`): generated once under NYCTAXI_HOME, mode 0600, `KEY=value` lines that
# every make target and CLI of ours reads when the variables are not already set.
CREDENTIALS_FILE = "credentials.env"


def model_resource_id(model_name: str) -> str:
    """The Prefect event resource id of a registered model."""
    return f"nyctaxi.model.{model_name}"
