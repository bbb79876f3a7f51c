"""The prediction log under real gunicorn (2 workers) serving a real registered model.

Two bars of issue 10: 2,000 rides posted to /predict (single rides and batches) are in the log
within 60 s with the production flush interval, each with its request id, model version and
prediction; and a graceful stop (SIGTERM to the gunicorn master, as `docker stop` sends) loses
none: with a flush interval long enough that nothing was written before the signal, every ride
answered is in the log once the service has exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import requests

from bench.serving_model import clean_month, register_version, train_booster
from nyctaxi.predictionlog import read_window
from tests.integration.test_predict_service import (
    READY_TIMEOUT,
    TRAIN_MONTH,
    Service,
    all_workers_ready,
    predict_service,
)
from tests.servers import ride_payloads, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RIDES = 2000
BAR_SECONDS = 60


@dataclass
class Posted:
    """What the service answered: one entry per ride, in posting order."""

    request_ids: list[str]
    ride_index: list[int]
    minutes: list[float]
    versions: set[str]


def post_rides(service: Service, rides: list[dict[str, object]], singles: int) -> Posted:
    """The first `singles` rides one per request (half with a client request id), the rest in
    batches of 500 and fewer."""
    posted = Posted([], [], [], set())
    requests_: list[tuple[list[dict[str, object]], bool]] = [([r], True) for r in rides[:singles]]
    rest = rides[singles:]
    requests_ += [(rest[at : at + 500], False) for at in range(0, len(rest), 500)]
    with requests.Session() as session:
        for n, (chunk, single) in enumerate(requests_):
            headers = {"X-Request-ID": f"it-{uuid.uuid4().hex[:8]}-{n}"} if n % 2 else {}
            body = chunk[0] if single else chunk
            answer = session.post(service.url + "/predict", json=body, headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            request_id = answer.headers["X-Request-ID"]
            if headers:
                assert request_id == headers["X-Request-ID"]
            reply = answer.json()
            minutes = [reply["duration"]] if single else reply["predictions"]
            posted.request_ids += [request_id] * len(minutes)
            posted.ride_index += list(range(len(minutes)))
            posted.minutes += minutes
            posted.versions.add(reply["model"]["version"])
    assert len(posted.minutes) == len(rides)
    return posted


def logged(service: Service, since: datetime) -> pd.DataFrame:
    assert service.prediction_log is not None
    return read_window(service.prediction_log, since, datetime.now(UTC) + timedelta(minutes=1))


def assert_logged(frame: pd.DataFrame, posted: Posted, version: str) -> None:
    """Every ride answered is in the log once, with its request id, position and prediction."""
    frame = frame.sort_values(["request_id", "ride_index"]).reset_index(drop=True)
    expected = (
        pd.DataFrame(
            {"request_id": posted.request_ids, "ride_index": posted.ride_index, "m": posted.minutes}
        )
        .sort_values(["request_id", "ride_index"])
        .reset_index(drop=True)
    )
    assert len(frame) == len(expected)
    assert frame["request_id"].tolist() == expected["request_id"].tolist()
    assert frame["ride_index"].tolist() == expected["ride_index"].tolist()
    assert (frame["prediction"].round(3) - expected["m"]).abs().max() < 2e-3
    assert set(frame["model_version"]) == posted.versions == {version}
    assert frame[["PULocationID", "DOLocationID", "trip_distance"]].notna().all().all()


@pytest.fixture(scope="module")
def trips(data_dir: Path) -> pd.DataFrame:
    return clean_month(data_dir, TRAIN_MONTH)


@pytest.fixture(scope="module")
def model(mlflow_url: str, trips: pd.DataFrame) -> tuple[str, str]:
    """A version under the alias of a model name of this module's own."""
    name = f"predict-log-{uuid.uuid4().hex[:8]}"
    booster = train_booster(trips, num_boost_round=10, max_depth=4, nthread=1)
    version = register_version(mlflow_url, name, booster, trips, alias="champion")
    return name, version


@pytest.fixture
def serving(
    tmp_path: Path, mlflow_url: str, model: tuple[str, str]
) -> Iterator[Callable[..., Service]]:
    """Start the service (ready on every worker) with extra settings; stopped at the end."""
    with contextlib.ExitStack() as stack:

        def start(**settings: str) -> Service:
            folder = tmp_path / f"service-{uuid.uuid4().hex[:6]}"
            service = stack.enter_context(predict_service(folder, mlflow_url, model[0], **settings))
            wait_until(
                lambda: all_workers_ready(service),
                timeout=READY_TIMEOUT,
                what="the model served by every worker",
                log_file=service.log_file,
            )
            return service

        yield start


def test_2000_rides_are_in_the_log_within_60_s(
    serving: Callable[..., Service],
    model: tuple[str, str],
    trips: pd.DataFrame,
    measurement: Callable[[str], None],
) -> None:
    service = serving()  # the production flush interval (PREDICT_LOG_FLUSH_SECONDS=5)
    since = datetime.now(UTC) - timedelta(seconds=1)
    started = time.monotonic()
    posted = post_rides(service, ride_payloads(trips.head(RIDES)), singles=500)
    answered = time.monotonic()
    wait_until(
        lambda: len(logged(service, since)) >= RIDES,
        timeout=BAR_SECONDS,
        what=f"{RIDES} rides in the prediction log",
        interval=0.1,
        log_file=service.log_file,
    )
    done = time.monotonic()
    measurement(
        f"prediction log: {RIDES} rides (500 single requests + 3 batches) all in the log "
        f"{done - answered:.1f} s after the last answer ({done - started:.1f} s after the "
        f"first post; bar {BAR_SECONDS} s)"
    )
    assert_logged(logged(service, since), posted, model[1])
    described = service.get("/model").json()["prediction_log"]
    assert described["dir"] == str(service.prediction_log)
    assert described["dropped_rides"] == described["failed_rides"] == 0


def test_a_graceful_stop_loses_no_ride(
    serving: Callable[..., Service],
    model: tuple[str, str],
    trips: pd.DataFrame,
    measurement: Callable[[str], None],
) -> None:
    # No flush before the signal: what is in the log afterwards was written on the way out.
    service = serving(PREDICT_LOG_FLUSH_SECONDS="60")
    since = datetime.now(UTC) - timedelta(seconds=1)
    posted = post_rides(service, ride_payloads(trips.iloc[RIDES : 2 * RIDES]), singles=300)
    assert logged(service, since).empty, "written before the stop: the test would prove nothing"
    assert service.process is not None
    stopped_at = time.monotonic()
    os.kill(service.process.pid, signal.SIGTERM)  # the master: it stops its workers gracefully
    assert service.process.wait(timeout=30) == 0
    measurement(
        f"prediction log: SIGTERM with {len(posted.minutes)} rides queued: gunicorn exited in "
        f"{time.monotonic() - stopped_at:.1f} s, "
        f"{len(logged(service, since))}/{len(posted.minutes)} rides in the log"
    )
    assert_logged(logged(service, since), posted, model[1])
