"""Models from the MLflow registry: resolve `<name>@<alias>` to a version, download that version,
load it from local files.

Downloading the resolved version (`models:/<name>/<version>`) rather than `models:/<name>@<alias>`
again means the version we report is the version we loaded, even if the alias moves meanwhile.
The files go where the holder says (a staging folder of the model cache); loading reads them
from there with the code the version ships (nyctaxi.modelcode).

A registry that does not answer (refused, timed out, kept answering 502/503/504) is raised as
RegistryUnreachable, so the holder may serve its cached version; an auth error, a missing alias
or any other answer is not.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from services.predict.loaded import (
    AliasNotFound,
    Downloaded,
    LoadedModel,
    ModelMeta,
    RegistryUnreachable,
    VersionRef,
)
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
_UNAVAILABLE_CODES = {"TEMPORARILY_UNAVAILABLE"}  # 503


def _no_answer(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from, says the server did not answer. MLflow wraps
    the HTTP client's exception in a message (`raise MlflowException(...)` inside `except`), so
    the chain is followed through __context__ as well as __cause__."""
    import requests

    no_answer = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.RetryError,  # retried 502/503/504 (or 429, 500) until it gave up
        ConnectionError,
        TimeoutError,
    )
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, no_answer):
            return True
        if getattr(current, "error_code", None) in _UNAVAILABLE_CODES:
            return True
        current = current.__cause__ or current.__context__
    return False


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

    def _unreachable(self, error: Exception) -> Exception:
        """RegistryUnreachable for a registry that did not answer, else `error` itself."""
        if _no_answer(error):
            where = redact_url(self.tracking_uri)
            return RegistryUnreachable(f"the registry at {where} did not answer: {error}")
        return error

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
            raise self._unreachable(error) from error
        except Exception as error:  # noqa: BLE001 - classified, raised again
            raise self._unreachable(error) from error

    def download(self, ref: VersionRef, into: Path) -> Downloaded:
        import mlflow

        client = self._mlflow_client()
        uri = f"models:/{self.name}/{ref.version}"
        try:
            model_version = client.get_model_version(self.name, ref.version)
            if ref.run_id and model_version.run_id != ref.run_id:
                raise LookupError(f"version {ref.version} changed runs while it was fetched")
            logger.info("downloading %s (@%s)", uri, self.alias)
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into))
            metrics: dict[str, float] = {}
            if model_version.run_id:
                metrics = dict(client.get_run(model_version.run_id).data.metrics)
        except Exception as error:  # noqa: BLE001 - classified, raised again
            raise self._unreachable(error) from error
        meta = ModelMeta(str(ref.version), model_version.run_id, metrics, uri)
        return Downloaded(model_dir=Path(local), meta=meta)

    def load_local(self, model_dir: Path, meta: ModelMeta) -> LoadedModel:
        from nyctaxi import modelcode

        # With the feature code the version was logged with, whatever this image holds.
        loaded = modelcode.load_model(str(model_dir))
        python_model = loaded.python_model()
        python_model.set_nthread(self.model_threads)
        return LoadedModel(
            name=self.name,
            version=meta.version,
            alias=self.alias,
            predictor=python_model,
            run_id=meta.run_id,
            loaded_at=datetime.now(UTC),
            metrics=meta.metrics,
            source=meta.source,
            code_version=loaded.code_version,
        )
