"""The numpy forest gives XGBoost's predictions on a whole real month (../shared/data/tlc).

The same check on a few hundred real rows runs without the shared data: tests/unit/nyctaxi.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from nyctaxi import cleaning
from nyctaxi.features import frame_feature_matrix
from nyctaxi.forest import compile_forest
from nyctaxi.months import file_name
from nyctaxi.training import TrainingParams, train_on_trips

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def february(data_dir: Path) -> pd.DataFrame:
    raw = pd.read_parquet(data_dir / file_name("2023-02"))
    return cleaning.clean_trips(raw, "2023-02").trips


@pytest.fixture(scope="module")
def booster(february: pd.DataFrame) -> xgb.Booster:
    # The shipped depth and enough rounds for leaves at every depth.
    return train_on_trips(february.head(20_000), TrainingParams(num_boost_round=40, nthread=1))


def test_forest_reproduces_xgboost_on_a_real_month(
    booster: xgb.Booster, february: pd.DataFrame
) -> None:
    features = frame_feature_matrix(february)
    forest = compile_forest(booster)
    assert forest is not None
    assert forest.depth == TrainingParams().max_depth
    np.testing.assert_allclose(
        forest.predict(features), booster.inplace_predict(features), atol=1e-3
    )
