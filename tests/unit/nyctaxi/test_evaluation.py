from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from nyctaxi import evaluation
from nyctaxi.features import FEATURE_NAMES


def test_rmse_and_mae() -> None:
    y_true = np.array([10.0, 20.0, 30.0, 40.0])
    y_pred = np.array([12.0, 18.0, 30.0, 44.0])
    assert evaluation.rmse(y_true, y_pred) == pytest.approx(np.sqrt((4 + 4 + 0 + 16) / 4))
    assert evaluation.mae(y_true, y_pred) == pytest.approx(2.0)
    scores = evaluation.metrics(y_true, y_pred)
    assert scores.as_dict("val_") == {
        "val_rmse": pytest.approx(scores.rmse),
        "val_mae": 2.0,
        "val_rows": 4.0,
    }


def test_metrics_refuse_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError):
        evaluation.rmse(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(ValueError):
        evaluation.mae(np.array([]), np.array([]))


def test_plots_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.random((300, len(FEATURE_NAMES)), dtype=np.float32)
    y = 10 * X[:, 2] + rng.random(300)
    booster = xgb.train(
        {"max_depth": 3, "nthread": 1}, xgb.DMatrix(X, y, feature_names=list(FEATURE_NAMES)), 5
    )
    residuals = evaluation.plot_residuals(y, booster.inplace_predict(X), tmp_path / "r.png")
    importance = evaluation.plot_feature_importance(booster, tmp_path / "imp.png")
    for path in (residuals, importance):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
