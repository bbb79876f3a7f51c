"""Ingest flow: make raw TLC months available locally and land them in the S3 bucket.

A month is looked for, in order, in the local folder (TAXI_DATA_DIR), in the S3 bucket (the
prefect-aws `S3Bucket` block) and at the TLC download URL; that order lives in the library
(`nyctaxi.locate`). With a bucket configured, every month found is landed under a stable key
(`raw/green/YYYY-MM.parquet`) unless it is already there. This flow only supplies the bucket and
the download as retried tasks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from prefect_aws import S3Bucket

from flows.retrying import retry_when
from nyctaxi import locate, names, sources
from nyctaxi.config import PipelineSettings
from nyctaxi.locate import IngestedMonth
from nyctaxi.months import Month

__all__ = ["IngestedMonth", "ingest_flow", "load_bucket"]


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
    """Download one object; the library checks it and renames it into place."""
    return S3Bucket.load(bucket_block).download_object_to_path(key, dest)


def _may_change_on_retry(error: Exception) -> bool:
    """A 404 (not published) or a corrupt file will not change on retry; network trouble might."""
    return not isinstance(error, (sources.RemoteFileNotFoundError, sources.InvalidParquetError))


@task(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_condition_fn=retry_when(_may_change_on_retry),
    timeout_seconds=900,
    cache_policy=NO_CACHE,  # the downloaded file itself is the cache (see nyctaxi.locate)
)
def download_month(month: Month, settings: PipelineSettings) -> Path:
    """Fetch from TLC (HTTP-level retries with backoff inside; whole-task retries on top)."""
    return locate.download_from_tlc(month, settings)


# Not cached: whether a key is already in the bucket is asked of the bucket itself
# (bucket_has_key), never of a result cache that outlives a bucket being emptied or swapped.
@task(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    cache_policy=NO_CACHE,
)
def land_in_bucket(bucket_block: str, path: Path, key: str) -> str:
    return S3Bucket.load(bucket_block).upload_from_path(path, key)


@dataclass(frozen=True)
class BlockBucket:
    """The library's `RawBucket` over a prefect-aws S3Bucket block: each call a retried task."""

    block_name: str
    name: str

    def has_key(self, key: str) -> bool:
        return bucket_has_key(self.block_name, key)

    def download(self, key: str, dest: Path) -> None:
        fetch_from_bucket(self.block_name, key, dest)

    def upload(self, path: Path, key: str) -> None:
        land_in_bucket(self.block_name, path, key)


@flow(name=names.INGEST_FLOW)
def ingest_flow(months: list[str], require_bucket: bool = False) -> list[IngestedMonth]:
    """Make each month available locally; with a bucket, land it there unless already present."""
    settings = PipelineSettings()
    block_name = settings.s3_bucket_block
    block = load_bucket(block_name, required=require_bucket)
    bucket = BlockBucket(block_name, block.bucket_name) if block is not None else None
    return locate.ingest_months(
        months,
        settings,
        bucket,
        functools.partial(download_month, settings=settings),
        no_bucket=f"S3 bucket: block {block_name!r} not configured",
        log=get_run_logger(),
    )
