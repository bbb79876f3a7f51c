"""Batch scoring of whole months: which rides are scored, their ids, the output rows, the chunks.

Pure functions over frames and row counts; the files (reading row ranges, writing a month's
partition atomically) are in nyctaxi.batchio and running a month (in this process or on Dask) in
nyctaxi.batchrun.

A ride is scored when its inputs are usable by the training rules that do not need the dropoff
(inputs present, pickup inside the month, known zones, a plausible distance). Its
`actual_minutes` is set only where the whole ride passes the training rules (cleaning.RULES), so
the RMSE of a month is over exactly the rows a validation of that month would use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from nyctaxi.cleaning import (
    MAX_DURATION_MINUTES,
    MAX_TRIP_DISTANCE_MILES,
    MAX_ZONE_ID,
    MIN_DURATION_MINUTES,
    MIN_ZONE_ID,
    duration_minutes,
)
from nyctaxi.config import PipelineSettings
from nyctaxi.months import Month, parse_month

# Shared names (to move to nyctaxi.names): the flow and its deployment.
OUTPUT_FOLDER = "batch-predictions"  # under NYCTAXI_HOME unless BATCH_OUTPUT_DIR is set
# In a stack with the S3 bucket, each published month is also copied there, under this prefix.
BUCKET_PREFIX = "predictions/green"


def bucket_prefix(month: str | Month) -> str:
    """The bucket folder of a month's predictions, partitioned like the local folder."""
    return f"{BUCKET_PREFIX}/month={parse_month(month)}"


# Green-taxi months hold 50-80k rides: ~25k-row chunks give a cluster a few tasks per month,
# and each chunk still scores in tens of milliseconds.
DEFAULT_CHUNK_ROWS = 25_000
# A ride id is month * RIDE_ID_MONTH_FACTOR + the ride's row in the raw file (a month file
# holds far fewer than a billion rows): stable across reruns of the same file.
RIDE_ID_MONTH_FACTOR = 1_000_000_000

# month and model are repeated on every row: dictionary-encoded, one value each per file; the
# month's type also matches the hive partition column (month=YYYY-MM) readers add.
_LABEL = pa.dictionary(pa.int32(), pa.string())
OUTPUT_SCHEMA = pa.schema(
    [
        ("ride_id", pa.int64()),
        ("pickup_datetime", pa.timestamp("us")),
        ("PULocationID", pa.int32()),
        ("DOLocationID", pa.int32()),
        ("predicted_minutes", pa.float32()),
        ("actual_minutes", pa.float32()),  # null: no valid label by the training rules
        ("model_name", _LABEL),
        ("model_version", _LABEL),
        ("month", _LABEL),
    ]
)

Predict = Callable[[pd.DataFrame], np.ndarray]


class BatchSettings(PipelineSettings):
    """Where batch predictions go and how months are cut for a cluster."""

    batch_output_dir: Path | None = Field(
        default=None, description="Root of the predictions; unset: NYCTAXI_HOME/batch-predictions."
    )
    batch_chunk_rows: int = Field(
        default=DEFAULT_CHUNK_ROWS, ge=1_000, description="Rows of a raw month per scoring task."
    )

    def output_dir(self) -> Path:
        if self.batch_output_dir is not None:
            return self.batch_output_dir.expanduser()
        return self.nyctaxi_home / OUTPUT_FOLDER

    def model_stage_dir(self) -> Path:
        """Model copies the cluster's workers load (they share NYCTAXI_HOME with the run)."""
        return self.nyctaxi_home / "cache" / "models"


