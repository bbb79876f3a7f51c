from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nyctaxi import zones
from nyctaxi.cleaning import course_rows
from nyctaxi.features import FEATURE_NAMES, frame_feature_matrix, ride_feature_matrix

COLUMN = {name: index for index, name in enumerate(FEATURE_NAMES)}


def one_ride(
    pu: float = 43, do: float = 151, distance: float = 1.2, pickup: str = "2023-03-01T08:15"
) -> np.ndarray:
    return ride_feature_matrix(
        np.array([pu]), np.array([do]), np.array([distance]), np.array([pickup], "datetime64[ns]")
    )[0]


def test_one_ride() -> None:
    row = one_ride()  # Wednesday 1 March 2023, 08:15; Central Park -> Manhattan Valley
    assert row.dtype == np.float32
    assert row.shape == (len(FEATURE_NAMES),)
    expected = {
        "pu_location_id": 43,
        "do_location_id": 151,
        "trip_distance": 1.2,
        "pickup_hour": 8.25,
        "pickup_weekday": 2,
        "pu_borough": zones.BOROUGHS.index("Manhattan"),
        "do_borough": zones.BOROUGHS.index("Manhattan"),
        "pu_service_zone": zones.SERVICE_ZONES.index("Yellow Zone"),
        "do_service_zone": zones.SERVICE_ZONES.index("Yellow Zone"),
        "same_zone": 0,
    }
    assert {name: row[COLUMN[name]] for name in FEATURE_NAMES} == pytest.approx(expected)


def test_airport_and_same_zone() -> None:
    row = one_ride(pu=132, do=132, pickup="2023-03-05T23:59")  # JFK, Sunday
    assert row[COLUMN["pu_service_zone"]] == zones.SERVICE_ZONES.index("Airports")
    assert row[COLUMN["pu_borough"]] == zones.BOROUGHS.index("Queens")
    assert row[COLUMN["same_zone"]] == 1
    assert row[COLUMN["pickup_weekday"]] == 6
    assert row[COLUMN["pickup_hour"]] == pytest.approx(23 + 59 / 60)


def test_missing_pickup_time_gives_missing_time_features_only() -> None:
    row = one_ride(pickup="NaT")
    assert np.isnan(row[COLUMN["pickup_hour"]])
    assert np.isnan(row[COLUMN["pickup_weekday"]])
    others = [i for name, i in COLUMN.items() if name not in ("pickup_hour", "pickup_weekday")]
    assert not np.isnan(row[others]).any()


@pytest.mark.parametrize("zone", [0, 266, -1, np.nan])
def test_unknown_zones_give_missing_zone_features(zone: float) -> None:
    row = one_ride(pu=zone)
    assert np.isnan(row[COLUMN["pu_borough"]])
    assert np.isnan(row[COLUMN["pu_service_zone"]])
    assert row[COLUMN["do_borough"]] == zones.BOROUGHS.index("Manhattan")


def test_pickup_precision_and_dates_before_1970_do_not_matter() -> None:
    micro = np.array(["1969-12-31T23:30"], dtype="datetime64[us]")
    nano = micro.astype("datetime64[ns]")
    one = np.array([1.0])
    assert np.array_equal(
        ride_feature_matrix(one, one, one, micro), ride_feature_matrix(one, one, one, nano)
    )
    row = ride_feature_matrix(one, one, one, micro)[0]
    assert row[COLUMN["pickup_weekday"]] == 2  # a Wednesday
    assert row[COLUMN["pickup_hour"]] == pytest.approx(23.5)


# The zone tables against the TLC's taxi_zone_lookup.csv: tests/integration/nyctaxi/test_features.py


@pytest.fixture(scope="module")
def shaped_rides(tlc_month: Callable[[str], Path]) -> pd.DataFrame:
    """TLC-shaped February 2023 rides (synthetic); the real month: tests/integration."""
    return course_rows(pd.read_parquet(tlc_month("2023-02")))


def test_time_features_agree_with_pandas_on_a_tlc_shaped_month(shaped_rides: pd.DataFrame) -> None:
    matrix = frame_feature_matrix(shaped_rides)
    pickup = shaped_rides["lpep_pickup_datetime"].dt
    np.testing.assert_array_equal(matrix[:, COLUMN["pickup_weekday"]], pickup.day_of_week)
    np.testing.assert_allclose(
        matrix[:, COLUMN["pickup_hour"]], pickup.hour + pickup.minute / 60, rtol=1e-6
    )


def test_frame_and_ride_paths_agree_and_ignore_extra_columns(shaped_rides: pd.DataFrame) -> None:
    sample = shaped_rides.sample(frac=1, random_state=1)
    from_frame = frame_feature_matrix(sample)  # all 20 TLC columns plus duration
    from_arrays = ride_feature_matrix(
        sample["PULocationID"].to_numpy(),  # int32 in this month
        sample["DOLocationID"].to_numpy(),
        sample["trip_distance"].to_numpy(),
        sample["lpep_pickup_datetime"].to_numpy(),
    )
    np.testing.assert_array_equal(from_frame, from_arrays)


def test_frame_path_accepts_strings_nullable_ints_and_bad_times() -> None:
    frame = pd.DataFrame(
        {
            "PULocationID": pd.array([43, None], dtype="Int64"),
            "DOLocationID": [151, 151],
            "trip_distance": [1.2, 3.0],
            "lpep_pickup_datetime": ["2023-03-01 08:15:00", "not a time"],
        }
    )
    matrix = frame_feature_matrix(frame)
    np.testing.assert_array_equal(matrix[0], one_ride())
    assert np.isnan(matrix[1, COLUMN["pu_location_id"]])
    assert np.isnan(matrix[1, COLUMN["pickup_hour"]])


def test_frame_path_converts_aware_times_to_new_york_wall_clock() -> None:
    frame = pd.DataFrame(
        {
            "PULocationID": [43],
            "DOLocationID": [151],
            "trip_distance": [1.2],
            "lpep_pickup_datetime": pd.to_datetime(["2023-03-01 13:15"]).tz_localize("UTC"),
        }
    )
    np.testing.assert_array_equal(frame_feature_matrix(frame)[0], one_ride())


def test_frame_path_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="trip_distance"):
        frame_feature_matrix(pd.DataFrame({"PULocationID": [1], "DOLocationID": [2]}))
