"""Training on thousands of real rides of one month beats the mean on the next (../shared/data/tlc).

The same on a few hundred real rows runs without the shared data: tests/unit/nyctaxi.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nyctaxi import cleaning, evaluation
from nyctaxi.features import FEATURE_NAMES
from nyctaxi.months import file_name
from nyctaxi.training import TrainingParams, train_on_trips

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# one thread: on a busy shared box OpenMP barriers make 2 threads slower for small data
FAST = TrainingParams(num_boost_round=30, nthread=1)


@pytest.fixture(scope="module")
def january(data_dir: Path) -> pd.DataFrame:
    trips, _ = cleaning.clean_trips(pd.read_parquet(data_dir / file_name("2023-01")), "2023-01")
    return trips.sample(8_000, random_state=3).reset_index(drop=True)


@pytest.fixture(scope="module")
def february_rows(data_dir: Path) -> pd.DataFrame:
    rows = cleaning.course_rows(pd.read_parquet(data_dir / file_name("2023-02")))
    return rows.sample(8_000, random_state=4).reset_index(drop=True)


def test_trained_model_beats_the_mean_on_the_next_month(
    january: pd.DataFrame, february_rows: pd.DataFrame
) -> None:
    booster = train_on_trips(january, FAST)
    assert booster.num_boosted_rounds() == 30
    assert booster.feature_names == list(FEATURE_NAMES)
    y = cleaning.target(february_rows)
    baseline = evaluation.rmse(y, np.full_like(y, cleaning.target(january).mean()))
    scores = evaluation.evaluate_on_trips(booster, february_rows)
    assert scores.rows == len(february_rows)
    assert scores.rmse < 0.6 * baseline
