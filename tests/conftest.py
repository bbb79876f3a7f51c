"""Shared fixtures: real servers for the integration tests, started once per session."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers import (
    S3Endpoint,
    mlflow_server,
    moto_s3_server,
    prefect_server,
    taxi_data_dir,
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    folder = taxi_data_dir()
    if not any(folder.glob("green_tripdata_*.parquet")):
        pytest.fail(f"no TLC months in {folder}: set TAXI_DATA_DIR to the folder holding them")
    return folder


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server behind basic auth and CSRF protection, as in both stacks.

    The test process's Prefect client points at it with the credentials; the credentials are
    also in os.environ for the processes tests start (CLIs, `prefect deploy`, workers), which
    get PREFECT_API_URL from the test itself.
    """
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    auth_string = f"test-{secrets.token_hex(4)}:{secrets.token_urlsafe(24)}"
    with (
        pytest.MonkeyPatch.context() as environ,
        prefect_server(tmp_path_factory.mktemp("prefect"), auth_string=auth_string) as api_url,
        temporary_settings(
            updates={PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth_string}
        ),
    ):
        environ.setenv("PREFECT_API_AUTH_STRING", auth_string)
        yield api_url


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    with moto_s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


@pytest.fixture
def pipeline_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_url: str, data_dir: Path
) -> Path:
    """Environment for PipelineSettings: real MLflow server, real data, a private NYCTAXI_HOME."""
    home = tmp_path / "nyctaxi-home"
    monkeypatch.setenv("NYCTAXI_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    monkeypatch.setenv("TAXI_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TLC_ALLOW_DOWNLOAD", "false")
    monkeypatch.delenv("MODEL_NAME", raising=False)
    return home


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests talk only to 127.0.0.1; a proxy from the environment must never see that traffic.
    monkeypatch.setenv(
        "NO_PROXY", ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY")]))
    )


# Lines the end-to-end tests measure (time to first /predict, Docker phases): shown in the run's
# summary even though pytest captures the output of passing tests.
_MEASUREMENTS: list[str] = []


@pytest.fixture
def measurement() -> Callable[[str], None]:
    return _MEASUREMENTS.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _MEASUREMENTS:
        terminalreporter.section("measurements")
        for line in _MEASUREMENTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[str]:
    """A real `distributed` cluster on this machine: a scheduler and 2 worker processes with one
    thread each (plain TCP: the stacks' mutual TLS is tested on its own). Yields its address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def bucket(prefect_api: str, s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the S3 endpoint and the two prefect-aws blocks pointing at it (the
    bucket block named by S3_BUCKET_BLOCK, as in the stacks); returns the bucket name."""
    name = f"raw-{uuid.uuid4().hex[:10]}"
    s3_endpoint.create_bucket(name)
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    credentials = AwsCredentials(
        aws_access_key_id=s3_endpoint.access_key,
        aws_secret_access_key=s3_endpoint.secret_key,
        region_name=s3_endpoint.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=s3_endpoint.url),
    )
    credentials.save(f"{name}-creds", overwrite=True)
    S3Bucket(bucket_name=name, credentials=credentials).save(name, overwrite=True)
    monkeypatch.setenv("S3_BUCKET_BLOCK", name)
    return name
