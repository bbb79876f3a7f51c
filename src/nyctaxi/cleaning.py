"""Read a month of TLC green-taxi trips and drop the rows that are wrong, counting each rule.

Rules run in order and each dropped row is counted once, by the first rule that drops it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from nyctaxi.months import Month, parse_month
from nyctaxi.sources import REQUIRED_COLUMNS

logger = logging.getLogger(__name__)

MIN_DURATION_MINUTES = 1.0
MAX_DURATION_MINUTES = 60.0
MIN_ZONE_ID, MAX_ZONE_ID = 1, 265
# A kept trip lasts at most 60 minutes, so more than 60 miles means averaging over 60 mph for an
# hour on city streets. In the nine shared months, 1-60 minute trips above 60 miles are 0.07% of
# rows and almost all are far above 100 miles (odometer garbage up to 244,152 miles), while
# legitimate long trips (airports, Westchester, Long Island) stay under ~50 miles.
MAX_TRIP_DISTANCE_MILES = 60.0
# Below this many clean rows a month is broken or truncated, not a month to train on.
MIN_ROWS = 1_000

RULES: tuple[str, ...] = (
    "missing_values",
    "pickup_outside_month",
    "duration_out_of_range",
    "zone_out_of_range",
    "distance_out_of_range",
)


class InsufficientDataError(ValueError):
    """Too few rows remain after cleaning to train or validate on."""


class CleanTrips(NamedTuple):
    """Clean trips (with a `duration` column in minutes) and the rows each rule dropped."""

    trips: pd.DataFrame
    dropped: dict[str, int]


@dataclass(frozen=True)
class CleanedMonth:
    """Facts about one cleaned month file. They depend only on the file and this code, never on
    the role the month plays in a run: a result cached on (file, code) may hold nothing else."""

    month: str
    sha256: str
    rows_read: int
    rows_kept: int
    dropped: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedMonth:
    """A month ready to train or validate on: its clean trips and the facts about cleaning it."""

    trips: pd.DataFrame
    facts: CleanedMonth


def prepare_month(
    path: str | os.PathLike[str], month: str | Month, sha256: str, *, min_rows: int = MIN_ROWS
) -> PreparedMonth:
    """Read one month's file and clean it; sha256 is the file's checksum, recorded in the facts."""
    raw = read_trips(path)
    clean, dropped = clean_trips(raw, month, min_rows=min_rows)
    facts = CleanedMonth(str(parse_month(month)), sha256, len(raw), len(clean), dropped)
    return PreparedMonth(clean, facts)


def read_trips(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the needed columns of a month with the same dtypes whatever the month.

    Zone IDs come as int64 up to 2023-01 and int32 after: both become nullable Int32 (missing
    values survive until cleaning drops them). Timestamps become datetime64[us], distances float64.
    """
    trips = pd.read_parquet(path, columns=list(REQUIRED_COLUMNS))
    return normalize_dtypes(trips)


def normalize_dtypes(trips: pd.DataFrame) -> pd.DataFrame:
    """Cast the needed columns to one set of dtypes (see read_trips)."""
    return trips.astype(
        {
            "lpep_pickup_datetime": "datetime64[us]",
            "lpep_dropoff_datetime": "datetime64[us]",
            "PULocationID": "Int32",
            "DOLocationID": "Int32",
            "trip_distance": "float64",
        }
    )


def duration_minutes(trips: pd.DataFrame) -> pd.Series:
    """Trip duration in minutes from the pickup and dropoff timestamps (NaN where either is NaT)."""
    delta = trips["lpep_dropoff_datetime"] - trips["lpep_pickup_datetime"]
    return delta.dt.total_seconds() / 60.0


def _rule_masks(trips: pd.DataFrame, duration: pd.Series, month: Month) -> dict[str, pd.Series]:
    """For each rule, a boolean Series: True where the rule drops the row."""
    pickup = trips["lpep_pickup_datetime"]
    distance = trips["trip_distance"]
    zones_ok = trips["PULocationID"].between(MIN_ZONE_ID, MAX_ZONE_ID) & trips[
        "DOLocationID"
    ].between(MIN_ZONE_ID, MAX_ZONE_ID)
    masks = {
        "missing_values": trips[list(REQUIRED_COLUMNS)].isna().any(axis=1),
        "pickup_outside_month": ~((pickup >= month.start) & (pickup < month.end)),
        "duration_out_of_range": ~duration.between(MIN_DURATION_MINUTES, MAX_DURATION_MINUTES),
        "zone_out_of_range": ~zones_ok.fillna(False).astype(bool),
        # between() is False for NaN and +-inf as well
        "distance_out_of_range": ~distance.between(0.0, MAX_TRIP_DISTANCE_MILES),
    }
    return {rule: mask.fillna(True).astype(bool) for rule, mask in masks.items()}


def clean_trips(trips: pd.DataFrame, month: str | Month, *, min_rows: int = MIN_ROWS) -> CleanTrips:
    """Apply RULES to one month of raw trips; raise InsufficientDataError below min_rows."""
    month = parse_month(month)
    missing = [column for column in REQUIRED_COLUMNS if column not in trips.columns]
    if missing:
        raise ValueError(f"month {month}: trips lack the columns {missing}")
    trips = normalize_dtypes(trips[list(REQUIRED_COLUMNS)])
    duration = duration_minutes(trips)
    keep = pd.Series(True, index=trips.index)
    dropped: dict[str, int] = {}
    for rule, drops in _rule_masks(trips, duration, month).items():
        newly = keep & drops
        dropped[rule] = int(newly.sum())
        keep &= ~drops
    clean = trips[keep].assign(duration=duration[keep]).reset_index(drop=True)
    clean = clean.astype({"PULocationID": "int32", "DOLocationID": "int32"})
    logger.info("month %s: kept %d of %d rows; dropped %s", month, len(clean), len(trips), dropped)
    if len(clean) < min_rows:
        raise InsufficientDataError(
            f"month {month}: only {len(clean)} of {len(trips)} rows remain after cleaning, "
            f"fewer than the {min_rows} needed (dropped per rule: {dropped})"
        )
    return CleanTrips(clean, dropped)


def course_rows(trips: pd.DataFrame) -> pd.DataFrame:
    """The rows the course recipe keeps: duration 1-60 minutes, nothing else dropped.

    The accuracy bar compares models on these validation rows; adds `duration` (minutes).
    """
    duration = duration_minutes(trips)
    keep = duration.between(MIN_DURATION_MINUTES, MAX_DURATION_MINUTES).to_numpy(dtype=bool)
    return trips[keep].assign(duration=duration[keep]).reset_index(drop=True)


def target(trips: pd.DataFrame) -> np.ndarray:
    """The training target of cleaned or course rows: duration in minutes, float32."""
    return trips["duration"].to_numpy(dtype=np.float32)
