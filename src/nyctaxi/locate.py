"""Where a raw month comes from, in order: the local folders, the raw-data bucket, then TLC.

The bucket is injected (`RawBucket`): the ingest flow passes the prefect-aws `S3Bucket` block
wrapped in retried tasks, the in-process training CLI passes none, the unit tests an in-memory
fake. So is the TLC download (`fetch`): the flow wraps `download_from_tlc` in a retried task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from nyctaxi import sources
from nyctaxi.config import PipelineSettings
from nyctaxi.months import Month, file_name, parse_month, s3_key

logger = logging.getLogger(__name__)

FoundIn = Literal["local", "s3", "download"]
# Prefect's run logger is a LoggerAdapter; the library's own is a Logger.
Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
FetchFromTlc = Callable[[Month], Path]
NO_BUCKET = "S3 bucket: none configured"


class RawBucket(Protocol):
    """The raw-data bucket, as far as finding and landing months needs it."""

    @property
    def name(self) -> str:
        """The bucket's name, for messages (s3://<name>/<key>)."""
        ...

    def has_key(self, key: str) -> bool: ...

    def download(self, key: str, dest: Path) -> None: ...

    def upload(self, path: Path, key: str) -> None: ...


@dataclass(frozen=True)
class IngestedMonth:
    """A raw month available locally: where it is, its checksum and where it was found."""

    month: str
    path: str
    sha256: str
    found_in: FoundIn
    bucket_key: str | None


def download_from_tlc(month: Month, settings: PipelineSettings) -> Path:
    """Fetch a month from TLC into the download cache (HTTP-level retries with backoff inside)."""
    return sources.download_month(
        month,
        settings.cache_dir,
        base_url=settings.tlc_base_url,
        timeout=settings.download_timeout_seconds,
        attempts=settings.download_attempts,
    )


def fetch_from_bucket(bucket: RawBucket, key: str, dest: Path) -> Path:
    """Download to a temp name of this call's own, check it, then move it into place: nothing
    half-written is ever read, and two runs fetching the same month never clobber each other
    (the first complete copy wins; the second finisher keeps it and drops its own)."""
    _, placed = sources.place_checked(dest, lambda staged: bucket.download(key, staged))
    if not placed:
        logger.info("%s: kept the copy another run placed first", dest)
    return dest


def _find_in_folders(month: Month, settings: PipelineSettings, looked_in: list[str]) -> Path | None:
    for folder in (settings.taxi_data_dir, settings.cache_dir):
        if folder is None:
            looked_in.append("local folder: TAXI_DATA_DIR is not set")
            continue
        found = sources.find_local(month, folder)
        if found is not None:
            return found
        looked_in.append(f"local folder {folder / file_name(month)}")
    return None


def locate_month(
    month: Month,
    settings: PipelineSettings,
    bucket: RawBucket | None,
    fetch: FetchFromTlc,
    *,
    no_bucket: str = NO_BUCKET,
) -> tuple[Path, FoundIn]:
    """Find one month: local folder, download cache, bucket, then TLC. Returns (path, where).

    Raises MonthNotAvailableError naming every place looked in; `no_bucket` says why no
    bucket was asked when there is none."""
    looked_in: list[str] = []
    found = _find_in_folders(month, settings, looked_in)
    if found is not None:
        return found, "local"
    if bucket is not None:
        key = s3_key(month)
        if bucket.has_key(key):
            return fetch_from_bucket(bucket, key, settings.cache_dir / file_name(month)), "s3"
        looked_in.append(f"s3://{bucket.name}/{key}")
    else:
        looked_in.append(no_bucket)
    if not settings.allow_download:
        looked_in.append("TLC download: disabled (TLC_ALLOW_DOWNLOAD=false)")
        raise sources.MonthNotAvailableError(month, looked_in)
    try:
        return fetch(month), "download"
    except sources.DownloadError as error:  # not published (404) or unreachable after retries
        looked_in.append(f"TLC: {error}")
        raise sources.MonthNotAvailableError(month, looked_in) from error


def _land(
    bucket: RawBucket, month: Month, path: Path, found_in: FoundIn, sha256: str, log: Log
) -> str:
    """Upload the month under its stable key unless it is there already; returns the key."""
    key = s3_key(month)
    # locate_month asked the bucket already unless the month was found locally.
    already_there = found_in == "s3" or (found_in == "local" and bucket.has_key(key))
    if already_there:
        log.info("%s already in s3://%s/%s", month, bucket.name, key)
    else:
        # Only a whole TLC month is landed: a truncated or foreign local file fails here.
        sources.validate_parquet(path)
        log.info("uploading %s (sha256 %s) to %s", path.name, sha256[:12], key)
        bucket.upload(path, key)
    return key


def ingest_months(
    months: Sequence[str | Month],
    settings: PipelineSettings,
    bucket: RawBucket | None,
    fetch: FetchFromTlc,
    *,
    no_bucket: str = NO_BUCKET,
    log: Log = logger,
) -> list[IngestedMonth]:
    """Make each month available locally; with a bucket, land it there unless already present."""
    ingested = []
    for month in map(parse_month, months):
        path, found_in = locate_month(month, settings, bucket, fetch, no_bucket=no_bucket)
        digest = sources.sha256_file(path)
        key = None if bucket is None else _land(bucket, month, path, found_in, digest, log)
        log.info("%s: %s (from %s, sha256 %s)", month, path, found_in, digest[:12])
        ingested.append(IngestedMonth(str(month), str(path), digest, found_in, key))
    return ingested
