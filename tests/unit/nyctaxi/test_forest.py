"""The numpy forest gives XGBoost's predictions, and the model uses it only for small batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from nyctaxi import cleaning
from nyctaxi.features import frame_feature_matrix
from nyctaxi.forest import compile_forest
from nyctaxi.model import SMALL_BATCH_ROWS, TripDurationModel
from nyctaxi.training import TrainingParams, train_on_trips


@pytest.fixture(scope="module")
def february(tlc_month: Callable[[str], Path]) -> pd.DataFrame:
    """TLC-shaped February 2023 trips (synthetic); the real month: tests/integration."""
    raw = pd.read_parquet(tlc_month("2023-02"))
    return cleaning.clean_trips(raw, "2023-02", min_rows=0).trips


@pytest.fixture(scope="module")
def booster(february: pd.DataFrame) -> xgb.Booster:
    # The shipped depth and enough rounds for leaves at every depth.
    return train_on_trips(february, TrainingParams(num_boost_round=40, nthread=1))


def test_forest_reproduces_xgboost_on_a_tlc_shaped_month(
    booster: xgb.Booster, february: pd.DataFrame
) -> None:
    features = frame_feature_matrix(february)
    forest = compile_forest(booster)
    assert forest is not None
    assert forest.depth == TrainingParams().max_depth
    np.testing.assert_allclose(
        forest.predict(features), booster.inplace_predict(features), atol=1e-3
    )


def test_missing_values_follow_the_trees_default_direction(
    booster: xgb.Booster, february: pd.DataFrame
) -> None:
    features = frame_feature_matrix(february.head(500)).copy()
    features[::3, 2] = np.nan  # trip_distance
    features[1::3, 3] = np.nan  # pickup_hour
    forest = compile_forest(booster)
    assert forest is not None
    np.testing.assert_allclose(
        forest.predict(features), booster.inplace_predict(features), atol=1e-3
    )


def test_a_booster_it_cannot_reproduce_gets_no_forest() -> None:
    rng = np.random.default_rng(1)
    features = rng.uniform(0, 10, (200, 3)).astype(np.float32)
    data = xgb.DMatrix(features, label=features.sum(axis=1))
    linear = xgb.train({"booster": "gblinear", "nthread": 1}, data, num_boost_round=5)
    assert compile_forest(linear) is None


def test_model_predicts_small_and_large_batches_alike(
    booster: xgb.Booster, february: pd.DataFrame
) -> None:
    model = TripDurationModel.from_booster(booster)
    rides = february.head(SMALL_BATCH_ROWS * 4)
    arrays = (
        rides["PULocationID"].to_numpy(),
        rides["DOLocationID"].to_numpy(),
        rides["trip_distance"].to_numpy(),
        rides["lpep_pickup_datetime"].to_numpy(dtype="datetime64[us]"),
    )
    large = model.predict_rides(*arrays)  # XGBoost
    small = np.concatenate(  # the forest, a few rides at a time
        [
            model.predict_rides(*(array[start : start + 4] for array in arrays))
            for start in range(0, len(rides), 4)
        ]
    )
    np.testing.assert_allclose(small, large, atol=1e-3)
    np.testing.assert_allclose(large, model.predict(None, rides), atol=1e-3)
