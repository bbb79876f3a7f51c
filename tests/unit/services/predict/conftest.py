"""Fixtures of the prediction service's unit tests: the app over our real ModelHolder and a fake
model source (see fakes.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from nyctaxi.names import PREDICTION_LOG_DIR_VARIABLE
from services.predict.app import create_app
from services.predict.holder import ModelHolder
from services.predict.prediction_log import close_all
from services.predict.settings import PredictSettings
from tests.unit.services.predict.fakes import FakeSource


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def holder(source: FakeSource) -> Iterator[ModelHolder]:
    # No poller thread: each test calls refresh() when it wants the registry looked at.
    holder = ModelHolder(source, reload_interval=3600, retry_interval=3600, poll=False)
    yield holder
    holder.stop()


@pytest.fixture(autouse=True)
def _restore_log_record_factory() -> Iterator[None]:
    # create_app installs the redacting record factory for the whole process: undo it.
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


@pytest.fixture(autouse=True)
def _prediction_log_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # An app built from the environment's settings logs into the test's own folder, never into
    # a real NYCTAXI_HOME; its writer thread ends with the test.
    monkeypatch.setenv(PREDICTION_LOG_DIR_VARIABLE, str(tmp_path / "prediction-log"))
    yield
    close_all()


@pytest.fixture
def service_settings() -> PredictSettings:
    """Small limits, no token, no prediction log (whatever the environment says); a test module
    overrides this fixture to run the app otherwise."""
    return PredictSettings(
        model_name="fake",
        max_batch_rides=5,
        max_body_bytes=4096,
        max_trip_distance=100,
        api_token=None,
        log_enabled=False,  # the log's own tests turn it on, in a folder of theirs
    )


@pytest.fixture
def app(
    holder: ModelHolder, service_settings: PredictSettings, monkeypatch: pytest.MonkeyPatch
) -> Flask:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return create_app(service_settings, holder=holder)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def serving(source: FakeSource, holder: ModelHolder) -> ModelHolder:
    source.alias_version = "1"
    holder.refresh()
    assert holder.current is not None and holder.current.version == "1"
    return holder
