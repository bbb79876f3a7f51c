"""Pure parts of monitoring: the frame compared, errors by group, the verdict, the months."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nyctaxi.monitoring import (
    DRIFT_INPUTS,
    Thresholds,
    assess,
    errors_by_borough,
    errors_by_hour,
    monitoring_frame,
    retraining_months,
)


def rides(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            # 43: Central Park (Manhattan), 7: Astoria (Queens), 999: no such zone
            "PULocationID": [43, 43, 7, 7, 999, 43][:n],
            "DOLocationID": [43, 7, 7, 43, 43, 43][:n],
            "trip_distance": [1.0, 3.0, 0.5, 4.0, 2.0, 1.5][:n],
            "lpep_pickup_datetime": pd.to_datetime(
                [
                    "2023-03-01 08:10",
                    "2023-03-01 08:50",
                    "2023-03-01 17:05",
                    "2023-03-02 17:30",
                    "2023-03-02 23:59",
                    "2023-03-03 08:00",
                ][:n]
            ),
        }
    )


def test_monitoring_frame_has_inputs_features_prediction_and_target() -> None:
    frame = monitoring_frame(rides(), np.arange(6.0), np.arange(6.0) + 1)
    assert list(frame.columns) == [*DRIFT_INPUTS, "prediction", "duration"]
    assert frame["pickup_hour"].iloc[0] == pytest.approx(8 + 10 / 60)
    assert frame["same_zone"].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert np.isnan(frame["pu_borough"].iloc[4])  # unknown zone: missing, as the model sees it


def test_monitoring_frame_without_labels_and_with_a_length_mismatch() -> None:
    assert "duration" not in monitoring_frame(rides(), np.zeros(6)).columns
    with pytest.raises(ValueError, match="6 rides but 5 predictions"):
        monitoring_frame(rides(), np.zeros(5))


def test_errors_by_borough_and_hour() -> None:
    predicted = np.array([10.0, 20.0, 5.0, 30.0, 8.0, 12.0])
    actual = np.array([12.0, 20.0, 5.0, 20.0, 8.0, 12.0])
    frame = monitoring_frame(rides(), predicted, actual)
    boroughs = errors_by_borough(frame).set_index("borough")
    assert boroughs.loc["Manhattan", "rides"] == 3
    assert boroughs.loc["Manhattan", "rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert boroughs.loc["Queens", "bias"] == pytest.approx(5.0)
    assert boroughs.loc["Unknown", "rides"] == 1
    hours = errors_by_hour(frame).set_index("hour")
    assert hours.loc[8, "rides"] == 3 and hours.loc[17, "mae"] == pytest.approx(5.0)
    assert hours.loc[23, "rides"] == 1


@pytest.mark.parametrize(
    ("rmse", "share", "degraded", "words"),
    [
        (4.3, 0.1, False, []),
        (4.0 * 1.1, 0.5, False, []),  # at the thresholds: not beyond them
        (4.5, 0.1, True, ["12.5% above", "4.0000"]),
        (4.0, 0.6, True, ["60% of the inputs drifted", "trip_distance"]),
        (5.0, 0.7, True, ["RMSE 5.0000", "70% of the inputs"]),
    ],
)
def test_verdict(rmse: float, share: float, degraded: bool, words: list[str]) -> None:
    verdict = assess(
        val_rmse=4.0,
        rmse=rmse,
        drift_share=share,
        drifted=["trip_distance"],
        thresholds=Thresholds(rmse_increase=0.10, drift_share=0.5),
    )
    assert verdict.degraded is degraded
    for word in words:
        assert word in verdict.summary
    if not degraded:
        assert verdict.summary == "within the thresholds"


def test_without_labels_only_drift_counts() -> None:
    fine = assess(val_rmse=4.0, rmse=None, drift_share=0.2, drifted=[], thresholds=Thresholds())
    drifted = assess(
        val_rmse=None, rmse=None, drift_share=0.9, drifted=["x"], thresholds=Thresholds()
    )
    assert not fine.degraded and drifted.degraded


def test_retraining_months_cross_the_year() -> None:
    assert retraining_months("2021-02") == ("2021-01", "2021-02")
    assert retraining_months("2023-01") == ("2022-12", "2023-01")
