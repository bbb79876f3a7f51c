from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from nyctaxi import cleaning, evaluation
from nyctaxi.features import FEATURE_NAMES, frame_feature_matrix
from nyctaxi.training import TrainingParams, holdout_mask, train_booster, train_on_trips

# one thread: on a busy shared box OpenMP barriers make 2 threads slower for small data
FAST = TrainingParams(num_boost_round=30, nthread=1)


# Two TLC-shaped months (synthetic); 8,000 real rides of each: tests/integration/nyctaxi.
@pytest.fixture(scope="module")
def january(tlc_month: Callable[[str], Path]) -> pd.DataFrame:
    raw = pd.read_parquet(tlc_month("2023-01"))
    trips, _ = cleaning.clean_trips(raw, "2023-01", min_rows=0)
    return trips.reset_index(drop=True)


@pytest.fixture(scope="module")
def february_rows(tlc_month: Callable[[str], Path]) -> pd.DataFrame:
    rows = cleaning.course_rows(pd.read_parquet(tlc_month("2023-02")))
    return rows.reset_index(drop=True)


def test_defaults_use_every_core() -> None:
    params = TrainingParams()
    assert params.nthread is None
    assert params.booster_params()["nthread"] == os.cpu_count()
    assert params.booster_params()["tree_method"] == "hist"
    assert TrainingParams(nthread=1).booster_params()["nthread"] == 1


@pytest.mark.parametrize(
    "bad", [{"max_depth": 0}, {"learning_rate": 0}, {"num_boost_round": 0}, {"depth": 3}]
)
def test_bad_params_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        TrainingParams(**bad)


def test_params_round_trip_through_a_dict() -> None:
    params = TrainingParams(max_depth=4, early_stopping_rounds=5)
    assert TrainingParams(**params.model_dump()) == params


def test_trained_model_beats_the_mean_on_the_next_month(
    january: pd.DataFrame, february_rows: pd.DataFrame
) -> None:
    # a few hundred rides; the 0.6 bar on 8,000: tests/integration/nyctaxi/test_training.py
    booster = train_on_trips(january, FAST)
    assert booster.num_boosted_rounds() == 30
    assert booster.feature_names == list(FEATURE_NAMES)
    y = cleaning.target(february_rows)
    baseline = evaluation.rmse(y, np.full_like(y, cleaning.target(january).mean()))
    scores = evaluation.evaluate_on_trips(booster, february_rows)
    assert scores.rows == len(february_rows)
    assert scores.rmse < baseline


def test_training_is_deterministic(january: pd.DataFrame) -> None:
    sample = january.head(200)
    first = evaluation.predict_trips(train_on_trips(january, FAST), sample)
    second = evaluation.predict_trips(train_on_trips(january, FAST), sample)
    np.testing.assert_array_equal(first, second)


def test_early_stopping_on_a_held_out_slice_keeps_the_best_rounds(january: pd.DataFrame) -> None:
    # a learning rate this high overfits fast, so the held-out RMSE stops improving early
    params = FAST.model_copy(
        update={"learning_rate": 0.9, "num_boost_round": 300, "early_stopping_rounds": 5}
    )
    booster = train_on_trips(january, params, holdout_fraction=0.2)
    assert booster.num_boosted_rounds() < 300


def test_train_booster_checks_the_held_out_pair(january: pd.DataFrame) -> None:
    X = frame_feature_matrix(january)
    with pytest.raises(ValueError, match="both"):
        train_booster(X, cleaning.target(january), FAST, X_val=X)


def test_holdout_mask() -> None:
    mask = holdout_mask(10_000, 0.1, seed=1)
    assert mask.dtype == bool
    assert 800 < mask.sum() < 1200
    np.testing.assert_array_equal(mask, holdout_mask(10_000, 0.1, seed=1))
    with pytest.raises(ValueError):
        holdout_mask(10, 1.5)
