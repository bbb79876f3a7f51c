"""One-shot `buckets` job of docker-compose.yml: create the MLflow artifacts and raw-data buckets.

Idempotent (existing buckets are left alone) and private (no bucket policy is set). Plain boto3
on purpose: MLflow waits for this job, and importing Prefect would add half a minute to every
start. Environment: S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
MLFLOW_ARTIFACTS_BUCKET, RAW_BUCKET. Exit status 0 only when both buckets exist.

    python -m services.buckets
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from nyctaxi import names

logger = logging.getLogger("services.buckets")

MISSING_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}


def ensure_bucket(client: Any, name: str, region: str) -> bool:
    """Create the bucket unless it exists; True when it was created."""
    try:
        client.head_bucket(Bucket=name)
        return False
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in MISSING_BUCKET_CODES:
            raise
    if region == "us-east-1":
        client.create_bucket(Bucket=name)
    else:  # S3 wants the region spelled out everywhere but us-east-1
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return True


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    endpoint = os.environ.get("S3_ENDPOINT_URL")
    if not endpoint:
        logger.error("S3_ENDPOINT_URL is not set: nothing to create buckets in")
        return 2
    region = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    buckets = [
        os.environ.get("MLFLOW_ARTIFACTS_BUCKET") or names.MLFLOW_ARTIFACTS_BUCKET,
        os.environ.get("RAW_BUCKET") or names.RAW_BUCKET,
    ]
    client = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    try:
        for name in buckets:
            created = ensure_bucket(client, name, region)
            logger.info("bucket %s %s", name, "created" if created else "exists")
    except (BotoCoreError, ClientError) as error:
        logger.error(
            "could not create buckets at %s: %s (check MINIO_ROOT_USER / MINIO_ROOT_PASSWORD)",
            endpoint,
            error,
        )
        return 1
    logger.info("buckets ready at %s: %s", endpoint, ", ".join(buckets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
