"""SYNTHETIC growth data for the scaling benchmark: N times the nine real months.

For timing and memory only, never for accuracy claims. Each real month becomes N times as many
rides, resampled with replacement from that month with small perturbations:

- a pickup inside its month moves by up to +-5 minutes and stays inside the month (clipped), so
  cleaning keeps the same share of rows; pickups outside their month (the real files' typos) are
  left as they are, so cleaning still drops them;
- the dropoff moves with its pickup, plus a little noise (normal, sd 30 s);
- trip_distance is multiplied by (1 + normal noise, sd 2%), rounded to 0.01 mile like TLC's;
- zones and every other column are the resampled ride's own.

The files keep the raw TLC schema of their month (all columns, same Arrow types), so
cleaning.read_trips reads them like the real ones. By default a month is one file N times larger:
the Dask fit makes one partition per file, and a real bigger month (a yellow-taxi month is
~3M rows) is one file too. `--parts P` splits each month into P files instead.

    python bench/growth.py --factor 10                 # into $NYCTAXI_HOME/bench/growth
    python bench/growth.py --factor 30 --out /tmp/growth --parts 3

Deterministic for a seed; a file already there with the expected row count is kept (idempotent).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nyctaxi.months import Month, file_name, parse_month

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
REAL_MONTHS: tuple[str, ...] = (
    "2021-01",
    "2021-02",
    "2022-01",
    "2022-02",
    "2022-03",
    "2023-01",
    "2023-02",
    "2023-03",
    "2023-04",
)
PICKUP_SHIFT_SECONDS = 5 * 60
DROPOFF_NOISE_SECONDS = 30.0
DISTANCE_NOISE = 0.02
PICKUP, DROPOFF, DISTANCE = "lpep_pickup_datetime", "lpep_dropoff_datetime", "trip_distance"


def default_out_dir() -> Path:
    """$NYCTAXI_HOME/bench/growth, else /tmp/nyctaxi-bench/growth: never inside the repo."""
    home = os.environ.get("NYCTAXI_HOME", "").strip()
    return (Path(home) / "bench" if home else Path("/tmp/nyctaxi-bench")) / "growth"


def default_data_dir() -> Path:
    return Path(os.environ.get("TAXI_DATA_DIR") or REPO.parent / "shared/data/tlc")


def synthetic_name(month: str | Month, factor: int, part: int | None = None) -> str:
    """e.g. synthetic_x10_green_tripdata_2022-01.parquet (or ..._part03.parquet)."""
    stem = f"synthetic_x{factor}_{file_name(month).removesuffix('.parquet')}"
    return f"{stem}.parquet" if part is None else f"{stem}_part{part:02d}.parquet"


@dataclass(frozen=True)
class SyntheticFile:
    """One synthetic file and the real month its rides were resampled from (the month cleaning
    must be told, so that it keeps them)."""

    month: str
    path: Path
    rows: int


def plan(
    data_dir: Path, out_dir: Path, factor: int, months: Sequence[str] = REAL_MONTHS, parts: int = 1
) -> list[tuple[Path, SyntheticFile, int]]:
    """(real source, synthetic file, part index) for every file of the data set."""
    if factor < 1 or parts < 1:
        raise ValueError(f"factor and parts must be >= 1, got {factor} and {parts}")
    planned = []
    for month in map(parse_month, months):
        source = data_dir / file_name(month)
        total = factor * pq.ParquetFile(source).metadata.num_rows
        for part in range(parts):
            rows = total // parts + (part < total % parts)
            name = synthetic_name(month, factor, part if parts > 1 else None)
            planned.append((source, SyntheticFile(str(month), out_dir / name, rows), part))
    return planned


def _as_numpy(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy()  # nulls become NaT / NaN


def _to_arrow(values: np.ndarray, like: pa.DataType) -> pa.Array:
    return pa.array(values, from_pandas=True).cast(like)  # NaT / NaN back to null


def perturb(table: pa.Table, month: Month, rng: np.random.Generator) -> pa.Table:
    """The resampled rides with their pickup, dropoff and distance perturbed (module docstring)."""
    pickup_type = table.schema.field(PICKUP).type
    pickup = _as_numpy(table.column(PICKUP)).astype("datetime64[us]")
    dropoff = _as_numpy(table.column(DROPOFF)).astype("datetime64[us]")
    start, end = np.datetime64(month.start, "us"), np.datetime64(month.end, "us")
    inside = (pickup >= start) & (pickup < end)  # False for NaT
    shift = rng.uniform(-PICKUP_SHIFT_SECONDS, PICKUP_SHIFT_SECONDS, len(pickup)) * 1e6
    noise = rng.normal(0.0, DROPOFF_NOISE_SECONDS, len(pickup)) * 1e6
    moved = np.clip(pickup + shift.astype("timedelta64[us]"), start, end - np.timedelta64(1, "s"))
    actual_shift = moved - pickup
    new_pickup = np.where(inside, moved, pickup)
    jittered = dropoff + actual_shift + noise.astype("timedelta64[us]")
    new_dropoff = np.where(inside, jittered, dropoff)
    distance = _as_numpy(table.column(DISTANCE)).astype(np.float64)
    factor = 1.0 + rng.normal(0.0, DISTANCE_NOISE, len(distance))
    new_distance = np.round(distance * factor, 2)
    replaced = {
        PICKUP: _to_arrow(new_pickup, pickup_type),
        DROPOFF: _to_arrow(new_dropoff, table.schema.field(DROPOFF).type),
        DISTANCE: _to_arrow(new_distance, table.schema.field(DISTANCE).type),
    }
    for name, values in replaced.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def _seed(seed: int, factor: int, month: Month, part: int) -> list[int]:
    # Each file has its own stream: a file is the same whatever else is generated with it.
    return [seed, factor, month.year, month.month, part]


def _has_rows(path: Path, rows: int) -> bool:
    try:
        return pq.ParquetFile(path).metadata.num_rows == rows
    except (OSError, pa.ArrowInvalid):
        return False


def write_file(source: Path, target: SyntheticFile, rng: np.random.Generator) -> None:
    """Resample target.rows rides of `source`, perturb them, write them atomically."""
    real = pq.read_table(source)
    rows = real.take(rng.integers(0, real.num_rows, target.rows))
    synthetic = perturb(rows, parse_month(target.month), rng)
    staging = target.path.with_name(f".{target.path.name}.{os.getpid()}.tmp")
    pq.write_table(synthetic, staging)
    os.replace(staging, target.path)  # no reader ever sees a half-written file


def generate(
    factor: int,
    out_dir: Path | None = None,
    *,
    data_dir: Path | None = None,
    months: Sequence[str] = REAL_MONTHS,
    parts: int = 1,
    seed: int = 42,
) -> list[SyntheticFile]:
    """Write the SYNTHETIC x`factor` data set (skipping files already there); returns its files."""
    out_dir = out_dir or default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    planned = plan(data_dir or default_data_dir(), out_dir, factor, months, parts)
    for source, target, part in planned:
        if _has_rows(target.path, target.rows):
            logger.info("%s: already there", target.path.name)
        else:
            started = time.perf_counter()
            rng = np.random.default_rng(_seed(seed, factor, parse_month(target.month), part))
            write_file(source, target, rng)
            logger.info(
                "%s: %d rows in %.1fs",
                target.path.name,
                target.rows,
                time.perf_counter() - started,
            )
        files.append(target)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, required=True, help="N: rows per real row")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {default_out_dir()}")
    parser.add_argument("--data-dir", type=Path, default=None, help="the real months")
    parser.add_argument("--parts", type=int, default=1, help="files per month (default 1)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = (args.out or default_out_dir()).resolve()
    if out.is_relative_to(REPO):
        sys.exit(f"{out} is inside the repository: synthetic data never goes there")
    files = generate(args.factor, out, data_dir=args.data_dir, parts=args.parts, seed=args.seed)
    rows = sum(f.rows for f in files)
    print(f"SYNTHETIC x{args.factor}: {len(files)} files, {rows:,} rows in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
