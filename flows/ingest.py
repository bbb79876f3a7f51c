"""Ingest flow: make raw TLC months available locally and land them in the S3 bucket.

A month is looked for, in order, in the local folder (TAXI_DATA_DIR), in the S3 bucket (the
prefect-aws `S3Bucket` block) and at the TLC download URL; that order lives in the library
(`nyctaxi.locate`). With a bucket configured, every month found is landed under a stable key
(`raw/green/YYYY-MM.parquet`) unless it is already there. This flow only supplies the bucket and
the download as retried tasks.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from boto3.exceptions import Boto3Error, RetriesExceededError, S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff
from prefect_aws import S3Bucket
from pydantic import SecretStr

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


_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _root_cause(error: BaseException) -> BaseException:
    """The botocore error behind boto3's transfer wrappers (they hide it in their message)."""
    if isinstance(error, RetriesExceededError) and error.last_exception is not None:
        return error.last_exception
    if isinstance(error, S3UploadFailedError) and isinstance(error.__context__, ClientError):
        return error.__context__
    return error


def _store_may_recover(error: BaseException) -> bool:
    """Down, unreachable or overloaded may pass; no such bucket or access denied will not."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status is None or status in _RETRYABLE_STATUS
    return isinstance(error, (BotoConnectionError, HTTPClientError, RetriesExceededError))


def _secrets_of(credentials: object) -> list[str]:
    """The secret values of a credentials block, to keep out of error messages."""
    values = vars(credentials)
    secrets = [v.get_secret_value() for v in values.values() if isinstance(v, SecretStr)]
    token = values.get("aws_session_token")  # a plain str in prefect-aws, secret all the same
    return [*secrets, token] if isinstance(token, str) else secrets


def _attempt() -> str:
    context = TaskRunContext.get()
    if context is None:
        return ""
    return f"attempt {context.task_run.run_count} of {context.task.retries + 1}"


@contextlib.contextmanager
def _bucket_call(block: S3Bucket, action: str, key: str) -> Iterator[None]:
    """Turn an S3 failure into a BucketError naming the bucket, key and endpoint (no secret)."""
    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as error:
        cause = _root_cause(error)
        credentials = block.credentials
        raise sources.BucketError(
            action,
            block.bucket_name,
            key,
            credentials.aws_client_parameters.endpoint_url,
            sources.redact(f"{type(cause).__name__}: {cause}", _secrets_of(credentials)),
            transient=_store_may_recover(cause),
            attempt=_attempt(),
        ) from error


def _may_recover(error: Exception) -> bool:
    return not isinstance(error, sources.BucketError) or error.transient


# Three attempts over ~15 s (each with botocore's own three tries): a store that restarts
# (a MinIO container, ~2-5 s) is waited for; one that stays down fails the run with a BucketError.
_bucket_task = functools.partial(
    task,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_condition_fn=retry_when(_may_recover),
    cache_policy=NO_CACHE,
)


# Tasks take the block's name, not the block: its credentials never enter a cache key or a log.
@_bucket_task()
def bucket_has_key(bucket_block: str, key: str) -> bool:
    folder, _, name = key.rpartition("/")
    block = S3Bucket.load(bucket_block)
    with _bucket_call(block, "look up", key):
        objects = block.list_objects(folder=folder)
    return any(obj["Key"] == key or obj["Key"].endswith(f"/{name}") for obj in objects)


@_bucket_task(timeout_seconds=600)
def fetch_from_bucket(bucket_block: str, key: str, dest: Path) -> Path:
    """Download one object into dest (the library's own temp name; it checks and places it)."""
    block = S3Bucket.load(bucket_block)
    with _bucket_call(block, "download", key):
        return block.download_object_to_path(key, dest)


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
# An upload is one PUT below boto3's multipart threshold (8 MiB; a month is 1-3 MiB), above it a
# multipart upload: either way S3 shows the object only once it is complete, never a part.
@_bucket_task(timeout_seconds=600)
def land_in_bucket(bucket_block: str, path: Path, key: str) -> str:
    block = S3Bucket.load(bucket_block)
    with _bucket_call(block, "upload", key):
        return block.upload_from_path(path, key)


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
