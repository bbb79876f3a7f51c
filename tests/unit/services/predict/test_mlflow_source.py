"""Which MLflow client failures mean "the registry does not answer" (the cache may stand in)."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from services.predict.loaded import AliasNotFound, RegistryUnreachable
from services.predict.mlflow_source import MlflowModelSource, _no_answer
from services.predict.settings import PredictSettings


def wrapped(cause: Exception) -> MlflowException:
    """As MLflow's http_request raises: a new exception inside the `except` block."""
    try:
        raise cause
    except Exception as error:  # noqa: BLE001
        try:
            raise MlflowException(f"API request failed with exception {error}")
        except MlflowException as outer:
            return outer


@pytest.mark.parametrize(
    "cause",
    [
        requests.ConnectionError("Connection refused"),
        requests.Timeout("read timed out"),
        requests.exceptions.RetryError("too many 503 error responses"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_no_answer_is_unreachable(cause: Exception) -> None:
    assert _no_answer(wrapped(cause))


def test_a_503_is_unreachable_but_other_answers_are_not() -> None:
    assert _no_answer(MlflowException("try later", error_code=TEMPORARILY_UNAVAILABLE))
    denied = RestException({"error_code": "PERMISSION_DENIED", "message": "no"})
    unauthenticated = RestException({"error_code": "UNAUTHENTICATED", "message": "who?"})
    missing = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "gone"})
    for answer in (denied, unauthenticated, missing, ValueError("bad json")):
        assert not _no_answer(answer), answer


class FakeClient:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_model_version_by_alias(self, name: str, alias: str) -> None:
        raise self.error


@pytest.fixture
def source() -> MlflowModelSource:
    return MlflowModelSource(
        PredictSettings(mlflow_tracking_uri="http://reader:pw@mlflow:5000", model_name="m")
    )


def test_resolve_raises_registry_unreachable_with_the_credentials_masked(
    source: MlflowModelSource,
) -> None:
    source._client = FakeClient(wrapped(requests.ConnectionError("refused")))  # type: ignore[assignment]
    with pytest.raises(RegistryUnreachable) as raised:
        source.resolve()
    assert "http://***@mlflow:5000" in str(raised.value) and "pw" not in str(raised.value)


def test_resolve_keeps_a_missing_alias_and_an_auth_error_apart(source: MlflowModelSource) -> None:
    missing = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no alias"})
    source._client = FakeClient(missing)  # type: ignore[assignment]
    with pytest.raises(AliasNotFound):
        source.resolve()
    denied = RestException({"error_code": "PERMISSION_DENIED", "message": "no"})
    source._client = FakeClient(denied)  # type: ignore[assignment]
    with pytest.raises(RestException):
        source.resolve()
