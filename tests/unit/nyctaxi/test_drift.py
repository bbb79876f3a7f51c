"""The Evidently report on small frames built in the test: distances, drifted share, quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nyctaxi.drift import DISTANCE_THRESHOLD, build_report
from nyctaxi.monitoring import DRIFT_INPUTS, monitoring_frame


def frame(n: int, *, seed: int, far: bool = False, labelled: bool = True) -> pd.DataFrame:
    """n rides around Manhattan at daytime; `far`: long night rides from Queens instead."""
    rng = np.random.default_rng(seed)
    zones = [7, 82, 129] if far else [41, 42, 43, 74, 75]
    hours = rng.integers(0, 5, n) if far else rng.integers(8, 20, n)
    rides = pd.DataFrame(
        {
            "PULocationID": rng.choice(zones, n),
            "DOLocationID": rng.choice(zones, n),
            "trip_distance": rng.gamma(2.0, 4.0 if far else 1.0, n),
            "lpep_pickup_datetime": pd.Timestamp("2023-03-01")
            + pd.to_timedelta(rng.integers(0, 28, n), unit="D")
            + pd.to_timedelta(hours, unit="h"),
        }
    )
    predicted = 4.0 * rides["trip_distance"].to_numpy() + 3.0
    actual = predicted + rng.normal(0, 2.0, n) if labelled else None
    return monitoring_frame(rides, predicted, actual)


def test_same_distribution_no_drift_and_quality_figures(tmp_path: Path) -> None:
    result = build_report(frame(3000, seed=1), frame(3000, seed=2))
    assert result.drifted_inputs == []
    assert result.drift_share == 0.0
    assert set(result.distances) == {*DRIFT_INPUTS, "prediction"}
    assert result.prediction_drift < DISTANCE_THRESHOLD
    assert result.regression["rmse"] == pytest.approx(2.0, rel=0.1)
    html = result.save_html(tmp_path / "report.html")
    assert html.stat().st_size > 10_000


def test_a_far_distribution_drifts_most_inputs() -> None:
    result = build_report(frame(3000, seed=1, far=True), frame(3000, seed=2))
    assert {"PULocationID", "DOLocationID", "trip_distance", "pickup_hour"} <= set(
        result.drifted_inputs
    )
    assert result.drift_share > 0.5
    assert result.prediction_drift >= DISTANCE_THRESHOLD


def test_unlabelled_rides_give_drift_only() -> None:
    result = build_report(frame(500, seed=1, labelled=False), frame(3000, seed=2))
    assert result.regression == {}
    assert result.drift_share < 0.5
