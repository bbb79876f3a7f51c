"""Watching the served model: the frames a drift report compares, the errors by borough and hour,
and the verdict that decides whether a month calls for retraining.

Pure pandas and numpy. The Evidently report is built in nyctaxi.drift, the MLflow run in
nyctaxi.monitortracking, the Prefect flow in flows/monitoring.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nyctaxi.config import Thresholds
from nyctaxi.features import FEATURE_NAMES, frame_feature_matrix
from nyctaxi.schedule import shift_month
from nyctaxi.zones import BOROUGHS

# What a ride brings (the request's fields) and what the model derives from them. The pickup
# time itself is left out: two different months always "drift" in it; its hour and weekday
# are what the model sees.
RAW_INPUTS: tuple[str, ...] = ("PULocationID", "DOLocationID", "trip_distance")
DERIVED_FEATURES: tuple[str, ...] = (
    "pickup_hour",
    "pickup_weekday",
    "pu_borough",
    "do_borough",
    "pu_service_zone",
    "do_service_zone",
    "same_zone",
)
PREDICTION = "prediction"
TARGET = "duration"
DRIFT_INPUTS: tuple[str, ...] = RAW_INPUTS + DERIVED_FEATURES
NUMERICAL_COLUMNS: tuple[str, ...] = ("trip_distance", "pickup_hour", PREDICTION)
CATEGORICAL_COLUMNS: tuple[str, ...] = tuple(
    column for column in DRIFT_INPUTS if column not in NUMERICAL_COLUMNS
)


@dataclass(frozen=True)
class Verdict:
    """The outcome of monitoring one month or window; `reasons` is empty when it is fine."""

    degraded: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "within the thresholds"


@dataclass(frozen=True)
class ChampionFacts:
    """What monitoring needs to know about the champion (from its registry tags)."""

    name: str
    version: str
    train_month: str
    val_month: str | None
    val_rmse: float | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class MonitoringRecord:
    """Everything one monitoring run logs."""

    subject: str  # SUBJECT_TAG's value
    run_name: str
    step: int  # months since year 0 for a month; charts order the runs by it
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    tables: dict[str, pd.DataFrame]


def monitoring_frame(
    trips: pd.DataFrame, predictions: np.ndarray, target: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per ride: the raw inputs, the derived features, the prediction and, when the
    rides are labelled, the actual duration in minutes. `trips` has the raw TLC columns."""
    if len(trips) != len(predictions):
        raise ValueError(f"{len(trips)} rides but {len(predictions)} predictions")
    features = pd.DataFrame(frame_feature_matrix(trips), columns=list(FEATURE_NAMES))
    frame = pd.DataFrame(
        {
            "PULocationID": features["pu_location_id"].astype("float64"),
            "DOLocationID": features["do_location_id"].astype("float64"),
            "trip_distance": features["trip_distance"].astype("float64"),
        }
    )
    for column in DERIVED_FEATURES:
        frame[column] = features[column].astype("float64")
    frame[PREDICTION] = np.asarray(predictions, dtype=np.float64)
    if target is not None:
        frame[TARGET] = np.asarray(target, dtype=np.float64)
    return frame


def _error_table(frame: pd.DataFrame, key: pd.Series, name: str) -> pd.DataFrame:
    error = frame[PREDICTION] - frame[TARGET]
    grouped = pd.DataFrame({name: key, "error": error, "abs": error.abs(), "sq": error**2})
    table = grouped.groupby(name, dropna=False, sort=True).agg(
        rides=("error", "size"), rmse=("sq", "mean"), mae=("abs", "mean"), bias=("error", "mean")
    )
    table["rmse"] = np.sqrt(table["rmse"])
    return table.reset_index()


def errors_by_borough(frame: pd.DataFrame) -> pd.DataFrame:
    """Rides, RMSE, MAE and mean error (bias: predicted minus actual) by pickup borough."""
    names = np.array([*BOROUGHS, "Unknown"], dtype=object)
    index = frame["pu_borough"].fillna(len(BOROUGHS)).astype(int)
    return _error_table(frame, pd.Series(names[index.to_numpy()], index=frame.index), "borough")


def errors_by_hour(frame: pd.DataFrame) -> pd.DataFrame:
    """Rides, RMSE, MAE and mean error by pickup hour (0-23)."""
    hour = np.floor(frame["pickup_hour"]).astype("Int64")
    return _error_table(frame, hour, "hour")


# Float noise must not turn "exactly at the threshold" into "beyond it" (4.4 / 4.0 - 1 > 0.1).
_TOLERANCE = 1e-9


def assess(
    *,
    val_rmse: float | None,
    rmse: float | None,
    drift_share: float,
    drifted: list[str],
    thresholds: Thresholds,
) -> Verdict:
    """Degraded when the RMSE exceeds the champion's own validation RMSE by more than the
    threshold, or when the share of drifted inputs exceeds its threshold (either suffices).
    Without labels (`rmse` None) only drift counts."""
    reasons = []
    if rmse is not None and val_rmse:
        increase = rmse / val_rmse - 1.0
        if increase > thresholds.rmse_increase + _TOLERANCE:
            reasons.append(
                f"RMSE {rmse:.4f} is {increase:.1%} above the champion's validation RMSE "
                f"{val_rmse:.4f} (threshold {thresholds.rmse_increase:.0%})"
            )
    if drift_share > thresholds.drift_share:
        reasons.append(
            f"{drift_share:.0%} of the inputs drifted ({', '.join(drifted)}; threshold "
            f"{thresholds.drift_share:.0%})"
        )
    return Verdict(bool(reasons), tuple(reasons))


def retraining_months(month: str) -> tuple[str, str]:
    """(train, validation) of the retraining a degraded month calls for: train on the month
    before, validate on the monitored month (the gate then compares on that month's rides)."""
    return shift_month(month, -1), month
