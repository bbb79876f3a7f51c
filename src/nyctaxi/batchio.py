"""The files of batch scoring: row ranges of a raw month in, one month's partition out.

Layout: `<root>/month=YYYY-MM/part-NNNNN.parquet`, one part per chunk. A run writes its parts
into a staging folder of its own under `<root>/_staging/` (readers skip folders starting with `_`
or `.`), checks them, and only then swaps the folder in for the month's: a rerun replaces the
month, never adds to it, and nobody ever sees half a month. The swap is two renames under a file
lock: between them the month is briefly absent, never partial.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nyctaxi.batch import OUTPUT_SCHEMA, IncompleteMonthError, RowRange
from nyctaxi.cleaning import normalize_dtypes
from nyctaxi.locking import file_lock
from nyctaxi.sources import REQUIRED_COLUMNS

logger = logging.getLogger(__name__)

STAGING = "_staging"
_PART = re.compile(r"part-(\d{5})\.parquet")


def month_dir(root: Path, month: str) -> Path:
    return root / f"month={month}"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def raw_row_count(path: str | os.PathLike[str]) -> int:
    """Rows of a raw month file (from its footer: nothing else is read)."""
    return pq.ParquetFile(path).metadata.num_rows


def read_rows(path: str | os.PathLike[str], rows: RowRange | None = None) -> pd.DataFrame:
    """The needed columns of rows [start, stop) of a raw month (all rows without a range),
    with cleaning's dtypes; only the row groups holding the range are read."""
    source = pq.ParquetFile(path)
    columns = list(REQUIRED_COLUMNS)
    if rows is None:
        table = source.read(columns=columns)
    else:
        groups, first = [], 0
        offset = 0
        for index in range(source.metadata.num_row_groups):
            size = source.metadata.row_group(index).num_rows
            if offset < rows.stop and offset + size > rows.start:
                if not groups:
                    first = offset
                groups.append(index)
            offset += size
        table = source.read_row_groups(groups, columns=columns)
        table = table.slice(rows.start - first, len(rows))
    return normalize_dtypes(table.to_pandas())


def new_staging(root: Path, month: str) -> Path:
    """A fresh staging folder for one run's parts of a month."""
    folder = root / STAGING / f"month={month}.{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    return folder


def write_part(folder: Path, index: int, table: pa.Table) -> Path:
    """Write one part under a temporary name, then rename it: a worker killed mid-write leaves
    a stray temp file (removed before the swap), never a truncated part; a rescheduled chunk
    simply replaces its part."""
    path = folder / part_name(index)
    temp = folder / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    pq.write_table(table, temp)
    os.replace(temp, path)
    return path


def staged_rows(folder: Path, chunks: int) -> dict[int, int]:
    """Remove stray files, then check that exactly parts 0..chunks-1 are staged, with the
    output schema; returns the rows of each part (from the footers)."""
    found: dict[int, int] = {}
    for path in folder.iterdir():
        match = _PART.fullmatch(path.name)
        if match is None:
            path.unlink()
            continue
        part = pq.ParquetFile(path)
        if not part.schema_arrow.equals(OUTPUT_SCHEMA):
            raise IncompleteMonthError(f"{path}: unexpected schema {part.schema_arrow}")
        found[int(match.group(1))] = part.metadata.num_rows
    if sorted(found) != list(range(chunks)):
        raise IncompleteMonthError(
            f"{folder}: staged parts {sorted(found)}, expected 0..{chunks - 1}: not published"
        )
    return found


def publish(root: Path, month: str, staging: Path) -> Path:
    """Swap the staged parts in as the month's partition (replacing any earlier run's)."""
    target = month_dir(root, month)
    with file_lock(root / STAGING / f"month={month}.lock"):
        replaced = None
        if target.exists():
            replaced = staging.with_name(f"{staging.name}.replaced")
            os.rename(target, replaced)
        os.rename(staging, target)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    logger.info("published %s", target)
    return target


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
