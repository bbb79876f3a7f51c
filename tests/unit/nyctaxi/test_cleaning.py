from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nyctaxi import cleaning
from nyctaxi.months import parse_month

MONTH = "2023-02"


def trips_frame(rows: list[dict]) -> pd.DataFrame:
    """A small raw frame: each row overrides a good February 2023 trip."""
    good = {
        "lpep_pickup_datetime": pd.Timestamp("2023-02-10 08:00"),
        "lpep_dropoff_datetime": pd.Timestamp("2023-02-10 08:12"),
        "PULocationID": 74,
        "DOLocationID": 75,
        "trip_distance": 1.5,
        "fare_amount": 12.0,  # an extra column, ignored
    }
    return pd.DataFrame([{**good, **row} for row in rows])


def clean_small(rows: list[dict]) -> cleaning.CleanTrips:
    return cleaning.clean_trips(trips_frame(rows), MONTH, min_rows=0)


def ride(minutes: float, pickup: str = "2023-02-10 08:00") -> dict:
    start = pd.Timestamp(pickup)
    return {
        "lpep_pickup_datetime": start,
        "lpep_dropoff_datetime": start + pd.Timedelta(minutes=minutes),
    }


@pytest.fixture(scope="module")
def raw_february(tlc_month: Callable[[str], Path]) -> pd.DataFrame:
    """A TLC-shaped February 2023, its odd cases included (synthetic: tests/unit/tlc_shaped.py)."""
    return pd.read_parquet(tlc_month(MONTH))


def test_read_trips_gives_the_same_dtypes_across_months(tlc_month: Callable[[str], Path]) -> None:
    # zone IDs are int64 in the 2023-01 file and int32 from 2023-02 on
    older = cleaning.read_trips(tlc_month("2023-01"))
    newer = cleaning.read_trips(tlc_month("2023-02"))
    assert list(older.columns) == list(newer.columns)
    assert older.dtypes.to_dict() == newer.dtypes.to_dict()
    assert str(newer["PULocationID"].dtype) == "Int32"


def test_duration_rule_keeps_1_and_60_minutes_and_drops_outside() -> None:
    minutes = [0.99, 1.0, 30.0, 60.0, 60.01, -5.0, 0.0, 24 * 60.0]
    clean, dropped = clean_small([ride(m) for m in minutes])
    assert clean["duration"].tolist() == pytest.approx([1.0, 30.0, 60.0])
    assert dropped["duration_out_of_range"] == 5


def test_duration_rule_on_a_tlc_shaped_month(raw_february: pd.DataFrame) -> None:
    clean, _ = cleaning.clean_trips(raw_february, MONTH, min_rows=0)
    assert clean["duration"].between(1, 60).all()
    durations = cleaning.duration_minutes(raw_february)
    # the edge cases real months hold: zero-length trips, trips of almost a day, none negative
    assert (durations == 0).any()
    assert (durations >= 0).all()
    assert durations.max() > 23 * 60


def test_pickups_outside_the_month_are_dropped_at_the_edges() -> None:
    rows = [
        ride(10, "2023-01-31 23:59:59.999999"),
        ride(10, "2023-02-01 00:00"),
        ride(10, "2023-02-28 23:59:59"),
        ride(10, "2023-03-01 00:00"),
        ride(10, "2008-12-31 23:30"),
    ]
    clean, dropped = clean_small(rows)
    assert clean["lpep_pickup_datetime"].tolist() == [
        pd.Timestamp("2023-02-01 00:00"),
        pd.Timestamp("2023-02-28 23:59:59"),
    ]
    assert dropped["pickup_outside_month"] == 3


def test_2008_and_2009_pickups_are_dropped_and_counted(raw_february: pd.DataFrame) -> None:
    pickup = raw_february["lpep_pickup_datetime"]
    month = parse_month(MONTH)
    ancient = pickup.dt.year < 2010
    outside = (pickup < month.start) | (pickup >= month.end)
    assert ancient.sum() >= 1, "the shaped month holds pickups from 2008, like the real 2023-02"
    clean, dropped = cleaning.clean_trips(raw_february, MONTH, min_rows=0)
    # missing values come first but there are none, so this rule sees every outside pickup
    assert dropped["missing_values"] == 0
    assert dropped["pickup_outside_month"] == outside.sum()
    assert clean["lpep_pickup_datetime"].between(month.start, month.end, inclusive="left").all()


def test_zone_rule_keeps_1_and_265_only() -> None:
    zones = [(0, 10), (1, 10), (10, 265), (10, 266), (-3, 10), (264, 264)]
    clean, dropped = clean_small([{"PULocationID": p, "DOLocationID": d} for p, d in zones])
    assert list(zip(clean["PULocationID"], clean["DOLocationID"], strict=True)) == [
        (1, 10),
        (10, 265),
        (264, 264),
    ]
    assert dropped["zone_out_of_range"] == 3


