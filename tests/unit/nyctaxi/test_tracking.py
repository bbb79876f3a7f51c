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


def test_a_window_is_logged_as_its_ends_with_rows_summed_and_each_checksum() -> None:
    from nyctaxi.report import MonthSummary
    from nyctaxi.tracking import month_metrics, month_params, month_tags

    months = [
        MonthSummary("2022-01", "train", "a" * 64, 100, 90),
        MonthSummary("2022-02", "train", "b" * 64, 50, 45),
        MonthSummary("2023-01", "validation", "c" * 64, 30, 29),
    ]
    assert month_params(months) == {
        "train_month": "2022-02",
        "train_from": "2022-01",
        "train_to": "2022-02",
        "val_month": "2023-01",
    }
    assert month_metrics(months) == {
        "train_rows_read": 150.0,
        "train_rows_dropped": 15.0,
        "train_months": 2.0,
        "val_rows_read": 30.0,
        "val_rows_dropped": 1.0,
        "val_months": 1.0,
    }
    tags = month_tags(months)
    assert tags["sha256_2022-02"] == "b" * 64 and tags["val_sha256"] == "c" * 64
    assert "train_sha256" not in tags  # two training files: no single checksum to name
