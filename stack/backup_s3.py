"""Buckets of a backup: copy S3 buckets into a folder and back, file by file.

Standalone on purpose (standard library + boto3, no import of ours): the Docker stack's backup
runs it inside a one-off container of the platform image, on the compose network, with the
bucket job's environment (S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION), the file bind-mounted read-only:

    python backup_s3.py download --folder /backup/buckets --bucket B ... --report /backup/s3.json
    python backup_s3.py upload   --folder /backup/buckets --bucket B[=FOLDER] ... --report ...
    python backup_s3.py count    --bucket B ... --report ...      # objects per bucket
    python backup_s3.py empty    --bucket B ... --report ...      # delete every object

Object keys become paths under FOLDER/BUCKET/ and back; a key that would leave that folder is
refused. Folder markers (keys ending in `/`, no data) are skipped. The report (JSON) also holds
the versions of the Python packages of the image the servers run from.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

MISSING_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}
VERSIONED = ("prefect", "mlflow", "boto3")


def client_from_env(environ: dict[str, str] | None = None) -> Any:
    import boto3

    env = dict(os.environ if environ is None else environ)
    return boto3.client(
        "s3",
        endpoint_url=env.get("S3_ENDPOINT_URL") or None,
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        region_name=env.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def object_path(folder: Path, key: str) -> Path:
    """Where an object's key lands under `folder`; ValueError for a key that leaves it."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(f"object key {key!r} cannot be stored as a file")
    return folder.joinpath(*parts)


def object_key(folder: Path, path: Path) -> str:
    return path.relative_to(folder).as_posix()


def bucket_exists(client: Any, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in MISSING_BUCKET_CODES:
            return False
        raise
    return True


def listing(client: Any, bucket: str) -> list[dict[str, Any]]:
    """Every object of the bucket (key, size); [] for a bucket that does not exist."""
    if not bucket_exists(client, bucket):
        return []
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects += [{"key": o["Key"], "bytes": o["Size"]} for o in page.get("Contents", [])]
    return objects


def download(client: Any, bucket: str, folder: Path, name: str | None = None) -> dict[str, int]:
    """Copy every object of `bucket` to folder/<name, default the bucket's>/<key>; returns
    {objects, bytes}."""
    target = folder / (name or bucket)
    target.mkdir(parents=True, exist_ok=True)
    count = size = 0
    for item in listing(client, bucket):
        if item["key"].endswith("/"):
            continue  # a folder marker, no data
        path = object_path(target, item["key"])
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        client.download_file(bucket, item["key"], str(staging))
        staging.chmod(0o600)
        staging.replace(path)
        count += 1
        size += path.stat().st_size
    return {"objects": count, "bytes": size}


def create_bucket(client: Any, bucket: str, region: str) -> None:
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:  # S3 wants the region spelled out everywhere but us-east-1
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )


def upload(
    client: Any, bucket: str, folder: Path, region: str = "us-east-1", name: str | None = None
) -> dict[str, int]:
    """Copy every file of folder/<name, default the bucket's>/ into the bucket (created if
    missing); returns {objects, bytes}."""
    source = folder / (name or bucket)
    if not bucket_exists(client, bucket):
        create_bucket(client, bucket, region)
    count = size = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []:
        client.upload_file(str(path), bucket, object_key(source, path))
        count += 1
        size += path.stat().st_size
    return {"objects": count, "bytes": size}


def empty(client: Any, bucket: str) -> dict[str, int]:
    keys = [item["key"] for item in listing(client, bucket)]
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    return {"objects": len(keys), "bytes": 0}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Copy S3 buckets to a folder and back.")
    parser.add_argument("action", choices=["download", "upload", "count", "empty"])
    parser.add_argument(
        "--bucket",
        action="append",
        required=True,
        help="BUCKET, or BUCKET=NAME to use the folder NAME (a bucket renamed since the backup)",
    )
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.action in {"download", "upload"} and args.folder is None:
        parser.error("--folder is needed to download or upload")
    client = client_from_env()
    region = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    result: dict[str, dict[str, int]] = {}
    for spec in args.bucket:
        bucket, _, name = spec.partition("=")
        if args.action == "download":
            result[bucket] = download(client, bucket, args.folder, name or None)
        elif args.action == "upload":
            result[bucket] = upload(client, bucket, args.folder, region, name or None)
        elif args.action == "count":
            result[bucket] = {"objects": len(listing(client, bucket)), "bytes": 0}
        else:
            result[bucket] = empty(client, bucket)
    args.report.write_text(json.dumps({"buckets": result, "versions": versions()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
