"""Integration-test isolation: MLflow's process-wide state does not carry across modules."""

from __future__ import annotations

import os
from collections.abc import Iterator

import mlflow
import pytest
from mlflow.tracking import fluent
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

# MLflow mirrors its globals into these variables (for subprocesses) behind monkeypatch's back.
MLFLOW_ENV_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")


@pytest.fixture(autouse=True, scope="module")
def _mlflow_state_restored() -> Iterator[None]:
    """Put MLflow's tracking URI, registry URI and active experiment back after each module.

    `mlflow.set_tracking_uri` and `mlflow.set_experiment` set process globals that outrank the
    environment: a module that points MLflow at its own local store would otherwise send a
    later module's runs there, while that module's registry calls go to its server (a 403 from
    an authenticated server, for a run it has never seen).
    """
    env = {name: os.environ.get(name) for name in MLFLOW_ENV_VARS}
    tracking_uri = tracking_utils._tracking_uri
    registry_uri = registry_utils._registry_uri
    experiment_id = fluent._active_experiment_id
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    tracking_utils._tracking_uri = tracking_uri
    registry_utils._registry_uri = registry_uri
    fluent._active_experiment_id = experiment_id
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
