"""Cleaning on whole real months (../shared/data/tlc): counts that only a whole month has.

The same rules on a few hundred real rows run without the shared data: tests/unit/nyctaxi.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nyctaxi import cleaning
from nyctaxi.months import file_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MONTH = "2023-02"


@pytest.fixture(scope="module")
def raw_february(data_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(data_dir / file_name(MONTH))


def test_duration_rule_on_a_real_month(raw_february: pd.DataFrame) -> None:
    clean, _ = cleaning.clean_trips(raw_february, MONTH)
    assert clean["duration"].between(1, 60).all()
    real_durations = cleaning.duration_minutes(raw_february)
    # the real edge cases: zero-length trips and trips of almost a day (none is negative)
    assert (real_durations == 0).sum() == 81
    assert real_durations.max() > 23 * 60


def test_counts_add_up_on_a_real_month(raw_february: pd.DataFrame) -> None:
    clean, dropped = cleaning.clean_trips(raw_february, MONTH)
    assert len(clean) + sum(dropped.values()) == len(raw_february)
    assert clean["PULocationID"].dtype == np.int32
    assert clean["duration"].dtype == np.float64
    assert not clean.isna().any().any()


def test_course_rows_on_real_data_match_the_course_filter(raw_february: pd.DataFrame) -> None:
    duration = (
        raw_february["lpep_dropoff_datetime"] - raw_february["lpep_pickup_datetime"]
    ).dt.total_seconds() / 60
    expected = ((duration >= 1) & (duration <= 60)).sum()
    assert len(cleaning.course_rows(raw_february)) == expected == 62_574


def test_real_absurd_distances_are_dropped_from_a_whole_month(data_dir: Path) -> None:
    raw = pd.read_parquet(data_dir / file_name("2021-01"))
    assert raw["trip_distance"].max() == pytest.approx(244_152.01)
    clean, dropped = cleaning.clean_trips(raw, "2021-01")
    assert clean["trip_distance"].max() <= cleaning.MAX_TRIP_DISTANCE_MILES
    assert dropped["distance_out_of_range"] > 0
