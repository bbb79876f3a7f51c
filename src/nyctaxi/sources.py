"""Where a month's raw file comes from: a local folder or a TLC download (S3 lives in the flows).

Downloads stream into a temporary file beside the destination, are checked to be Parquet with the
columns we need, and only then are renamed into place, so a reader never sees a half-written or
corrupt file and a failed download overwrites nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import requests

from nyctaxi.months import TLC_BASE_URL, Month, file_name, parse_month, s3_key, tlc_url

logger = logging.getLogger(__name__)

# The columns cleaning and training read; a file without them is not a TLC green-taxi month.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
)
_CHUNK_BYTES = 1 << 20


class DataSourceError(Exception):
    """Base of the errors raised while locating or fetching a month."""


class InvalidParquetError(DataSourceError, ValueError):
    """A file is not Parquet, or lacks the columns of a TLC green-taxi month."""


class DownloadError(DataSourceError):
    """A download failed (after retries where retrying makes sense)."""


class RemoteFileNotFoundError(DownloadError):
    """The server answered 404: TLC has not published this file (yet)."""


class MonthNotAvailableError(DataSourceError, FileNotFoundError):
    """A month was found in none of the places looked in."""

    def __init__(
        self, month: str | Month, looked_in: Sequence[str], how_to: Sequence[str] | None = None
    ) -> None:
        self.month = parse_month(month)
        self.looked_in = tuple(looked_in)
        self.how_to = tuple(how_to) if how_to is not None else default_how_to(self.month)
        places = "\n".join(f"  - {place}" for place in self.looked_in) or "  (no place configured)"
        remedies = "\n".join(f"  - {remedy}" for remedy in self.how_to)
        super().__init__(
            f"Green-taxi month {self.month} is not available. Looked in:\n{places}\n"
            f"To supply it, do one of:\n{remedies}"
        )


def default_how_to(month: str | Month) -> tuple[str, ...]:
    """The ways a user can make a month available, for MonthNotAvailableError."""
    month = parse_month(month)
    return (
        f"put {file_name(month)} into the folder TAXI_DATA_DIR points at",
        f"upload it to the raw-data bucket (RAW_BUCKET) under the key {s3_key(month)}",
        f"allow downloads from TLC ({tlc_url(month)}); if TLC answers 404 the month is not "
        "published yet, so pick an earlier one",
    )


def find_local(month: str | Month, data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The month's file in data_dir, or None when there is no such folder or file."""
    if data_dir is None:
        return None
    path = Path(data_dir) / file_name(month)
    return path if path.is_file() else None


def validate_parquet(path: str | os.PathLike[str]) -> int:
    """Check that path is Parquet with REQUIRED_COLUMNS; return its row count."""
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for garbage; all mean "not Parquet"
        raise InvalidParquetError(f"{path} is not a readable Parquet file: {exc}") from exc
    with parquet:
        columns = set(parquet.schema_arrow.names)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise InvalidParquetError(
                f"{path} lacks the columns {missing} of a TLC green-taxi file "
                f"(has {sorted(columns)})"
            )
        return parquet.metadata.num_rows


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (recorded with each run's months)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class _TransientError(Exception):
    """A failure worth retrying: connection trouble, a timeout, a 5xx or 429."""


def _fetch_to_temp(url: str, dest: Path, timeout: float, session: requests.Session) -> Path:
    """GET url into a new temporary file in dest's folder; the caller owns (renames) it."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, session.get(url, stream=True, timeout=timeout) as resp:
            if resp.status_code == 404:
                raise RemoteFileNotFoundError(f"{url} answered 404: the file is not published")
            if resp.status_code >= 500 or resp.status_code == 429:
                raise _TransientError(f"{url} answered {resp.status_code}")
            if resp.status_code != 200:
                raise DownloadError(f"{url} answered {resp.status_code}: {resp.reason}")
            for chunk in resp.iter_content(chunk_size=_CHUNK_BYTES):
                out.write(chunk)
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as exc:
        tmp.unlink(missing_ok=True)
        raise _TransientError(f"{url}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    timeout: float = 60.0,
    attempts: int = 4,
    backoff_seconds: float = 2.0,
    session: requests.Session | None = None,
) -> Path:
    """Download url to dest atomically and return dest.

    Retries connection errors, timeouts, 429 and 5xx up to `attempts` times, waiting
    backoff_seconds * 2**k between tries. A 404 raises RemoteFileNotFoundError at once; a body that
    is not a TLC Parquet file raises InvalidParquetError. In every failure dest is left untouched.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    owned_session = session is None
    session = session or requests.Session()
    try:
        tmp = _download_with_retries(url, dest, timeout, attempts, backoff_seconds, session)
    finally:
        if owned_session:
            session.close()
    try:
        rows = validate_parquet(tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    logger.info("downloaded %s to %s (%d rows)", url, dest, rows)
    return dest


def _download_with_retries(
    url: str,
    dest: Path,
    timeout: float,
    attempts: int,
    backoff_seconds: float,
    session: requests.Session,
) -> Path:
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_to_temp(url, dest, timeout, session)
        except _TransientError as exc:
            if attempt == attempts:
                raise DownloadError(f"giving up on {url} after {attempts} attempts: {exc}") from exc
            delay = backoff_seconds * 2 ** (attempt - 1)
            logger.warning(
                "attempt %d/%d failed (%s); retrying in %.1fs", attempt, attempts, exc, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def download_month(
    month: str | Month,
    dest_dir: str | os.PathLike[str],
    *,
    base_url: str = TLC_BASE_URL,
    timeout: float = 60.0,
    attempts: int = 4,
    backoff_seconds: float = 2.0,
) -> Path:
    """Download a month from TLC into dest_dir/green_tripdata_YYYY-MM.parquet."""
    dest = Path(dest_dir) / file_name(month)
    return download(
        tlc_url(month, base_url),
        dest,
        timeout=timeout,
        attempts=attempts,
        backoff_seconds=backoff_seconds,
    )
