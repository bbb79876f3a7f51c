"""Prefect blocks the flows use (S3 credentials and bucket) and the webhook the automations call."""

from __future__ import annotations

import logging
from uuid import UUID

import boto3
from botocore.exceptions import ClientError
from prefect.blocks.webhook import Webhook
from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

from nyctaxi.names import AWS_CREDENTIALS_BLOCK, RAW_BUCKET_BLOCK, WEBHOOK_BLOCK
from services.bootstrap.settings import BootstrapSettings

logger = logging.getLogger(__name__)


def aws_credentials(settings: BootstrapSettings) -> AwsCredentials:
    """Credentials for the configured S3 endpoint (MinIO, moto or AWS itself)."""
    secret = settings.aws_secret_access_key
    return AwsCredentials(
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        region_name=settings.aws_default_region,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_endpoint_url),
    )


def save_storage_blocks(settings: BootstrapSettings) -> None:
    """Create or update the AwsCredentials and S3Bucket blocks (overwrite keeps them in sync)."""
    credentials = aws_credentials(settings)
    credentials.save(AWS_CREDENTIALS_BLOCK, overwrite=True)
    S3Bucket(bucket_name=settings.raw_bucket, credentials=credentials).save(
        RAW_BUCKET_BLOCK, overwrite=True
    )
    logger.info(
        "blocks %s and %s point at %s (bucket %s)",
        AWS_CREDENTIALS_BLOCK,
        RAW_BUCKET_BLOCK,
        settings.s3_endpoint_url,
        settings.raw_bucket,
    )


def ensure_buckets(settings: BootstrapSettings, names: list[str]) -> None:
    """Create the buckets that do not exist yet (MinIO's own bucket job may have made them)."""
    secret = settings.aws_secret_access_key
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        region_name=settings.aws_default_region,
    )
    for name in names:
        try:
            client.head_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
                raise
            if settings.aws_default_region == "us-east-1":
                client.create_bucket(Bucket=name)
            else:  # S3 wants the region spelled out everywhere but us-east-1
                client.create_bucket(
                    Bucket=name,
                    CreateBucketConfiguration={"LocationConstraint": settings.aws_default_region},
                )
            logger.info("created bucket %s", name)


def save_webhook_block(url: str) -> UUID:
    """Create or update the webhook block the notification automations call; return its id."""
    return Webhook(method="POST", url=url).save(WEBHOOK_BLOCK, overwrite=True)
