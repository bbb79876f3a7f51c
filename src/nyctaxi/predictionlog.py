"""The prediction log: every ride the prediction service answered, as Parquet files by UTC day.

One definition of the layout and the schema, shared by the writer (the prediction service,
services/predict/prediction_log.py) and the reader (the monitoring flow's live mode).

    <dir>/date=YYYY-MM-DD/<host>-<pid>-<UTC stamp>-<seq>.parquet

- `<dir>` is PREDICTION_LOG_DIR (names.PREDICTION_LOG_DIR_VARIABLE), else
  NYCTAXI_HOME/prediction-log: in Docker a volume that the service writes and the worker reads,
  natively a folder both processes see.
- A file holds the rides of one flush of one worker process; the day is the UTC day the rides
  were served (a flush that spans midnight writes two files), so a window's rides are all in
  the partitions of the days it overlaps.
- A file is written under a name starting with "." in its partition, then renamed: readers skip
  dot-files, so they never see a partial file.
- The raw inputs keep the TLC column names (features.RAW_COLUMNS): the reader's frame goes
  straight to features.frame_feature_matrix.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nyctaxi import names

logger = logging.getLogger(__name__)

DEFAULT_FOLDER = names.PREDICTION_LOG_FOLDER
PARTITION_PREFIX = "date="
SUFFIX = ".parquet"
SERVED_AT = "served_at"
PREDICTION = "prediction"
SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ride_index", pa.int32(), nullable=False),  # position in the request's batch
        pa.field(SERVED_AT, pa.timestamp("us", tz="UTC"), nullable=False),
        # The raw inputs as the service parsed them, TLC names (NaN / null = missing).
        pa.field("PULocationID", pa.float64()),
        pa.field("DOLocationID", pa.float64()),
        pa.field("trip_distance", pa.float64()),
        pa.field("lpep_pickup_datetime", pa.timestamp("us")),  # naive NYC wall-clock time
        pa.field(PREDICTION, pa.float64()),  # minutes
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
# Files written by this process: with the host and the pid, a name no other writer can take.
_SEQUENCE = itertools.count()


def log_dir(environ_value: str | None, nyctaxi_home: Path) -> Path:
    """The log's folder: PREDICTION_LOG_DIR's value when set (not blank), else under the home."""
    if environ_value and environ_value.strip():
        return Path(environ_value.strip()).expanduser()
    return Path(nyctaxi_home).expanduser() / DEFAULT_FOLDER


# Columns copied ride by ride into a RideBuffer (the others are per request).
_FLOAT_INPUTS = ("PULocationID", "DOLocationID", "trip_distance")


class RideBuffer:
    """Rides appended column by column into preallocated arrays: the prediction service's queue.

    An append copies a request's few values into place (microseconds, on the request thread);
    turning the buffer into a table is then a handful of array operations, whatever the number
    of requests: the writer thread never walks Python objects ride by ride, so it holds the GIL
    (which the request thread needs) for well under a millisecond per flush. Not thread-safe:
    the caller locks."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows = 0
        # np.empty: pages are only touched (committed) as rows arrive.
        self._floats = {name: np.empty(capacity, np.float64) for name in _FLOAT_INPUTS}
        self._pickup = np.empty(capacity, "datetime64[us]")
        self._prediction = np.empty(capacity, np.float64)
        # one entry per request: request id, served at (us since the epoch, UTC), rides, model
        self._requests: list[tuple[str, int, int, str, str]] = []

    def append(
        self,
        request_id: str,
        served_at_us: int,
        inputs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        prediction: np.ndarray,
        model: tuple[str, str],
    ) -> bool:
        """Add one request's rides (inputs: PULocationID, DOLocationID, trip_distance, pickup;
        model: name, version); False, adding nothing, when they do not fit."""
        count = prediction.shape[0]
        start, end = self.rows, self.rows + count
        if end > self.capacity:
            return False
        pu, do, distance, pickup = inputs
        self._floats["PULocationID"][start:end] = pu
        self._floats["DOLocationID"][start:end] = do
        self._floats["trip_distance"][start:end] = distance
        self._pickup[start:end] = pickup
        self._prediction[start:end] = prediction
        self._requests.append((request_id, served_at_us, count, *model))
        self.rows = end
        return True

    def to_table(self) -> pa.Table:
        """The rides (SCHEMA), one row each, in the order they were appended."""
        if not self._requests:
            return SCHEMA.empty_table()
        ids, served, counts_, names, versions = zip(*self._requests, strict=True)
        counts = np.array(counts_, np.int64)
        rows = self.rows
        ride_index = np.arange(rows, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)

        def per_ride(values: tuple[object, ...], dtype: object = object) -> np.ndarray:
            return np.repeat(np.array(values, dtype=dtype), counts)

        columns = [
            pa.array(per_ride(ids), pa.string()),
            pa.array(ride_index.astype(np.int32)),
            pa.array(
                per_ride(served, np.int64).view("datetime64[us]"), SCHEMA.field(SERVED_AT).type
            ),
            *(pa.array(self._floats[name][:rows]) for name in _FLOAT_INPUTS),
            pa.array(self._pickup[:rows], pa.timestamp("us"), from_pandas=True),
            pa.array(self._prediction[:rows]),
            pa.array(per_ride(names), pa.string()),
            pa.array(per_ride(versions), pa.string()),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)


