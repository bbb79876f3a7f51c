"""The closed loop on `make run` (embedded defaults): serve -> log -> monitor -> detect ->
retrain -> gate -> promote -> swap, with no command between `make monitor` and the new model.

The bootstrap trains the champion (2023-01, validated on 2023-02). Rides posted to /predict land
in the prediction log. `make monitor` on a month like the training data asks for nothing; on a
month far from it (2021-02) the degraded event's automation runs the training deployment
(train 2021-01, validate 2021-02), the gate promotes the new version (it beats the champion on
2021-02's rides) and the service serves it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun

from nyctaxi import cleaning
from tests.e2e.native import (
    MARKER,
    MODEL,
    assert_nothing_left,
    base_environment,
    log_tail,
    native_stack,
    post_ride,
    stack_client,
    stack_urls,
    wait_for_final_state,
    wait_for_prediction,
)
from tests.servers import REPO_ROOT, ride_payloads, taxi_data_dir, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

RIDES = 2_000
BATCH = 100
REPLAY = "replay-"  # X-Request-ID prefix of the replayed rides


def replayed_rides(count: int) -> list[dict]:
    """The first `count` rides of a real month, as a client would send them."""
    trips = cleaning.read_trips(taxi_data_dir() / "green_tripdata_2023-03.parquet").dropna()
    trips = trips[trips["trip_distance"].between(0.1, 50)].head(count)
    return ride_payloads(trips)


def post(url: str, body: object, request_id: str) -> dict:
    headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def replay(url: str, rides: list[dict]) -> int:
    """Half the rides one per request, half in batches of BATCH; returns the rides answered."""
    half = len(rides) // 2
    answered = sum(
        "duration" in post(url, ride, f"{REPLAY}{i}") for i, ride in enumerate(rides[:half])
    )
    for start in range(half, len(rides), BATCH):
        batch = rides[start : start + BATCH]
        answered += len(post(url, batch, f"{REPLAY}{start}")["predictions"])
    return answered


def replayed_in_log(folder: Path) -> list[float]:
    """trip_distance of the replayed rides in the log's finished files (a file being written
    starts with a dot); the request ids tell them from the other rides."""
    if not folder.exists():
        return []
    files = [path for path in folder.rglob("*.parquet") if not path.name.startswith(".")]
    tables = [pq.read_table(path, columns=["request_id", "trip_distance"]) for path in files]
    return [
        row["trip_distance"]
        for table in tables
        for row in table.to_pylist()
        if row["request_id"].startswith(REPLAY)
    ]


def make(target: str, env: dict[str, str], **variables: str) -> subprocess.CompletedProcess:
    args = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(
        args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def retraining_runs() -> list[FlowRun]:
    """Training runs started by the retraining automation (they carry its reason)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["training"])))
    return [run for run in runs if run.parameters.get("retrain_reason")]


def served_version(url: str) -> str | None:
    answer = post_ride(url)
    return None if answer is None else answer["model"]["version"]


def test_the_loop_closes_without_a_command(
    tmp_path: Path, measurement: Callable[[str], None]
) -> None:
    env = base_environment(tmp_path)
    _, mlflow_url, predict_url = stack_urls(env)
    log_file = tmp_path / "stack.log"
    prediction_log = Path(env["NYCTAXI_HOME"]) / "prediction-log"

    with native_stack(env, log_file) as stack, stack_client(env):
        first = wait_for_prediction(predict_url, stack, log_file)
        assert first["model"]["version"] == "1"

        # Replayed rides reach the prediction log (bar: 2,000 rides within 60 s).
        rides = replayed_rides(RIDES)
        assert replay(predict_url, rides) == RIDES
        posted = time.monotonic()
        wait_until(
            lambda: len(replayed_in_log(prediction_log)) >= RIDES,
            timeout=60,
            what=f"{RIDES} rides in {prediction_log}",
        )
        # Every replayed ride once (the distances stand for the rides).
        logged = Counter(replayed_in_log(prediction_log))
        assert logged == Counter(ride["trip_distance"] for ride in rides)
        measurement(
            f"native loop: {RIDES} rides posted to /predict in the prediction log "
            f"{time.monotonic() - posted:.1f} s after the last answer (bar: 60 s)"
        )

        # A month like the champion's data: fine, no event, no retraining.
        close = make("monitor", env, MONTH="2023-03")
        assert close.returncode == 0, close.stdout + close.stderr

        # A month far from it: the automation retrains, the gate promotes, the service swaps.
        far = make("monitor", env, MONTH="2021-02")
        assert far.returncode == 0, far.stdout + far.stderr
        returned = time.monotonic()
        wait_until(lambda: bool(retraining_runs()), timeout=120, what="the retraining run")
        (retraining,) = retraining_runs()  # one: the close month asked for none
        assert retraining.parameters["train_month"] == "2021-01"
        assert retraining.parameters["val_month"] == "2021-02"
        done = wait_for_final_state(retraining.id, log_file)
        assert done.state.is_completed(), f"{done.state}\n{log_tail(log_file)}"

        registry = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
        version = registry.get_model_version(MODEL, "2")
        assert "monitoring 2021-02" in version.tags["retrain_reason"]
        assert "champion" in version.aliases, version.tags.get("promotion")
        wait_until(lambda: served_version(predict_url) == "2", timeout=120, what="v2 served")
        measurement(
            "native loop: make monitor MONTH=2021-02 returned -> retrained, promoted and v2 "
            f"served {time.monotonic() - returned:.0f} s later (bar: 300 s); load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        assert len(registry.search_model_versions(f"name='{MODEL}'")) == 2

    assert stack.returncode is not None
    assert_nothing_left(env[MARKER])
