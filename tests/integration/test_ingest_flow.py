"""The ingest flow against a real S3 endpoint (moto's server) through the prefect-aws blocks."""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import pytest
from prefect_aws import S3Bucket

from flows.ingest import ingest_flow
from nyctaxi.sources import BucketError, MonthNotAvailableError
from tests.servers import S3Endpoint, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def bucket_objects(endpoint: S3Endpoint, bucket: str) -> dict[str, str]:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name=endpoint.region,
    )
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {obj["Key"]: obj["ETag"] for obj in listing}


def test_ingest_lands_months_once_and_reads_them_back_from_the_bucket(
    bucket: str,
    s3_endpoint: S3Endpoint,
    pipeline_env: Path,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = ingest_flow(["2023-01", "2023-02"], require_bucket=True)
    assert [m.found_in for m in first] == ["local", "local"]
    landed = bucket_objects(s3_endpoint, bucket)
    assert set(landed) == {"raw/green/2023-01.parquet", "raw/green/2023-02.parquet"}

    second = ingest_flow(["2023-01"], require_bucket=True)  # already there: skipped
    assert second[0].sha256 == first[0].sha256
    assert bucket_objects(s3_endpoint, bucket) == landed

    # With no local copy, the month comes from the bucket, byte for byte.
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("NYCTAXI_HOME", str(tmp_path / "fresh-home"))
    from_bucket = ingest_flow(["2023-02"], require_bucket=True)
    assert from_bucket[0].found_in == "s3"
    assert from_bucket[0].sha256 == first[1].sha256


def test_month_found_nowhere_names_the_month_and_every_place(
    bucket: str, pipeline_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TAXI_DATA_DIR", str(empty))
    with pytest.raises(MonthNotAvailableError) as raised:
        ingest_flow(["2019-07"], require_bucket=True)
    message = str(raised.value)
    assert "2019-07" in message
    assert str(empty) in message
    assert f"s3://{bucket}/raw/green/2019-07.parquet" in message
    assert "TLC_ALLOW_DOWNLOAD" in message


def test_unreachable_tlc_still_names_the_month_and_every_place(
    bucket: str, pipeline_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loopback port nobody listens on: connection refused, retried, then given up.
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TLC_ALLOW_DOWNLOAD", "true")
    monkeypatch.setenv("TLC_BASE_URL", f"http://127.0.0.1:{free_port()}/trip-data")
    monkeypatch.setenv("DOWNLOAD_ATTEMPTS", "1")
    with pytest.raises(MonthNotAvailableError) as raised:
        ingest_flow(["2019-07"], require_bucket=True)
    message = str(raised.value)
    assert f"s3://{bucket}/raw/green/2019-07.parquet" in message
    assert "TLC: giving up on http://127.0.0.1:" in message
    assert "green_tripdata_2019-07.parquet" in message


def test_corrupt_month_in_the_bucket_fails_clearly_and_overwrites_nothing(
    bucket: str,
    s3_endpoint: S3Endpoint,
    pipeline_env: Path,
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.url,
        aws_access_key_id=s3_endpoint.access_key,
        aws_secret_access_key=s3_endpoint.secret_key,
        region_name=s3_endpoint.region,
    )
    client.put_object(Bucket=bucket, Key="raw/green/2022-02.parquet", Body=b"not parquet at all")
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path / "empty"))
    cache = pipeline_env / "cache" / "raw"
    cache.mkdir(parents=True)
    good = cache / "green_tripdata_2022-01.parquet"
    shutil.copy(data_dir / good.name, good)
    with pytest.raises(Exception, match="(?i)parquet"):
        ingest_flow(["2022-02"], require_bucket=True)
    assert not (cache / "green_tripdata_2022-02.parquet").exists()
    assert good.read_bytes() == (data_dir / good.name).read_bytes()


def test_a_refused_bucket_request_fails_at_once_naming_bucket_key_and_endpoint(
    bucket: str,
    s3_endpoint: S3Endpoint,
    pipeline_env: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The block names a bucket the store does not have: S3 answers NoSuchBucket, which no retry
    # changes, so the task fails on its first attempt (no backoff) with a readable message.
    missing = f"{bucket}-missing"
    S3Bucket.load(bucket).model_copy(update={"bucket_name": missing}).save(missing)
    monkeypatch.setenv("S3_BUCKET_BLOCK", missing)
    state = ingest_flow(["2023-01"], require_bucket=True, return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BucketError), repr(error)
    message = str(error)
    assert message.startswith(
        f"S3 request refused: could not look up s3://{missing}/raw/green/2023-01.parquet "
        f"at {s3_endpoint.url} (attempt 1 of 3): "
    )
    assert "NoSuchBucket" in message
    assert s3_endpoint.secret_key not in message
