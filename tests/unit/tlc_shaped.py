"""Synthetic TLC-shaped months for unit tests: built in code, never read from ../shared.

A month here has the columns and Arrow types of the real green-taxi file of that month (2021-01
and 2023-01: int64 zone IDs, double counts, an all-null `ehail_fee`; 2023-02 on: int32 zone IDs,
int64 counts), the kinds of odd rows the real months hold (zero-length trips, trips of almost a
day, pickups before 2010 or in a neighbouring month, absurd distances up to 2021-01's 244,152.01
miles), and durations that follow distance, so a model has something to learn. The values are
synthetic: tests that need the real months live in tests/integration and read TAXI_DATA_DIR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 400
LONGEST_DISTANCE = 244_152.01  # miles: 2021-01's longest "trip"
_OLD_SCHEMA = {"zone": pa.int64(), "count": pa.float64(), "code": pa.float64(), "ehail": pa.null()}
_NEW_SCHEMA = {"zone": pa.int32(), "count": pa.int64(), "code": pa.int64(), "ehail": pa.float64()}


def _types(month: str) -> dict[str, pa.DataType]:
    return _NEW_SCHEMA if month >= "2023-02" else _OLD_SCHEMA


def _pickups(month: str, rng: np.random.Generator) -> np.ndarray:
    start = np.datetime64(f"{month}-01T00:00:00", "us")
    return start + rng.integers(0, 27 * 24 * 3600, ROWS).astype("timedelta64[s]")


def _odd_rows(pickup: np.ndarray, minutes: np.ndarray, distance: np.ndarray, month: str) -> None:
    """Overwrite the first rows with the odd cases of a real month, a few of each kind."""
    minutes[0:5] = 0.0  # zero-length trips
    minutes[5:10] = [23.5 * 60, 23.9 * 60, 24.2 * 60, 30 * 60, 23.1 * 60]  # almost a day
    pickup[10:13] = np.datetime64("2008-12-31T23:50:00", "us")  # clock resets
    pickup[13:16] = np.datetime64(f"{month}-01T00:00:00", "us") - np.timedelta64(2, "h")
    distance[16:21] = [61.0, 88.5, 120.0, 3_000.0, LONGEST_DISTANCE if month == "2021-01" else 95.0]


def tlc_shaped_table(month: str, seed: int = 0) -> pa.Table:
    """ROWS synthetic trips of `month` in that month's TLC file schema."""
    rng = np.random.default_rng([seed, int(month.replace("-", ""))])
    pickup = _pickups(month, rng)
    distance = np.round(rng.gamma(2.0, 1.6, ROWS), 2)
    zones = rng.integers(1, 266, (2, ROWS))
    # Duration follows distance and a little of the zone: something to learn, plus noise.
    minutes = 3 + 3.2 * distance + (zones[0] % 7) + rng.normal(0, 2, ROWS).clip(-2, 6)
    _odd_rows(pickup, minutes, distance, month)
    dropoff = pickup + (minutes * 60_000_000).astype("timedelta64[us]")
    fare = np.round(3 + 2.5 * np.minimum(distance, 100), 2)
    types = _types(month)
    count = rng.integers(1, 4, ROWS)
    columns = {
        "VendorID": pa.array(rng.integers(1, 3, ROWS), types["zone"]),
        "lpep_pickup_datetime": pa.array(pickup, pa.timestamp("us")),
        "lpep_dropoff_datetime": pa.array(dropoff, pa.timestamp("us")),
        "store_and_fwd_flag": pa.array(["N"] * ROWS, pa.string()),
        "RatecodeID": pa.array(np.ones(ROWS, dtype=np.int64), types["code"]),
        "PULocationID": pa.array(zones[0], types["zone"]),
        "DOLocationID": pa.array(zones[1], types["zone"]),
        "passenger_count": pa.array(count, types["count"]),
        "trip_distance": pa.array(distance, pa.float64()),
        "fare_amount": pa.array(fare, pa.float64()),
        "extra": pa.array(np.full(ROWS, 0.5), pa.float64()),
        "mta_tax": pa.array(np.full(ROWS, 0.5), pa.float64()),
        "tip_amount": pa.array(np.round(fare * 0.15, 2), pa.float64()),
        "tolls_amount": pa.array(np.zeros(ROWS), pa.float64()),
        "ehail_fee": pa.nulls(ROWS, types["ehail"]),
        "improvement_surcharge": pa.array(np.full(ROWS, 1.0), pa.float64()),
        "total_amount": pa.array(np.round(fare * 1.15 + 2, 2), pa.float64()),
        "payment_type": pa.array(np.ones(ROWS, dtype=np.int64), types["code"]),
        "trip_type": pa.array(np.ones(ROWS, dtype=np.int64), types["code"]),
        "congestion_surcharge": pa.array(np.zeros(ROWS), pa.float64()),
    }
    return pa.table(columns)


def write_tlc_shaped_month(folder: Path, month: str) -> Path:
    """The synthetic month as a Parquet file named like TLC's (in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"green_tripdata_{month}.synthetic.parquet"
    if not path.exists():
        pq.write_table(tlc_shaped_table(month), path)
    return path
