"""The monitoring flow on real TLC months against a real Prefect server and a real MLflow server.

A champion trained on 2023-01 (validated on 2023-02) is monitored on a month like its data
(2023-03: no event, no retraining asked) and on a month far from it (2021-02, a pandemic winter:
the degraded event with its figures and the months to retrain on).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from flows.monitoring import monitor_live_flow, monitoring_flow
from flows.training.flow import training_flow
from nyctaxi import cleaning, names, predictionlog
from nyctaxi.features import RAW_COLUMNS
from tests.integration.test_training_flow import read_markdown_artifact
from tests.servers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def champion(
    prefect_api: str, mlflow_url: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A champion trained on 2023-01 / 2023-02 in its own NYCTAXI_HOME, under a fresh name."""
    home = tmp_path_factory.mktemp("monitoring-home")
    env = {
        "NYCTAXI_HOME": str(home),
        "MLFLOW_TRACKING_URI": mlflow_url,
        "TAXI_DATA_DIR": str(data_dir),
        "TLC_ALLOW_DOWNLOAD": "false",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        model_name = f"nyc-taxi-monitored-{uuid.uuid4().hex[:8]}"
        result = training_flow(train_month="2023-01", val_month="2023-02", model_name=model_name)
    assert result.alias == "champion"
    return {**env, "MODEL_NAME": model_name, "VERSION": result.model_version}


@pytest.fixture
def monitored_env(champion: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in ("NYCTAXI_HOME", "MLFLOW_TRACKING_URI", "TAXI_DATA_DIR", "TLC_ALLOW_DOWNLOAD"):
        monkeypatch.setenv(key, champion[key])
    return champion


def degraded_events(model_name: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(name=[names.DEGRADED_EVENT]),
                resource=EventResourceFilter(id=[names.model_resource_id(model_name)]),
            ),
            limit=10,
        )
    return list(page.events)


def monitoring_runs(mlflow_url: str, model_name: str) -> list[Any]:
    mlflow.set_tracking_uri(mlflow_url)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(names.MONITORING_EXPERIMENT)
    assert experiment is not None
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.model_name = '{model_name}'"
    )


def test_a_month_like_the_training_data_emits_nothing(
    monitored_env: dict[str, str], mlflow_url: str
) -> None:
    model_name = monitored_env["MODEL_NAME"]
    result = monitoring_flow(month="2023-03", model_name=model_name)

    assert not result.degraded, result.reason
    assert result.event is None
    assert result.reference_month == "2023-01"
    assert result.rows > 50_000
    assert result.figures["rmse_ratio"] < 1.10
    assert result.figures["drift_share"] < 0.5
    runs = monitoring_runs(mlflow_url, model_name)
    assert [run.data.tags["monitored"] for run in runs] == ["month:2023-03"]
    assert runs[0].data.tags["verdict"] == "ok"
    assert runs[0].data.metrics["rmse"] == pytest.approx(result.figures["rmse"])
    files = {a.path for a in MlflowClient().list_artifacts(runs[0].info.run_id, "evidently")}
    assert files == {"evidently/evidently-2023-03.html"}
    assert "**fine**" in read_markdown_artifact("monitoring-2023-03")
    assert degraded_events(model_name) == []


def test_a_month_far_from_it_emits_the_degraded_event_with_its_figures(
    monitored_env: dict[str, str], mlflow_url: str, measurement: Callable[[str], None]
) -> None:
    model_name = monitored_env["MODEL_NAME"]
    started = time.monotonic()
    result = monitoring_flow(month="2021-02", model_name=model_name)
    seconds = time.monotonic() - started

    assert result.degraded
    assert result.event == names.DEGRADED_EVENT
    assert result.figures["rmse_ratio"] > 1.10
    assert "RMSE" in result.reason and "drifted" in result.reason
    wait_until(lambda: bool(degraded_events(model_name)), timeout=30, what="degraded event")
    (event,) = degraded_events(model_name)
    payload = event.payload
    assert payload["version"] == monitored_env["VERSION"]
    assert (payload["month"], payload["train_month"], payload["val_month"]) == (
        "2021-02",
        "2021-01",
        "2021-02",
    )
    assert payload["rmse"] == pytest.approx(result.figures["rmse"])
    assert payload["drift_share"] > 0.5 and "trip_distance" in payload["drifted"]
    report = read_markdown_artifact("monitoring-2021-02")
    assert "**degraded**" in report and "trains on 2021-01" in report
    measurement(
        "monitoring 2021-02 (champion trained on 2023-01): RMSE "
        f"x{result.figures['rmse_ratio']:.2f}"
        f" of validation, {result.figures['drift_share']:.0%} of inputs drifted; flow "
        f"{seconds:.1f} s"
    )

    # Monitoring the month again replaces its MLflow run: one run per monitored month.
    again = monitoring_flow(month="2021-02", model_name=model_name)
    subjects = sorted(run.data.tags["monitored"] for run in monitoring_runs(mlflow_url, model_name))
    assert subjects == ["month:2021-02", "month:2023-03"]
    assert again.run_id != result.run_id


def log_served_rides(folder: Path, month_file: Path, model_name: str, rides: int) -> None:
    """Real rides of a month, answered by the champion, written as the service logs them."""
    trips = cleaning.read_trips(month_file).dropna().head(rides)
    model = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    minutes = np.asarray(model.predict(trips[list(RAW_COLUMNS)]), dtype=np.float64)
    record = predictionlog.Record(
        request_id=uuid.uuid4().hex,
        served_at_us=int(datetime.now(UTC).timestamp() * 1_000_000),
        pu_location_id=trips["PULocationID"].to_numpy(dtype=np.float64),
        do_location_id=trips["DOLocationID"].to_numpy(dtype=np.float64),
        trip_distance=trips["trip_distance"].to_numpy(dtype=np.float64),
        pickup=trips["lpep_pickup_datetime"].to_numpy(dtype="datetime64[us]"),
        prediction=minutes,
        model_name=model_name,
        model_version="1",
    )
    predictionlog.write_batch(folder, predictionlog.build_batch([record]), datetime.now(UTC))


def test_live_traffic_is_judged_on_drift_only_and_never_asks_for_retraining(
    monitored_env: dict[str, str],
    mlflow_url: str,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_name = monitored_env["MODEL_NAME"]
    folder = tmp_path / "prediction-log"
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(folder))
    monkeypatch.setenv("MONITOR_LIVE_MIN_RIDES", "500")
    until = datetime.now(UTC) + timedelta(minutes=5)  # one window for the three runs

    assert (
        monitor_live_flow(window_hours=1, until=until, model_name=model_name) is None
    )  # nothing logged

    log_served_rides(folder, data_dir / "green_tripdata_2023-03.parquet", model_name, 3000)
    like = monitor_live_flow(window_hours=1, until=until, model_name=model_name)
    assert like is not None and like.rows == 3000
    assert not like.degraded, like.reason

    log_served_rides(folder, data_dir / "green_tripdata_2021-02.parquet", model_name, 20_000)
    far = monitor_live_flow(window_hours=1, until=until, model_name=model_name)
    assert far is not None and far.rows == 23_000
    assert far.degraded and "drifted" in far.reason
    assert far.event is None  # no labels: reported, never retrained on
    assert "rmse" not in far.figures
    live_runs = [
        run
        for run in monitoring_runs(mlflow_url, model_name)
        if run.data.tags["monitored"].startswith("live:")
    ]
    assert {run.data.tags["verdict"] for run in live_runs} == {"degraded"}  # same window: replaced
    assert "Retraining needs labels" in read_markdown_artifact("monitoring-live")
