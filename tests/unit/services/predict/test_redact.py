"""Credentials never reach the logs: URL userinfo and secret values are masked in every record,
tracebacks included, and the MLflow source never writes its tracking URI unmasked."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from services.predict.holder import AliasNotFound
from services.predict.mlflow_source import MlflowModelSource
from services.predict.redact import install_log_redaction, redact, redact_url
from services.predict.settings import PredictSettings

URI = "https://reader:pa55word@mlflow.internal:5000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:secret@host:5000/api", "http://***@host:5000/api"),
        ("http://token@host/", "http://***@host/"),
        ("https://u:p@ss@host/x", "https://***@host/x"),  # an unescaped @ in the password
        ("see s3://key:sec@bucket/a and http://h/b", "see s3://***@bucket/a and http://h/b"),
        ("http://host/path?user=a@b", "http://host/path?user=a@b"),  # no userinfo: unchanged
        ("models:/nyc-taxi-duration@champion", "models:/nyc-taxi-duration@champion"),
        ("sqlite:////home/app/mlflow.db", "sqlite:////home/app/mlflow.db"),
    ],
)
def test_redact_url_masks_only_the_userinfo(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_redact_masks_secret_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-pass")
    monkeypatch.setenv("PREDICT_API_TOKEN", "tok")  # too short to mask without mangling words
    text = "401 for user predictor with hunter2-pass at http://a:b@h/; tok stays"
    assert redact(text) == "401 for user predictor with *** at http://***@h/; tok stays"


@pytest.fixture
def redacting() -> Iterator[logging.Logger]:
    factory = logging.getLogRecordFactory()
    install_log_redaction()
    install_log_redaction()  # twice: still one layer
    yield logging.getLogger("tests.redact")
    logging.setLogRecordFactory(factory)


def test_log_records_are_masked_tracebacks_included(
    redacting: logging.Logger, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-pass")
    redacting.warning("cannot reach %s", URI)
    try:
        raise ConnectionError(f"refused by {URI} (password hunter2-pass)")
    except ConnectionError:
        redacting.exception("lookup failed")
    assert "cannot reach https://***@mlflow.internal:5000" in caplog.text
    assert "refused by https://***@mlflow.internal:5000 (password ***)" in caplog.text
    assert "pa55word" not in caplog.text and "hunter2-pass" not in caplog.text


def test_other_libraries_loggers_are_masked_too(
    redacting: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    # MLflow logs through loggers and handlers of its own: the record itself must be masked.
    logging.getLogger("mlflow.some.module").warning("tracking at %s", URI)
    assert "pa55word" not in caplog.text and "https://***@mlflow.internal" in caplog.text


class FakeMlflowClient:
    def get_model_version_by_alias(self, name: str, alias: str) -> None:
        raise MlflowException("not found", error_code=RESOURCE_DOES_NOT_EXIST)


def test_the_mlflow_source_names_its_registry_without_credentials() -> None:
    source = MlflowModelSource(PredictSettings(mlflow_tracking_uri=URI, model_name="m"))
    source._client = FakeMlflowClient()
    assert "pa55word" not in source.describe() and "mlflow.internal" in source.describe()
    with pytest.raises(AliasNotFound) as missing:
        source.resolve()
    assert "pa55word" not in str(missing.value) and "mlflow.internal" in str(missing.value)
    assert source.tracking_uri == URI  # MLflow itself still gets the credentials
