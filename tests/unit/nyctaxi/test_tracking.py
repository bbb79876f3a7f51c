"""Which MLflow failures are worth another try (the training flow retries only those)."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2 as codes

from nyctaxi.tracking import is_transient


@pytest.mark.parametrize(
    "error",
    [
        MlflowException("API request to http://mlflow:5000 failed with exception ..."),
        MlflowException("busy", error_code=codes.TEMPORARILY_UNAVAILABLE),
        MlflowException("slow down", error_code=codes.REQUEST_LIMIT_EXCEEDED),
        ConnectionRefusedError(111, "Connection refused"),
        requests.ConnectionError("reset by peer"),
        TimeoutError("timed out"),
    ],
)
def test_network_and_server_faults_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        MlflowException(
            "Changing param values is not allowed", error_code=codes.INVALID_PARAMETER_VALUE
        ),
        MlflowException("no such model", error_code=codes.RESOURCE_DOES_NOT_EXIST),
        MlflowException("not yours", error_code=codes.PERMISSION_DENIED),
        KeyError("val_month"),
        ValueError("month must be 1..12, got 13"),
    ],
)
def test_refused_requests_and_bugs_fail_at_once(error: BaseException) -> None:
    assert not is_transient(error)