def test_distance_rule_keeps_zero_and_drops_negative_absurd_and_infinite() -> None:
    distances = [-0.01, 0.0, 12.3, 60.0, 60.01, 244_152.01, np.inf]
    clean, dropped = clean_small([{"trip_distance": d} for d in distances])
    assert clean["trip_distance"].tolist() == [0.0, 12.3, 60.0]
    assert dropped["distance_out_of_range"] == 4


def test_absurd_distances_are_dropped(tlc_month: Callable[[str], Path]) -> None:
    raw = pd.read_parquet(tlc_month("2021-01"))  # holds the month's longest "trips"
    assert raw["trip_distance"].max() == pytest.approx(244_152.01)
    clean, dropped = cleaning.clean_trips(raw, "2021-01", min_rows=0)
    assert clean["trip_distance"].max() <= cleaning.MAX_TRIP_DISTANCE_MILES
    assert dropped["distance_out_of_range"] > 0


def test_missing_values_are_dropped_first() -> None:
    rows = [
        {"PULocationID": None},
        {"trip_distance": np.nan},
        {"lpep_dropoff_datetime": pd.NaT},
        {"lpep_pickup_datetime": pd.NaT},
        {},
    ]
    frame = trips_frame(rows).astype({"PULocationID": "Int64"})
    clean, dropped = cleaning.clean_trips(frame, MONTH, min_rows=0)
    assert len(clean) == 1
    assert dropped["missing_values"] == 4
    assert sum(dropped.values()) == 4  # each row counted once, by the first rule


def test_each_row_is_counted_once_by_the_first_rule_in_order() -> None:
    # outside the month AND too long AND zone 0 AND absurd distance: counted as outside the month
    bad_everywhere = {
        **ride(600, "2009-01-01 00:00"),
        "PULocationID": 0,
        "trip_distance": 1e5,
    }
    too_long_bad_zone = {**ride(600), "DOLocationID": 300}
    clean, dropped = clean_small([bad_everywhere, too_long_bad_zone, {}])
    assert list(dropped) == list(cleaning.RULES)
    assert dropped == {
        "missing_values": 0,
        "pickup_outside_month": 1,
        "duration_out_of_range": 1,
        "zone_out_of_range": 0,
        "distance_out_of_range": 0,
    }
    assert len(clean) == 1


def test_counts_add_up_on_a_tlc_shaped_month(raw_february: pd.DataFrame) -> None:
    # on the whole month: tests/integration/nyctaxi/test_cleaning.py
    clean, dropped = cleaning.clean_trips(raw_february, MONTH, min_rows=0)
    assert len(clean) + sum(dropped.values()) == len(raw_february)
    # the shaped month holds rows for the rules that real months trip
    rules = ("pickup_outside_month", "duration_out_of_range", "distance_out_of_range")
    assert all(dropped[rule] > 0 for rule in rules)
    assert clean["PULocationID"].dtype == np.int32
    assert clean["duration"].dtype == np.float64
    assert not clean.isna().any().any()


def test_too_few_rows_raise_naming_month_and_counts() -> None:
    rows = [ride(10)] * 3 + [ride(0.5)]
    with pytest.raises(cleaning.InsufficientDataError) as error:
        cleaning.clean_trips(trips_frame(rows), MONTH, min_rows=5)
    message = str(error.value)
    assert "2023-02" in message
    assert "only 3 of 4 rows" in message
    assert "5 needed" in message
    assert "duration_out_of_range" in message


def test_missing_columns_are_a_clear_error() -> None:
    frame = trips_frame([{}]).drop(columns=["trip_distance"])
    with pytest.raises(ValueError, match="trip_distance"):
        cleaning.clean_trips(frame, MONTH, min_rows=0)


def test_course_rows_drop_only_by_duration() -> None:
    rows = [
        ride(0.5),
        ride(61),
        {**ride(10, "2009-01-01 00:00"), "PULocationID": 0, "trip_distance": 1e5},
        ride(1),
    ]
    kept = cleaning.course_rows(trips_frame(rows))
    assert kept["duration"].tolist() == [10.0, 1.0]
    assert kept["PULocationID"].tolist() == [0, 74]
    assert "fare_amount" in kept.columns  # nothing else touched


def test_course_rows_match_the_course_filter(raw_february: pd.DataFrame) -> None:
    duration = (
        raw_february["lpep_dropoff_datetime"] - raw_february["lpep_pickup_datetime"]
    ).dt.total_seconds() / 60
    expected = ((duration >= 1) & (duration <= 60)).sum()
    assert len(cleaning.course_rows(raw_february)) == expected < len(raw_february)
