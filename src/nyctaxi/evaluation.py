"""Metrics and plots of a trip-duration model."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from nyctaxi.cleaning import target
from nyctaxi.features import frame_feature_matrix


@dataclass(frozen=True)
class Metrics:
    rmse: float
    mae: float
    rows: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{key}": float(value) for key, value in asdict(self).items()}


def _checked(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _checked(y_true, y_pred)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _checked(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> Metrics:
    return Metrics(rmse=rmse(y_true, y_pred), mae=mae(y_true, y_pred), rows=len(y_true))


def predict_trips(booster: xgb.Booster, trips: pd.DataFrame) -> np.ndarray:
    """Predicted minutes for a DataFrame with the raw TLC columns."""
    return booster.inplace_predict(frame_feature_matrix(trips))


def evaluate_on_trips(booster: xgb.Booster, trips: pd.DataFrame) -> Metrics:
    """Metrics on trips with a `duration` column (cleaning.course_rows or clean_trips output)."""
    return metrics(target(trips), predict_trips(booster, trips))


def plot_residuals(
    y_true: np.ndarray, y_pred: np.ndarray, path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Residuals against predictions plus their histogram, written as an image to path."""
    from matplotlib.figure import Figure  # a bare Figure uses the Agg canvas; no pyplot state

    y_true, y_pred = _checked(y_true, y_pred)
    residuals = y_true - y_pred
    figure = Figure(figsize=(10, 4), layout="constrained")
    scatter, histogram = figure.subplots(1, 2)
    scatter.scatter(y_pred, residuals, s=2, alpha=0.2, linewidths=0)
    scatter.axhline(0.0, color="black", linewidth=0.8)
    scatter.set(xlabel="predicted minutes", ylabel="actual - predicted (minutes)")
    histogram.hist(residuals, bins=120, range=(-30, 30))
    histogram.set(xlabel="actual - predicted (minutes)", ylabel="rides")
    figure.suptitle(title or f"Residuals (RMSE {rmse(y_true, y_pred):.2f} min, n={len(y_true)})")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def plot_feature_importance(
    booster: xgb.Booster, path: str | os.PathLike[str], *, importance_type: str = "gain"
) -> Path:
    """Horizontal bar chart of the booster's feature importance, written to path."""
    from matplotlib.figure import Figure

    scores = booster.get_score(importance_type=importance_type)
    names = sorted(scores, key=scores.get)
    figure = Figure(figsize=(7, 0.35 * len(names) + 1.2), layout="constrained")
    axes = figure.subplots()
    axes.barh(names, [scores[name] for name in names])
    axes.set(xlabel=f"importance ({importance_type})", title="Feature importance")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