@dataclass(frozen=True)
class ModelRef:
    """One registered model version."""

    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class RowRange:
    """Rows [start, stop) of a raw month file."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ChunkSummary:
    """What scoring one chunk produced: small, so a cluster sends back only this."""

    index: int
    rows_read: int  # raw rows of the chunk
    rows: int  # rows scored and written
    labelled: int  # rows with an actual duration
    squared_error: float  # sum over labelled rows
    seconds: float = 0.0


@dataclass(frozen=True)
class MonthSummary:
    """The chunks of one month, added up."""

    month: str
    rows_read: int
    rows: int
    labelled: int
    squared_error: float
    chunks: int
    seconds: float  # wall-clock time of read + features + predict + write

    @property
    def rmse(self) -> float | None:
        return math.sqrt(self.squared_error / self.labelled) if self.labelled else None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def plan_chunks(total_rows: int, chunk_rows: int) -> list[RowRange]:
    """Row ranges of nearly equal size covering [0, total_rows), none longer than chunk_rows.

    Equal sizes (not chunk_rows and a remainder) keep every chunk large: the model predicts a
    handful of rows with another code path (model.SMALL_BATCH_ROWS), and a tiny last chunk would
    make the output depend on the chunking."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if total_rows <= 0:
        return []
    count = math.ceil(total_rows / chunk_rows)
    bounds = [total_rows * i // count for i in range(count + 1)]
    return [RowRange(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def ride_ids(month: str | Month, first_row: int, rows: np.ndarray) -> np.ndarray:
    """Stable ids: the month (YYYYMM) and the ride's row number in the raw month file."""
    parsed = parse_month(month)
    base = (parsed.year * 100 + parsed.month) * RIDE_ID_MONTH_FACTOR + first_row
    return base + np.asarray(rows, dtype=np.int64)


def scoreable_mask(raw: pd.DataFrame, month: str | Month) -> np.ndarray:
    """True for the rides scored: inputs present, pickup in the month, zones 1-265, distance
    0-60 miles (the training rules that don't need the dropoff)."""
    parsed = parse_month(month)
    pickup = raw["lpep_pickup_datetime"]
    zones_ok = raw["PULocationID"].between(MIN_ZONE_ID, MAX_ZONE_ID) & raw["DOLocationID"].between(
        MIN_ZONE_ID, MAX_ZONE_ID
    )
    keep = (
        (pickup >= parsed.start)
        & (pickup < parsed.end)
        & zones_ok
        # between() is False for NaN and +-inf as well
        & raw["trip_distance"].between(0.0, MAX_TRIP_DISTANCE_MILES)
    )
    return keep.fillna(False).to_numpy(dtype=bool)


def actual_minutes(scored: pd.DataFrame) -> np.ndarray:
    """The label of scored rides, float32 like the training target; NaN where the dropoff is
    missing or the duration is outside 1-60 minutes (the ride would not be trained on)."""
    minutes = duration_minutes(scored).to_numpy(dtype=np.float64, na_value=np.nan)
    labelled = (minutes >= MIN_DURATION_MINUTES) & (minutes <= MAX_DURATION_MINUTES)
    return np.where(labelled, minutes, np.nan).astype(np.float32)


def model_input(scored: pd.DataFrame) -> pd.DataFrame:
    """The model's raw input columns with clean dtypes (no missing values remain)."""
    return pd.DataFrame(
        {
            "PULocationID": scored["PULocationID"].to_numpy(dtype=np.int32),
            "DOLocationID": scored["DOLocationID"].to_numpy(dtype=np.int32),
            "trip_distance": scored["trip_distance"].to_numpy(dtype=np.float64),
            "lpep_pickup_datetime": scored["lpep_pickup_datetime"].to_numpy(dtype="datetime64[us]"),
        }
    )


def _repeated(value: str, rows: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), [value])


def output_table(
    ids: np.ndarray,
    inputs: pd.DataFrame,
    predicted: np.ndarray,
    actual: np.ndarray,
    model: ModelRef,
    month: str,
) -> pa.Table:
    """The rows written for scored rides (OUTPUT_SCHEMA)."""
    rows = len(ids)
    actual = np.asarray(actual, dtype=np.float32)
    columns = [
        pa.array(ids, pa.int64()),
        pa.array(inputs["lpep_pickup_datetime"].to_numpy(dtype="datetime64[us]")),
        pa.array(inputs["PULocationID"].to_numpy(dtype=np.int32)),
        pa.array(inputs["DOLocationID"].to_numpy(dtype=np.int32)),
        pa.array(np.asarray(predicted, dtype=np.float32)),
        pa.array(actual, mask=np.isnan(actual)),
        _repeated(model.name, rows),
        _repeated(model.version, rows),
        _repeated(month, rows),
    ]
    return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA)


def score_rows(
    raw: pd.DataFrame, month: str, first_row: int, predict: Predict, model: ModelRef
) -> tuple[pa.Table, ChunkSummary]:
    """Score one chunk of a raw month (rows first_row.. of the file): its output rows and
    summary (index 0, no timing: the caller fills those in)."""
    keep = scoreable_mask(raw, month)
    scored = raw[keep]
    inputs = model_input(scored)
    predicted = (
        np.asarray(predict(inputs), dtype=np.float32) if len(inputs) else np.empty(0, np.float32)
    )
    if predicted.shape != (len(inputs),):
        raise ValueError(f"the model returned {predicted.shape} predictions for {len(inputs)} rows")
    actual = actual_minutes(scored)
    table = output_table(
        ride_ids(month, first_row, np.flatnonzero(keep)), inputs, predicted, actual, model, month
    )
    labelled = ~np.isnan(actual)
    errors = actual[labelled].astype(np.float64) - predicted[labelled].astype(np.float64)
    summary = ChunkSummary(0, len(raw), len(inputs), int(labelled.sum()), float(errors @ errors))
    return table, summary


def combine(month: str, chunks: Sequence[ChunkSummary], seconds: float) -> MonthSummary:
    """The month's figures from its chunks' summaries."""
    return MonthSummary(
        month=month,
        rows_read=sum(c.rows_read for c in chunks),
        rows=sum(c.rows for c in chunks),
        labelled=sum(c.labelled for c in chunks),
        squared_error=sum(c.squared_error for c in chunks),
        chunks=len(chunks),
        seconds=seconds,
    )


class IncompleteMonthError(RuntimeError):
    """Scoring a month produced fewer (or other) rows or files than its raw file holds."""


def check_complete(
    month: str, plan: Sequence[RowRange], chunks: Iterable[ChunkSummary], total_rows: int
) -> None:
    """Every planned chunk scored exactly once and every raw row read: otherwise the month is
    not published (never a partition silently short)."""
    chunks = list(chunks)
    indexes = sorted(c.index for c in chunks)
    if indexes != list(range(len(plan))):
        raise IncompleteMonthError(
            f"{month}: scored chunks {indexes}, expected 0..{len(plan) - 1}: not published"
        )
    for chunk in chunks:
        if chunk.rows_read != len(plan[chunk.index]):
            raise IncompleteMonthError(
                f"{month}: chunk {chunk.index} read {chunk.rows_read} rows of "
                f"{len(plan[chunk.index])}: not published"
            )
    read = sum(c.rows_read for c in chunks)
    if read != total_rows:
        raise IncompleteMonthError(
            f"{month}: read {read} of the file's {total_rows} rows: not published"
        )
