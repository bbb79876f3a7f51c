"""Ingest flow: make raw TLC months available locally and land them in the S3 bucket.

A month is looked for, in order, in the local folder (TAXI_DATA_DIR), in the S3 bucket (the
prefect-aws `S3Bucket` block) and at the TLC download URL. With a bucket configured, every month
found is landed under a stable key (`raw/green/YYYY-MM.parquet`) unless it is already there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from prefect_aws import S3Bucket

from flows.retrying import retry_when
from nyctaxi import sources
from nyctaxi.config import PipelineSettings
from nyctaxi.months import Month, file_name, parse_month, s3_key


@dataclass(frozen=True)
class IngestedMonth:
    month: str
    path: str
    sha256: str
    found_in: str  # "local", "s3" or "download"
    bucket_key: str | None


def load_bucket(block_name: str, *, required: bool) -> S3Bucket | None:
    """The raw-data bucket block, or None when it isn't configured and isn't required."""
    try:
        return S3Bucket.load(block_name)
    except ValueError as error:
        if required:
            raise RuntimeError(
                f"S3Bucket block {block_name!r} not found on the Prefect server: run the "
                "bootstrap (python -m services.bootstrap) or create the block"
            ) from error
        return None


# Tasks take the block's name, not the block: its credentials never enter a cache key or a log.
@task(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=2), cache_policy=NO_CACHE)
def bucket_has_key(bucket_block: str, key: str) -> bool:
    folder, _, name = key.rpartition("/")
    objects = S3Bucket.load(bucket_block).list_objects(folder=folder)
    return any(obj["Key"] == key or obj["Key"].endswith(f"/{name}") for obj in objects)


@task(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    timeout_seconds=600,
    cache_policy=NO_CACHE,
)
def fetch_from_bucket(bucket_block: str, key: str, dest: Path) -> Path:
    """Download to a temp name, check it, then rename: nothing half-written is ever read."""
    partial = dest.with_suffix(".partial")
    try:
        S3Bucket.load(bucket_block).download_object_to_path(key, partial)
        sources.validate_parquet(partial)
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _may_change_on_retry(error: Exception) -> bool:
    """A 404 (not published) or a corrupt file will not change on retry; network trouble might."""
    return not isinstance(error, (sources.RemoteFileNotFoundError, sources.InvalidParquetError))


@task(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_condition_fn=retry_when(_may_change_on_retry),
    timeout_seconds=900,
    cache_policy=NO_CACHE,  # the downloaded file itself is the cache (see locate_month)
)
def download_month(month: Month, settings: PipelineSettings) -> Path:
    """Fetch from TLC (HTTP-level retries with backoff inside; whole-task retries on top)."""
    return sources.download_month(
        month,
        settings.cache_dir,
        base_url=settings.tlc_base_url,
        timeout=settings.download_timeout_seconds,
        attempts=settings.download_attempts,
    )


# Not cached: whether a key is already in the bucket is asked of the bucket itself
# (bucket_has_key), never of a result cache that outlives a bucket being emptied or swapped.
@task(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    cache_policy=NO_CACHE,
)
def land_in_bucket(bucket_block: str, path: Path, key: str, sha256: str) -> str:
    get_run_logger().info("uploading %s (sha256 %s) to %s", path.name, sha256[:12], key)
    return S3Bucket.load(bucket_block).upload_from_path(path, key)


def locate_month(
    month: Month, settings: PipelineSettings, bucket: S3Bucket | None
) -> tuple[Path, str]:
    """Find one month: local folder, download cache, bucket, then TLC. Returns (path, where)."""
    looked_in: list[str] = []
    for folder in (settings.taxi_data_dir, settings.cache_dir):
        if folder is None:
            looked_in.append("local folder: TAXI_DATA_DIR is not set")
            continue
        found = sources.find_local(month, folder)
        if found is not None:
            return found, "local"
        looked_in.append(f"local folder {folder / file_name(month)}")
    if bucket is not None:
        key = s3_key(month)
        if bucket_has_key(settings.s3_bucket_block, key):
            dest = settings.cache_dir / file_name(month)
            dest.parent.mkdir(parents=True, exist_ok=True)
            return fetch_from_bucket(settings.s3_bucket_block, key, dest), "s3"
        looked_in.append(f"s3://{bucket.bucket_name}/{key}")
    else:
        looked_in.append(f"S3 bucket: block {settings.s3_bucket_block!r} not configured")
    if not settings.allow_download:
        looked_in.append("TLC download: disabled (TLC_ALLOW_DOWNLOAD=false)")
        raise sources.MonthNotAvailableError(month, looked_in)
    try:
        return download_month(month, settings), "download"
    except sources.DownloadError as error:  # not published (404) or unreachable after retries
        looked_in.append(f"TLC: {error}")
        raise sources.MonthNotAvailableError(month, looked_in) from error


@flow(name="ingest")
def ingest_flow(months: list[str], require_bucket: bool = False) -> list[IngestedMonth]:
    """Make each month available locally; with a bucket, land it there unless already present."""
    settings = PipelineSettings()
    logger = get_run_logger()
    bucket = load_bucket(settings.s3_bucket_block, required=require_bucket)
    ingested = []
    for month in map(parse_month, months):
        path, found_in = locate_month(month, settings, bucket)
        digest = sources.sha256_file(path)
        key = None
        if bucket is not None:
            key = s3_key(month)
            # locate_month asked the bucket already unless the month was found locally.
            already_there = found_in == "s3" or (
                found_in == "local" and bucket_has_key(settings.s3_bucket_block, key)
            )
            if already_there:
                logger.info("%s already in s3://%s/%s", month, bucket.bucket_name, key)
            else:
                land_in_bucket(settings.s3_bucket_block, path, key, digest)
        logger.info("%s: %s (from %s, sha256 %s)", month, path, found_in, digest[:12])
        ingested.append(IngestedMonth(str(month), str(path), digest, found_in, key))
    return ingested
