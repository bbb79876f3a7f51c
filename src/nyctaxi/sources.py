"""Where a month's raw file comes from: a local folder or a TLC download (S3 lives in the flows).

Downloads stream into a temporary file beside the destination, are checked to be Parquet with the
columns we need, and only then are moved into place, so a reader never sees a half-written or
corrupt file and a failed download overwrites nothing. Each download stages under a name of its
own (`staging_path`) and the first complete copy wins (`publish`): two runs fetching the same
month at once both end with the same, whole file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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


class BucketError(DataSourceError):
    """A call to the raw-data bucket failed: says what, which object and where, never a secret.

    `transient` tells whether trying again may help (the store is down or overloaded) or not
    (no such bucket, access denied)."""

    def __init__(
        self,
        action: str,
        bucket: str,
        key: str,
        endpoint: str | None,
        cause: str,
        transient: bool,
        attempt: str = "",
    ) -> None:
        # Kept to pickle it (Prefect may persist a failed task's exception): see __reduce__.
        self._arguments = (action, bucket, key, endpoint, cause, transient, attempt)
        self.bucket = bucket
        self.key = key
        self.endpoint = public_url(endpoint) if endpoint else "the AWS default endpoint"
        self.transient = transient
        kind = "S3 store unreachable" if transient else "S3 request refused"
        tried = f" ({attempt})" if attempt else ""
        super().__init__(
            f"{kind}: could not {action} s3://{bucket}/{key} at {self.endpoint}{tried}: {cause}"
        )

    def __reduce__(self) -> tuple[type[BucketError], tuple[object, ...]]:
        return (type(self), self._arguments)


def public_url(url: str) -> str:
    """url without any user:password part, fit for a log line or an error message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """text with every non-empty secret replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


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


STAGING_SUFFIX = ".part"


@contextlib.contextmanager
def staging_path(dest: Path) -> Iterator[Path]:
    """A new, unique temporary path beside dest, removed on exit whatever happened.

    Beside dest, so that `publish` is a rename within one filesystem; unique (mkstemp), so that
    two processes or threads fetching the same file never write into each other's copy; hidden
    and suffixed, so that `find_local` never takes it for a month."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=STAGING_SUFFIX)
    os.close(fd)
    staged = Path(name)
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)


def publish(staged: Path, dest: Path) -> bool:
    """Move a complete, checked file into place atomically; the first complete copy wins.

    Returns False when dest appeared meanwhile (another run fetched the same file first): that
    copy is kept, so a file in place never changes under a reader who already checksummed it.
    A hard link makes "place it unless there" atomic; a filesystem without hard links falls back
    to os.replace (still atomic, the last copy wins). The caller removes `staged`."""
    try:
        os.link(staged, dest)
    except FileExistsError:
        return False
    except OSError:  # EPERM / ENOTSUP: no hard links here
        os.replace(staged, dest)
    return True


def place_checked(dest: Path, fill: Callable[[Path], object]) -> tuple[int, bool]:
    """Fill a staging copy of dest (`fill(staged)`), check it is a TLC Parquet file, publish it.

    Returns (rows, placed): placed is False when another run's copy was in place first (kept).
    In every failure dest is left untouched and no temporary file is left behind."""
    with staging_path(dest) as staged:
        fill(staged)
        rows = validate_parquet(staged)
        return rows, publish(staged, dest)


def _fetch_into(url: str, staged: Path, timeout: float, session: requests.Session) -> None:
    """GET url into staged (truncated first, so a retry never appends to a failed attempt)."""
    try:
        with staged.open("wb") as out, session.get(url, stream=True, timeout=timeout) as resp:
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
        raise _TransientError(f"{url}: {type(exc).__name__}: {exc}") from exc


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
    is not a TLC Parquet file raises InvalidParquetError. In every failure dest is left untouched
    and no temporary file is left behind. If another run placed dest first, its copy is kept.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    dest = Path(dest)
    owned_session = session is None
    session = session or requests.Session()
    try:
        rows, placed = place_checked(
            dest,
            lambda staged: _download_with_retries(
                url, staged, timeout, attempts, backoff_seconds, session
            ),
        )
    finally:
        if owned_session:
            session.close()
    if placed:
        logger.info("downloaded %s to %s (%d rows)", url, dest, rows)
    else:
        logger.info("downloaded %s; kept the copy another run placed first at %s", url, dest)
    return dest


def _download_with_retries(
    url: str,
    staged: Path,
    timeout: float,
    attempts: int,
    backoff_seconds: float,
    session: requests.Session,
) -> None:
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_into(url, staged, timeout, session)
        except _TransientError as exc:
            if attempt == attempts:
                raise DownloadError(f"giving up on {url} after {attempts} attempts: {exc}") from exc
            delay = backoff_seconds * 2 ** (attempt - 1)
            logger.warning(
                "attempt %d/%d failed (%s); retrying in %.1fs", attempt, attempts, exc, delay
            )
            time.sleep(delay)


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
