"""Batch flow (deployment batch/score-month): score whole months with a registered model.

Ingest each month (the ingest flow: local folder, bucket, TLC), then score it in a task: on the
Dask cluster at DASK_SCHEDULER_ADDRESS when set, else in the worker's own process; each month's
partition (`<BATCH_OUTPUT_DIR>/month=YYYY-MM/`) is replaced as a whole, so a rerun is safe. In a
stack with the S3 bucket (the Docker stack) the published month is then copied to
`s3://<bucket>/predictions/green/month=YYYY-MM/`, parts from an earlier run that this one did not
write removed. A Markdown artifact per month (key batch-YYYY-MM) gives rows, RMSE, rows/s and the
output path.
The logic is in the library (nyctaxi.batch, batchio, batchrun, batchreport).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect_aws import S3Bucket

from flows.ingest import ingest_flow, load_bucket
from flows.retrying import retry_when
from nyctaxi import batch, batchrun, cluster, names, tracking
from nyctaxi.batch import BatchSettings, ModelRef
from nyctaxi.batchmonths import default_month, months_to_score
from nyctaxi.batchreport import BatchResult, batch_result, render_markdown
from nyctaxi.locate import IngestedMonth
from nyctaxi.schedule import run_date

_mlflow_may_recover = retry_when(tracking.is_transient)


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_mlflow_may_recover
)
def find_model(model_name: str, model_version: str | None) -> ModelRef:
    model = batchrun.resolve_model(model_name, model_version)
    get_run_logger().info("scoring with %s v%s", model.name, model.version)
    return model


@task(cache_policy=NO_CACHE)
def score_month(
    ingested: IngestedMonth, model: ModelRef, settings: BatchSettings, address: str | None
) -> batchrun.ScoredMonth:
    return batchrun.run_month(ingested.path, ingested.month, model, settings, address=address)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def copy_to_bucket(block_name: str, folder: Path, month: str) -> str:
    """Upload a published month's parts, then delete the month's other keys (a rerun that wrote
    fewer parts): the bucket's copy matches the local partition. Returns its s3:// URL."""
    block = S3Bucket.load(block_name)
    prefix = batch.bucket_prefix(month)
    written = set()
    for part in sorted(folder.glob("part-*.parquet")):
        written.add(block.upload_from_path(part, f"{prefix}/{part.name}"))
    listed = block.list_objects(folder=prefix)
    stale = [item["Key"] for item in listed if item["Key"] not in written]
    if stale:
        client = block.credentials.get_s3_client()
        client.delete_objects(
            Bucket=block.bucket_name, Delete={"Objects": [{"Key": key} for key in stale]}
        )
    url = f"s3://{block.bucket_name}/{prefix}/"
    get_run_logger().info("%s: %d parts copied to %s", month, len(written), url)
    return url


@task(cache_policy=NO_CACHE)
def publish(result: BatchResult) -> None:
    for month in result.months:
        create_markdown_artifact(
            markdown=render_markdown(month, result),
            key=f"batch-{month.month}",
            description=f"{result.model_name} v{result.model_version}: {month.rows} rides",
        )


@flow(name=names.BATCH_FLOW)
def batch_flow(
    month: str | None = None,
    from_month: str | None = None,
    to_month: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> BatchResult:
    """Score a month (or from_month..to_month) with the champion, or with model_version. With
    neither a month nor a range (a scheduled run), the newest month TLC has published."""
    if not (month or from_month or to_month):
        month = default_month(run_date(flow_run.get_scheduled_start_time()))
    months = months_to_score(month, from_month, to_month)  # a bad month fails before any work
    settings = batchrun.configured_settings(model_name)
    address = cluster.scheduler_address()
    get_run_logger().info(
        "months %s on %s", months, f"the Dask cluster at {address}" if address else "this process"
    )
    model = find_model(settings.model_name, model_version)
    scored = [score_month(ingested, model, settings, address) for ingested in ingest_flow(months)]
    if load_bucket(settings.s3_bucket_block, required=False) is not None:
        for done in scored:
            copy_to_bucket(settings.s3_bucket_block, done.output, done.summary.month)
    result = batch_result(scored, str(settings.output_dir()))
    publish(result)
    return result
