"""Feature matrix of rides, from the four raw columns known when a ride is requested.

ride_feature_matrix is the serving hot path (often one ride): numpy only, a handful of vectorised
operations, no pandas. frame_feature_matrix adapts a raw TLC DataFrame to it, so training and
serving compute features with the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nyctaxi.zones import BOROUGH_BY_ZONE, N_ZONES, SERVICE_ZONE_BY_ZONE

RAW_COLUMNS: tuple[str, ...] = (
    "PULocationID",
    "DOLocationID",
    "trip_distance",
    "lpep_pickup_datetime",
)
FEATURE_NAMES: tuple[str, ...] = (
    "pu_location_id",
    "do_location_id",
    "trip_distance",
    "pickup_hour",  # fractional hour of the day, 0 <= h < 24
    "pickup_weekday",  # Monday = 0
    "pu_borough",  # index into zones.BOROUGHS
    "do_borough",
    "pu_service_zone",  # index into zones.SERVICE_ZONES
    "do_service_zone",
    "same_zone",  # 1.0 when pickup and dropoff zone are the same
)
# The raw columns a model is fed (its signature): the features are built from these.
INPUT_COLUMNS = ["PULocationID", "DOLocationID", "trip_distance", "lpep_pickup_datetime"]
NYC_TIME_ZONE = "America/New_York"
_MINUTES_PER_DAY = 24 * 60
# 1970-01-01, day 0 of datetime64, was a Thursday (weekday 3 with Monday = 0).
_EPOCH_WEEKDAY = 3


def _zone_index(zone_ids: np.ndarray) -> np.ndarray:
    """Index into the zone tables: the zone ID, or 0 (a NaN entry) for missing or unknown IDs."""
    valid = (zone_ids >= 1) & (zone_ids <= N_ZONES)  # False for NaN
    return np.where(valid, zone_ids, 0).astype(np.intp)


def ride_feature_matrix(
    pu_location_id: np.ndarray,
    do_location_id: np.ndarray,
    trip_distance: np.ndarray,
    pickup: np.ndarray,
) -> np.ndarray:
    """float32 matrix (n, len(FEATURE_NAMES)) of n rides.

    Zone IDs and distances may be any numeric dtype (NaN = missing). pickup is datetime64 of any
    unit, naive NYC wall-clock time as TLC stores it; NaT gives missing time features.
    """
    pu = np.asarray(pu_location_id, dtype=np.float64)
    do = np.asarray(do_location_id, dtype=np.float64)
    minutes = np.asarray(pickup).astype("datetime64[m]")
    out = np.empty((pu.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    out[:, 0] = pu
    out[:, 1] = do
    out[:, 2] = trip_distance
    since_epoch = minutes.view(np.int64)
    out[:, 3] = (since_epoch % _MINUTES_PER_DAY) / 60.0
    out[:, 4] = (since_epoch // _MINUTES_PER_DAY + _EPOCH_WEEKDAY) % 7
    not_a_time = np.isnat(minutes)
    if not_a_time.any():
        out[not_a_time, 3:5] = np.nan
    pu_index = _zone_index(pu)
    do_index = _zone_index(do)
    out[:, 5] = BOROUGH_BY_ZONE[pu_index]
    out[:, 6] = BOROUGH_BY_ZONE[do_index]
    out[:, 7] = SERVICE_ZONE_BY_ZONE[pu_index]
    out[:, 8] = SERVICE_ZONE_BY_ZONE[do_index]
    out[:, 9] = pu == do
    return out


def frame_feature_matrix(trips: pd.DataFrame) -> np.ndarray:
    """The same matrix from a DataFrame with the raw TLC columns (RAW_COLUMNS; others ignored).

    Nullable integer columns with missing values and pickup times given as strings are accepted;
    unparseable times become NaT; time-zone-aware times are converted to NYC wall-clock time.
    """
    missing = [column for column in RAW_COLUMNS if column not in trips.columns]
    if missing:
        raise ValueError(f"trips lack the columns {missing} (need {list(RAW_COLUMNS)})")
    pickup = trips["lpep_pickup_datetime"]
    if not pd.api.types.is_datetime64_any_dtype(pickup.dtype):
        pickup = pd.to_datetime(pickup, errors="coerce")
    if isinstance(pickup.dtype, pd.DatetimeTZDtype):
        # the model learned NYC wall-clock times
        pickup = pickup.dt.tz_convert(NYC_TIME_ZONE).dt.tz_localize(None)
    return ride_feature_matrix(
        _as_float(trips["PULocationID"]),
        _as_float(trips["DOLocationID"]),
        _as_float(trips["trip_distance"]),
        pickup.to_numpy(dtype="datetime64[ns]"),
    )


def _as_float(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
