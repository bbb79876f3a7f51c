"""Models from the MLflow registry: resolve `<name>@<alias>` to a version, load that version.

Loading the resolved version (`models:/<name>/<version>`) rather than `models:/<name>@<alias>`
again means the version we report is the version we loaded, even if the alias moves meanwhile.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from services.predict.holder import AliasNotFound, LoadedModel, VersionRef
from services.predict.redact import redact_url
from services.predict.settings import PredictSettings

logger = logging.getLogger(__name__)

# MLflow's HTTP client retries a refused connection for minutes by default; the poller retries
# on its own schedule, so each attempt should fail fast and say why. MLflow's usage telemetry
# would write ~/.config/mlflow (read-only in the container) and call out to the internet.
_MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
_MISSING_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


class MlflowModelSource:
    def __init__(self, settings: PredictSettings) -> None:
        self.name = settings.model_name
        self.alias = settings.model_alias
        self.tracking_uri = settings.tracking_uri()
        self.model_threads = settings.model_threads
        self._client = None

    def describe(self) -> str:
        # For the logs: the URI may carry `user:password@` (MLflow's basic auth).
        return f"models:/{self.name}@{self.alias} at {redact_url(self.tracking_uri)}"

    def _mlflow_client(self):  # noqa: ANN202 - MlflowClient, imported lazily
        if self._client is None:
            for variable, value in _MLFLOW_ENV_DEFAULTS.items():
                os.environ.setdefault(variable, value)
            import mlflow
            from mlflow.tracking import MlflowClient

            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def resolve(self) -> VersionRef:
        client = self._mlflow_client()  # first: it sets MLflow's environment before any import
        from mlflow.exceptions import MlflowException

        try:
            found = client.get_model_version_by_alias(self.name, self.alias)
            return VersionRef(str(found.version), found.run_id)
        except MlflowException as error:
            if error.error_code in _MISSING_CODES:
                raise AliasNotFound(
                    f"no version of model '{self.name}' has the alias '{self.alias}' "
                    f"in the registry at {redact_url(self.tracking_uri)}"
                ) from error
            raise

    def load(self, version: str) -> LoadedModel:
        from nyctaxi import modelcode

        client = self._mlflow_client()
        model_version = client.get_model_version(self.name, version)
        uri = f"models:/{self.name}/{version}"
        logger.info("loading %s (@%s)", uri, self.alias)
        # With the feature code the version was logged with, whatever this image holds.
        loaded = modelcode.load_model(uri)
        python_model = loaded.python_model()
        python_model.set_nthread(self.model_threads)
        metrics: dict[str, float] = {}
        if model_version.run_id:
            metrics = dict(client.get_run(model_version.run_id).data.metrics)
        return LoadedModel(
            name=self.name,
            version=str(version),
            alias=self.alias,
            predictor=python_model,
            run_id=model_version.run_id,
            loaded_at=datetime.now(UTC),
            metrics=metrics,
            source=uri,
            code_version=loaded.code_version,
        )