@dataclass(frozen=True, slots=True)
class Record:
    """The rides of one request (one entry per ride in each array); served_at_us is
    microseconds since the epoch (UTC)."""

    request_id: str
    served_at_us: int
    pu_location_id: np.ndarray
    do_location_id: np.ndarray
    trip_distance: np.ndarray
    pickup: np.ndarray  # datetime64, naive NYC wall-clock time
    prediction: np.ndarray  # minutes
    model_name: str
    model_version: str

    def __len__(self) -> int:
        return int(self.prediction.shape[0])


def build_batch(records: Sequence[Record]) -> pa.Table:
    """One table (SCHEMA) of the rides of `records`, one row per ride, in order."""
    buffer = RideBuffer(sum(len(r) for r in records))
    for r in records:
        inputs = (r.pu_location_id, r.do_location_id, r.trip_distance, r.pickup)
        buffer.append(
            r.request_id, r.served_at_us, inputs, r.prediction, (r.model_name, r.model_version)
        )
    return buffer.to_table()


def partition_dir(directory: Path, day: date) -> Path:
    return directory / f"{PARTITION_PREFIX}{day.isoformat()}"


def file_name(now: datetime, sequence: int) -> str:
    """`<host>-<pid>-<UTC stamp>-<seq>.parquet`: unique per writer process, sortable by time."""
    host = _UNSAFE.sub("_", socket.gethostname())[:64] or "host"
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{host}-{os.getpid()}-{stamp}-{sequence:06d}{SUFFIX}"


def _by_day(table: pa.Table) -> Iterator[tuple[date, pa.Table]]:
    """The table split by the UTC day its rows were served (one piece unless it spans midnight)."""
    served = table[SERVED_AT]
    bounds = pc.min_max(served)
    first, last = bounds["min"].as_py(), bounds["max"].as_py()
    if first is None:
        return
    if first.date() == last.date():  # the usual case: no filtering
        yield first.date(), table
        return
    days = pc.floor_temporal(served, unit="day")
    for day in pc.unique(days).to_pylist():
        yield day.date(), table.filter(pc.equal(days, pa.scalar(day, days.type)))


def write_batch(directory: Path, table: pa.Table, now: datetime) -> list[Path]:
    """Write `table` (SCHEMA) atomically, one file per UTC day of its rows; the paths written.

    Raises OSError (or an Arrow error) when the folder cannot be written: the caller decides."""
    written = []
    for day, rows in _by_day(table):
        folder = partition_dir(directory, day)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name(now, next(_SEQUENCE))
        temporary = folder / f".{path.name}.tmp"
        try:
            # No dictionary for the request ids (unique): only the model columns repeat.
            pq.write_table(rows, temporary, use_dictionary=["model_name", "model_version"])
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        written.append(path)
    return written


def _utc(moment: datetime) -> datetime:
    # A naive time is taken as UTC, the log's own clock.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _partition_day(folder: Path) -> date | None:
    if not folder.name.startswith(PARTITION_PREFIX) or not folder.is_dir():
        return None
    try:
        return date.fromisoformat(folder.name.removeprefix(PARTITION_PREFIX))
    except ValueError:
        return None


def log_files(directory: Path, since: datetime, until: datetime) -> list[Path]:
    """The finished files of the partitions of the UTC days overlapping [since, until)."""
    first = _utc(since).date()
    last = (_utc(until) - timedelta(microseconds=1)).date()
    try:
        folders = sorted(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    files: list[Path] = []
    for folder in folders:
        day = _partition_day(folder)
        if day is not None and first <= day <= last:
            files += sorted(
                p
                for p in folder.iterdir()
                if p.name.endswith(SUFFIX) and not p.name.startswith(".")
            )
    return files


def _read_file(path: Path) -> pa.Table | None:
    """The file's rows in SCHEMA, or None (a warning logged) when it cannot be read."""
    try:
        table = pq.ParquetFile(path).read(columns=list(COLUMNS))
        return table.cast(SCHEMA)
    except (OSError, ValueError, KeyError, pa.ArrowException) as error:
        logger.warning("skipping unreadable prediction log file %s: %s", path, error)
        return None


def empty_frame() -> pd.DataFrame:
    """The reader's frame with no row: the columns and dtypes of a real one."""
    return SCHEMA.empty_table().to_pandas()


def read_window(directory: Path, since: datetime, until: datetime) -> pd.DataFrame:
    """Rides served in [since, until) (naive times are UTC), by time served then ride.

    Reads only the partitions of the days the window overlaps; a file that cannot be read is
    skipped with a warning. No ride (or no folder): an empty frame with the same columns."""
    since, until = _utc(since), _utc(until)
    if until <= since:
        return empty_frame()
    low = pa.scalar(since, SCHEMA.field(SERVED_AT).type)
    high = pa.scalar(until, SCHEMA.field(SERVED_AT).type)
    tables = []
    for path in log_files(directory, since, until):
        table = _read_file(path)
        if table is None:
            continue
        served = table[SERVED_AT]
        tables.append(table.filter(pc.and_(pc.greater_equal(served, low), pc.less(served, high))))
    if not tables:
        return empty_frame()
    rides = pa.concat_tables(tables).sort_by(
        [(SERVED_AT, "ascending"), ("ride_index", "ascending")]
    )
    return rides.to_pandas()
