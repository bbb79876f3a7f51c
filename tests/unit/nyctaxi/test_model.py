"""The logged model round-trips through a local MLflow store (no server) and predicts raw rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model

from nyctaxi import cleaning
from nyctaxi.features import RAW_COLUMNS, frame_feature_matrix
from nyctaxi.model import BOOSTER_FILE, TripDurationModel, log_model
from nyctaxi.training import TrainingParams, train_on_trips


@pytest.fixture(scope="module")
def raw_rows(tlc_month: Callable[[str], Path]) -> pd.DataFrame:
    """February 2023 rows in the TLC file's shape (synthetic): int32 zone IDs, 20 columns."""
    return pd.read_parquet(tlc_month("2023-02"))


@pytest.fixture(scope="module")
def booster(raw_rows: pd.DataFrame):
    trips, _ = cleaning.clean_trips(raw_rows, "2023-02", min_rows=0)
    return train_on_trips(trips, TrainingParams(num_boost_round=20, nthread=1))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, booster, raw_rows: pd.DataFrame):
    store = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
        patch.chdir(store)  # the default experiment keeps artifacts in ./mlruns: not the checkout
        with mlflow.start_run():  # the store's default experiment; no global experiment set
            info = log_model(booster, input_example=raw_rows, registered_model_name="unit-model")
        yield info, mlflow.pyfunc.load_model("models:/unit-model/1")


def test_loaded_model_predicts_raw_tlc_rows_with_extra_columns(
    logged, booster, raw_rows: pd.DataFrame
) -> None:
    _, loaded = logged
    rows = raw_rows.sample(300, random_state=7)  # every TLC column, in file order
    predicted = loaded.predict(rows)
    assert predicted.shape == (300,)
    np.testing.assert_allclose(predicted, booster.inplace_predict(frame_feature_matrix(rows)))
    assert 1 < np.median(predicted) < 60


def test_predict_rides_gives_the_same_numbers_as_predict(logged, raw_rows: pd.DataFrame) -> None:
    _, loaded = logged
    rows = raw_rows.head(200)
    model = loaded.unwrap_python_model()
    assert isinstance(model, TripDurationModel)
    model.set_nthread(1)
    fast = model.predict_rides(
        rows["PULocationID"].to_numpy(),
        rows["DOLocationID"].to_numpy(),
        rows["trip_distance"].to_numpy(),
        rows["lpep_pickup_datetime"].to_numpy(),
    )
    np.testing.assert_array_equal(fast, loaded.predict(rows))


def test_logged_model_is_self_contained(logged) -> None:
    info, _ = logged
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    pyfunc = Model.load(local / "MLmodel").flavors["python_function"]
    assert (local / pyfunc["code"] / "nyctaxi" / "features.py").is_file()
    assert (local / pyfunc["code"] / "nyctaxi" / "zones.py").is_file()
    assert not list((local / pyfunc["code"]).rglob("__pycache__"))
    assert list(local.rglob(BOOSTER_FILE))


def test_signature_and_example_are_the_four_raw_columns(logged) -> None:
    info, _ = logged
    inputs = info.signature.inputs.to_dict()
    assert [column["name"] for column in inputs] == list(RAW_COLUMNS)
    assert {c["name"]: c["type"] for c in inputs}["lpep_pickup_datetime"] == "datetime"
    assert info.saved_input_example_info is not None


def test_a_frame_missing_a_column_is_refused(logged, raw_rows: pd.DataFrame) -> None:
    _, loaded = logged
    with pytest.raises(mlflow.exceptions.MlflowException, match="trip_distance"):
        loaded.predict(raw_rows.head(3).drop(columns=["trip_distance"]))


def test_a_model_without_booster_says_so() -> None:
    with pytest.raises(RuntimeError, match="no booster"):
        TripDurationModel().set_nthread(1)
    with pytest.raises(ValueError):
        TripDurationModel.from_booster(object()).set_nthread(0)  # type: ignore[arg-type]
