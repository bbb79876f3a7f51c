"""A registered model runs the code it was logged with, wherever it is loaded.

The model here ships a nyctaxi package whose feature code differs from the installed one (every
feature doubled). Loaded by the prediction service (gunicorn, real MLflow server), by the
training flow's champion scoring, by `nyctaxi.modelcode.load_model` in this process (which has
imported the installed nyctaxi) and by `mlflow models serve`, it must predict what *its* feature
code implies, never what the installed code implies.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import xgboost as xgb
from mlflow.tracking import MlflowClient

import nyctaxi.features
from bench.serving_model import clean_month, register_version, train_booster
from nyctaxi import evaluation, modelcode, tracking
from nyctaxi.cleaning import target
from nyctaxi.features import frame_feature_matrix
from tests.integration.test_predict_service import RIDE, predict_service
from tests.servers import VENV_BIN, free_port, http_ok, running_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FACTOR = 2.0
ALTERATION = f"""

# Altered by tests/integration/test_model_code.py: every feature times {FACTOR}
# (frame_feature_matrix calls this one too).
_installed_ride_feature_matrix = ride_feature_matrix


def ride_feature_matrix(*args, **kwargs):
    return _installed_ride_feature_matrix(*args, **kwargs) * np.float32({FACTOR})
"""


@pytest.fixture(scope="module")
def trips(data_dir: Path) -> pd.DataFrame:
    return clean_month(data_dir, "2023-01")


@pytest.fixture(scope="module")
def booster(trips: pd.DataFrame) -> xgb.Booster:
    return train_booster(trips)


@pytest.fixture(scope="module")
def altered_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    package = tmp_path_factory.mktemp("altered") / "nyctaxi"
    shutil.copytree(
        modelcode.installed_package_dir(), package, ignore=shutil.ignore_patterns("__pycache__")
    )
    features = package / "features.py"
    features.write_text(features.read_text() + ALTERATION)
    return package


@pytest.fixture(scope="module")
def registered(
    mlflow_url: str, booster: xgb.Booster, trips: pd.DataFrame, altered_package: Path
) -> tuple[str, str]:
    name = f"code-it-{uuid.uuid4().hex[:8]}"
    version = register_version(
        mlflow_url, name, booster, trips, alias="champion", package_dir=altered_package
    )
    return name, version


@pytest.fixture
def tracking_at(mlflow_url: str) -> Iterator[None]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_url)
    yield
    mlflow.set_tracking_uri(previous)


RIDE_LIST = [RIDE, {**RIDE, "PULocationID": 74, "DOLocationID": 236, "trip_distance": 6.3}]


def ride_frame(rides: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rides)
    frame["lpep_pickup_datetime"] = pd.to_datetime(frame["lpep_pickup_datetime"])
    return frame


RIDES = ride_frame(RIDE_LIST)


def shipped_code_predictions(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """What the altered feature code implies: the installed features, doubled."""
    return booster.inplace_predict(frame_feature_matrix(frame) * np.float32(FACTOR))


def installed_code_predictions(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    return booster.inplace_predict(frame_feature_matrix(frame))


def test_the_two_codes_predict_differently(booster: xgb.Booster) -> None:
    # Otherwise every test below would pass whichever code ran.
    shipped = shipped_code_predictions(booster, RIDES)
    installed = installed_code_predictions(booster, RIDES)
    assert np.min(np.abs(shipped - installed)) > 0.5, (shipped, installed)


def test_the_version_is_tagged_with_the_code_it_ships(
    mlflow_url: str, registered: tuple[str, str], altered_package: Path
) -> None:
    name, version = registered
    tag = MlflowClient(mlflow_url).get_model_version(name, version).tags["code_version"]
    assert tag == modelcode.package_digest(altered_package)
    assert tag != modelcode.installed_code_version()


def test_loading_here_runs_the_shipped_code_and_leaves_ours_alone(
    tracking_at: None, registered: tuple[str, str], booster: xgb.Booster
) -> None:
    installed_features = sys.modules["nyctaxi.features"]
    path_before = list(sys.path)
    name, version = registered

    loaded = modelcode.load_model(f"models:/{name}/{version}")

    assert loaded.own_code
    predictions = loaded.pyfunc.predict(RIDES)
    np.testing.assert_allclose(predictions, shipped_code_predictions(booster, RIDES), atol=1e-3)
    # This process still runs the installed code, and MLflow's sys.path entry is gone.
    assert sys.modules["nyctaxi.features"] is installed_features is nyctaxi.features
    assert sys.path == path_before
    # ...while the model's class runs its own feature module.
    shipped_globals = inspect.unwrap(type(loaded.python_model()).predict).__globals__
    assert shipped_globals["frame_feature_matrix"] is not frame_feature_matrix
    np.testing.assert_allclose(
        shipped_globals["frame_feature_matrix"](RIDES), frame_feature_matrix(RIDES) * FACTOR
    )


def test_champion_scoring_uses_the_champions_own_code(
    tracking_at: None, registered: tuple[str, str], booster: xgb.Booster, trips: pd.DataFrame
) -> None:
    name, version = registered
    val = trips.head(500)

    scored = tracking.score_champion(name, val)

    expected = evaluation.rmse(target(val), shipped_code_predictions(booster, val))
    assert scored is not None and scored[0] == version
    assert scored[1] == pytest.approx(expected, rel=1e-4)


def test_the_prediction_service_serves_the_shipped_code(
    tmp_path: Path, mlflow_url: str, registered: tuple[str, str], booster: xgb.Booster
) -> None:
    name, version = registered
    answers: dict[str, dict] = {}

    def answered(key: str, call: Callable[[], requests.Response]) -> bool:
        # Each gunicorn worker loads the model by itself: until both have, one may answer 503.
        response = call()
        if response.status_code == 200:
            answers[key] = response.json()
        return response.status_code == 200

    with predict_service(tmp_path, mlflow_url, name) as service:
        for key, call in (
            ("predict", lambda: service.predict(RIDE)),
            ("model", lambda: service.get("/model")),
        ):
            wait_until(
                lambda key=key, call=call: answered(key, call),
                timeout=240,
                what=f"a loaded worker to answer {key}",
                log_file=service.log_file,
            )
    answer, described = answers["predict"], answers["model"]
    assert answer["model"]["version"] == described["version"] == version
    expected = shipped_code_predictions(booster, RIDES.head(1))[0]
    assert answer["duration"] == pytest.approx(float(expected), abs=2e-3), answer
    assert (
        described["code_version"]
        == MlflowClient(mlflow_url).get_model_version(name, version).tags["code_version"]
    )


def test_mlflow_models_serve_runs_the_shipped_code(
    tmp_path: Path, mlflow_url: str, registered: tuple[str, str], booster: xgb.Booster
) -> None:
    name, version = registered
    port = free_port()
    args = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "--model-uri",
        f"models:/{name}/{version}",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {
        "MLFLOW_TRACKING_URI": mlflow_url,
        "NO_PROXY": "127.0.0.1,localhost",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",  # it execs uvicorn by name
    }
    log_file = tmp_path / "serve.log"
    with running_process(args, log_file=log_file, env=env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: process.poll() is not None or http_ok(f"{url}/ping"),
            timeout=180,
            what="mlflow models serve",
            log_file=log_file,
        )
        assert process.poll() is None, log_file.read_text()[-3000:]
        payload = {"dataframe_split": json.loads(RIDES.to_json(orient="split", date_format="iso"))}
        response = requests.post(f"{url}/invocations", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    predictions = np.asarray(response.json()["predictions"], dtype=np.float64)
    np.testing.assert_allclose(predictions, shipped_code_predictions(booster, RIDES), atol=1e-3)


def test_shipped_code_changed_after_logging_is_refused(
    tracking_at: None, registered: tuple[str, str], tmp_path: Path
) -> None:
    name, version = registered
    model_dir = Path(
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(tmp_path))
    )
    shipped_features = model_dir / "code" / "nyctaxi" / "features.py"
    shipped_features.write_text(shipped_features.read_text() + "\n# edited after logging\n")

    with pytest.raises(modelcode.ModelCodeError) as refused:
        modelcode.load_model(str(model_dir))

    message = str(refused.value)
    recorded = MlflowClient().get_model_version(name, version).tags["code_version"]
    assert recorded in message
    assert modelcode.package_digest(shipped_features.parent) in message
    assert modelcode.installed_code_version() in message


def test_plain_mlflow_loading_in_a_fresh_interpreter_runs_the_shipped_code(
    tracking_at: None, registered: tuple[str, str], booster: xgb.Booster
) -> None:
    """Nothing imported yet: MLflow puts the model's code folder first on sys.path."""
    name, version = registered
    script = (
        "import json, mlflow, pandas as pd\n"
        f"frame = pd.DataFrame(json.loads({json.dumps(json.dumps(RIDE_LIST))}))\n"
        "frame['lpep_pickup_datetime'] = pd.to_datetime(frame['lpep_pickup_datetime'])\n"
        f"model = mlflow.pyfunc.load_model('models:/{name}/{version}')\n"
        "print(json.dumps([float(x) for x in model.predict(frame)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        env={"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = np.asarray(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(predictions, shipped_code_predictions(booster, RIDES), atol=1e-3)
