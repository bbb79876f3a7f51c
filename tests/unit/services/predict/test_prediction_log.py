"""The service's prediction log: batching off the request path, flush on close, a bounded
queue, request ids, and a log that cannot be written never failing a request.

The queue and its writer thread run for real on the test's tmp_path (conftest.py closes every
log after each test); the app runs over the fake model source (fakes.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient

from nyctaxi.predictionlog import read_window
from services.predict import prediction_log
from services.predict.app import create_app
from services.predict.holder import LoadedModel, ModelHolder
from services.predict.prediction_log import PredictionLog, close_all, open_log, request_id
from services.predict.settings import PredictSettings
from services.predict.validation import Rides
from tests.servers import wait_until
from tests.unit.services.predict.fakes import RIDE, VersionedPredictor

MODEL = LoadedModel(name="fake", version="7", alias="champion", predictor=VersionedPredictor(7))
MakeLog = Callable[..., PredictionLog]
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


class Counts:
    def __init__(self) -> None:
        self.written = self.dropped = self.failed = 0

    def log_written(self, rides: int) -> None:
        self.written += rides

    def log_dropped(self, rides: int) -> None:
        self.dropped += rides

    def log_failed(self, rides: int) -> None:
        self.failed += rides


def rides(n: int) -> Rides:
    return Rides(
        pu_location_id=np.full(n, 43, dtype=np.int32),
        do_location_id=np.full(n, 151, dtype=np.int32),
        trip_distance=np.arange(n, dtype=np.float64),
        pickup=np.full(n, np.datetime64("2023-03-01T08:15", "us")),
        single=n == 1,
    )


def minutes(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) + 70.0


@pytest.fixture
def counts() -> Counts:
    return Counts()


@pytest.fixture
def make_log(tmp_path: Path, counts: Counts) -> Iterator[MakeLog]:
    made: list[PredictionLog] = []

    def make(**options: float) -> PredictionLog:
        chosen = {"flush_seconds": 3600, "batch_rows": 1000, "max_queued_rows": 1000, **options}
        log = PredictionLog(tmp_path / "log", counters=counts, **chosen)  # type: ignore[arg-type]
        made.append(log)
        return log

    yield make
    for log in made:
        log.close()


def logged(log: PredictionLog) -> pd.DataFrame:
    return read_window(log.directory, *EVER)


def test_rides_wait_in_memory_until_a_batch_is_full(make_log: MakeLog, counts: Counts) -> None:
    log = make_log(batch_rows=5)
    log.record("r1", rides(2), minutes(2), MODEL)
    log.record("r2", rides(2), minutes(2), MODEL)
    assert not log.directory.exists() or logged(log).empty  # 4 < 5: nothing written yet
    assert log.state()["queued_rides"] == 4
    log.record("r3", rides(2), minutes(2), MODEL)  # 6 >= 5: the writer wakes
    wait_until(lambda: counts.written == 6, timeout=10, what="a full batch written", interval=0.02)
    frame = logged(log)
    assert frame["request_id"].tolist() == ["r1", "r1", "r2", "r2", "r3", "r3"]
    assert frame["ride_index"].tolist() == [0, 1] * 3
    assert frame["prediction"].tolist() == [70.0, 71.0] * 3
    assert set(frame["model_version"]) == {"7"} and set(frame["model_name"]) == {"fake"}
    assert len(list(log.directory.rglob("*.parquet"))) == 1  # one flush, one file


def test_a_quiet_worker_still_writes_every_flush_interval(
    make_log: MakeLog, counts: Counts
) -> None:
    log = make_log(flush_seconds=0.05)
    log.record("lone", rides(1), minutes(1), MODEL)
    wait_until(lambda: counts.written == 1, timeout=10, what="the interval's flush", interval=0.02)
    assert logged(log)["request_id"].tolist() == ["lone"]


def test_close_writes_everything_queued_and_is_idempotent(
    make_log: MakeLog, counts: Counts
) -> None:
    log = make_log()
    for n in range(10):
        log.record(f"r{n}", rides(3), minutes(3), MODEL)
    assert counts.written == 0
    log.close()
    log.close()
    assert counts.written == 30 and len(logged(log)) == 30
    log.record("late", rides(1), minutes(1), MODEL)  # after close: dropped, counted
    assert counts.dropped == 1


def test_a_full_queue_drops_new_rides_counts_them_and_warns_once(
    make_log: MakeLog,
    counts: Counts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = make_log(max_queued_rows=5)
    with caplog.at_level(logging.WARNING, logger=prediction_log.__name__):
        log.record("kept-1", rides(2), minutes(2), MODEL)
        log.record("kept-2", rides(2), minutes(2), MODEL)
        for n in range(20):  # 4 + 2 > 5: none of these fit
            log.record(f"dropped-{n}", rides(2), minutes(2), MODEL)
        log.record("kept-3", rides(1), minutes(1), MODEL)  # 4 + 1 fits
    assert counts.dropped == 40
    assert log.state()["queued_rides"] == 5 and log.state()["dropped_rides"] == 40
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "dropped 2 ride(s)" in warnings[0], warnings
    log.close()
    assert set(logged(log)["request_id"]) == {"kept-1", "kept-2", "kept-3"}


def test_a_write_error_is_counted_and_logged_and_the_next_flush_works(
    make_log: MakeLog,
    counts: Counts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = make_log()
    log.directory.parent.mkdir(parents=True, exist_ok=True)
    log.directory.write_text("a file where the folder should be")
    log.record("lost", rides(2), minutes(2), MODEL)
    with caplog.at_level(logging.WARNING, logger=prediction_log.__name__):
        assert log.flush() == 0  # no exception
    assert counts.failed == 2 and counts.written == 0
    assert "could not write 2 ride(s)" in caplog.text
    log.directory.unlink()  # the folder is back: logging goes on
    log.record("kept", rides(1), minutes(1), MODEL)
    assert log.flush() == 1
    assert logged(log)["request_id"].tolist() == ["kept"]


def test_rides_that_cannot_be_queued_are_counted_never_raised(
    make_log: MakeLog, counts: Counts, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log()
    with caplog.at_level(logging.ERROR, logger=prediction_log.__name__):
        log.record("odd", rides(2), np.ones((2, 3)), MODEL)  # predictions of the wrong shape
    assert counts.dropped == 2 and log.state()["queued_rides"] == 0
    assert "could not queue request odd" in caplog.text
    log.record("fine", rides(1), minutes(1), MODEL)
    log.close()
    assert logged(log)["request_id"].tolist() == ["fine"]


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("abc-123_X.y", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("has space", False),
        ("semi;colon", False),
        ("new\nline", False),
        ("ünïcode", False),
        (None, False),
    ],
)
def test_a_request_id_is_the_clients_when_sane(header: str | None, kept: bool) -> None:
    made = request_id(header)
    if kept:
        assert made == header
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", made), made


def test_open_log_is_off_when_disabled_or_the_folder_cannot_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert open_log(PredictSettings(log_enabled=False)) is None
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    settings = PredictSettings(prediction_log_dir=str(blocker / "log"))
    with caplog.at_level(logging.WARNING, logger=prediction_log.__name__):
        assert open_log(settings) is None
    assert "prediction log disabled" in caplog.text and str(blocker) in caplog.text
    opened = open_log(PredictSettings(prediction_log_dir=str(tmp_path / "fine")))
    assert opened is not None and opened.directory == tmp_path / "fine"
    assert not list((tmp_path / "fine").iterdir()), "the probe leaves nothing behind"


# -- through the app ----------------------------------------------------------------------------


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "served"


@pytest.fixture
def service_settings(log_dir: Path) -> PredictSettings:
    return PredictSettings(
        model_name="fake",
        max_batch_rides=5,
        api_token=None,
        log_enabled=True,
        prediction_log_dir=str(log_dir),
        log_flush_seconds=60,  # written when the test closes the log
    )


@pytest.mark.usefixtures("serving")
def test_served_rides_are_logged_with_their_request_ids(client: FlaskClient, log_dir: Path) -> None:
    single = client.post("/predict", json=RIDE, headers={"X-Request-ID": "client-id-1"})
    batch = client.post("/predict", json=[RIDE, {**RIDE, "trip_distance": 3.0}])
    refused = client.post("/predict", json={**RIDE, "PULocationID": 999})
    assert single.headers["X-Request-ID"] == "client-id-1"
    assert re.fullmatch(r"[0-9a-f]{32}", batch.headers["X-Request-ID"])
    assert refused.status_code == 422 and refused.headers["X-Request-ID"]  # errors carry one too
    model = client.get("/model").get_json()["prediction_log"]
    assert model["dir"] == str(log_dir) and model["queued_rides"] == 3
    close_all()  # what gunicorn's worker_exit does
    frame = read_window(log_dir, *EVER)
    assert frame["request_id"].tolist() == ["client-id-1"] + [batch.headers["X-Request-ID"]] * 2
    assert frame["ride_index"].tolist() == [0, 0, 1]
    assert frame["trip_distance"].tolist() == [1.2, 1.2, 3.0]
    assert frame["prediction"].tolist() == pytest.approx([11.2, 11.2, 13.0])
    assert frame["PULocationID"].tolist() == [43.0] * 3
    assert str(frame["lpep_pickup_datetime"].iloc[0]) == "2023-03-01 08:15:00"
    assert set(frame["model_version"]) == {"1"}
    now = datetime.now(UTC)
    assert (frame["served_at"] > now - timedelta(minutes=1)).all()


@pytest.mark.usefixtures("serving")
def test_the_counters_reach_metrics(client: FlaskClient) -> None:
    client.post("/predict", json=[RIDE, RIDE])
    close_all()
    text = client.get("/metrics").get_data(as_text=True)
    assert "predict_log_written_rides_total 2.0" in text
    assert "predict_log_dropped_rides_total 0.0" in text


def test_a_log_that_cannot_be_written_never_fails_a_request(
    holder: ModelHolder,
    serving: ModelHolder,
    log_dir: Path,
    service_settings: PredictSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    app: Flask = create_app(service_settings.model_copy(update={"log_flush_seconds": 0.05}), holder)
    client = app.test_client()
    log_dir.rmdir()  # the folder goes away, a file takes its place
    log_dir.write_text("")
    for _ in range(5):
        assert client.post("/predict", json=[RIDE, RIDE]).status_code == 200
    state = lambda: client.get("/model").get_json()["prediction_log"]  # noqa: E731
    wait_until(
        lambda: state()["failed_rides"] == 10,
        timeout=10,
        what="failed writes counted",
        interval=0.02,
    )
    assert state()["written_rides"] == 0
