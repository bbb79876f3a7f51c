"""Features against the real TLC files (../shared/data/tlc): the zone lookup, a whole month.

The same checks on a few hundred real rows run without the shared data: tests/unit/nyctaxi.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nyctaxi import zones
from nyctaxi.cleaning import course_rows
from nyctaxi.features import FEATURE_NAMES, frame_feature_matrix, ride_feature_matrix
from nyctaxi.months import file_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

COLUMN = {name: index for index, name in enumerate(FEATURE_NAMES)}


def test_zone_tables_match_the_tlc_lookup(data_dir: Path) -> None:
    with open(data_dir / "taxi_zone_lookup.csv", newline="") as handle:
        lookup = list(csv.DictReader(handle))
    assert len(lookup) == zones.N_ZONES
    for row in lookup:
        zone = int(row["LocationID"])
        assert zones.BOROUGHS[int(zones.BOROUGH_BY_ZONE[zone])] == row["Borough"]
        assert zones.SERVICE_ZONES[int(zones.SERVICE_ZONE_BY_ZONE[zone])] == row["service_zone"]
    assert np.isnan(zones.BOROUGH_BY_ZONE[0])


@pytest.fixture(scope="module")
def real_rides(data_dir: Path) -> pd.DataFrame:
    return course_rows(pd.read_parquet(data_dir / file_name("2023-02")))


def test_time_features_agree_with_pandas_on_a_real_month(real_rides: pd.DataFrame) -> None:
    matrix = frame_feature_matrix(real_rides)
    pickup = real_rides["lpep_pickup_datetime"].dt
    np.testing.assert_array_equal(matrix[:, COLUMN["pickup_weekday"]], pickup.day_of_week)
    np.testing.assert_allclose(
        matrix[:, COLUMN["pickup_hour"]], pickup.hour + pickup.minute / 60, rtol=1e-6
    )


def test_frame_and_ride_paths_agree_on_a_real_month(real_rides: pd.DataFrame) -> None:
    from_frame = frame_feature_matrix(real_rides)  # all 20 TLC columns plus duration
    from_arrays = ride_feature_matrix(
        real_rides["PULocationID"].to_numpy(),  # int32 in this month
        real_rides["DOLocationID"].to_numpy(),
        real_rides["trip_distance"].to_numpy(),
        real_rides["lpep_pickup_datetime"].to_numpy(),
    )
    np.testing.assert_array_equal(from_frame, from_arrays)
