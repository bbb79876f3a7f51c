"""The native stack (`make run`) end to end, on a real Postgres and a real S3 endpoint.

Starts `python -m stack.run` (what `make run` runs once the venv exists) with a throwaway
Postgres cluster for Prefect and MLflow, moto's S3 server standing in for MinIO and a local
webhook receiver, all on free loopback ports. Then: the bootstrap trains and the first model is
served (the time from start to the first good /predict is printed: the issue's bar is 180 s on
an otherwise idle machine), a deployment run triggered through the Prefect API trains a window
of months on make run's own Dask cluster (DASK_LOCAL_WORKERS=2) and registers a second
version, a run on a month that exists nowhere fails and the webhook hears of
it, Ctrl-C stops every process, and a restart serves the same champion without retraining.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient
from prefect.deployments import run_deployment

from tests.e2e.native import (
    MARKER,
    MODEL,
    assert_nothing_left,
    base_environment,
    log_tail,
    native_stack,
    post_ride,
    stack_client,
    stack_urls,
    training_runs,
    wait_for_final_state,
    wait_for_log,
    wait_for_prediction,
)
from tests.servers import S3Endpoint, free_port, moto_s3_server, postgres_cluster
from tests.webhooks import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def stack_environment(tmp_path: Path, pg_dsns: dict[str, str], s3: S3Endpoint, hook: str) -> dict:
    """The native stack on Postgres and an S3 endpoint, notifying `hook`."""
    env = base_environment(tmp_path)
    env.update(
        {
            "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{pg_dsns['prefect']}",
            "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{pg_dsns['mlflow']}",
            "S3_ENDPOINT_URL": s3.url,
            **s3.client_env(),
            "NOTIFY_WEBHOOK_URL": hook,
            # make run's own Dask cluster (mutual TLS): the flow runs' tasks and fits run there.
            "DASK_LOCAL_WORKERS": "2",
            "DASK_SCHEDULER_PORT": str(free_port()),
            "DASK_DASHBOARD_PORT": str(free_port()),
        }
    )
    return env


def raw_keys(s3: S3Endpoint) -> set[str]:
    client = boto3.client(
        "s3",
        endpoint_url=s3.url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
    )
    listing = client.list_objects_v2(Bucket="nyctaxi-raw", Prefix="raw/")
    return {item["Key"] for item in listing.get("Contents", [])}


@pytest.fixture
def backing_services(tmp_path: Path) -> Iterator[tuple[dict, S3Endpoint, WebhookReceiver]]:
    with (
        postgres_cluster() as pg,
        moto_s3_server(tmp_path) as s3,
        webhook_receiver() as hook,
    ):
        s3.create_bucket("nyctaxi-raw")
        s3.create_bucket("mlflow-artifacts")
        dsns = {name: pg.create_database(name) for name in ("prefect", "mlflow")}
        yield dsns, s3, hook


def test_native_stack_trains_serves_notifies_stops_cleanly_and_restarts_without_retraining(
    tmp_path: Path,
    backing_services: tuple[dict, S3Endpoint, WebhookReceiver],
    measurement: Callable[[str], None],
) -> None:
    dsns, s3, hook = backing_services
    env = stack_environment(tmp_path, dsns, s3, hook.url)
    prefect_api, mlflow_url, predict_url = stack_urls(env)
    log_file = tmp_path / "stack.log"

    started = time.monotonic()
    with native_stack(env, log_file) as stack, stack_client(env):
        first = wait_for_prediction(predict_url, stack, log_file)
        elapsed = time.monotonic() - started
        measurement(
            f"native stack (Postgres + S3): first good /predict {elapsed:.0f}s after start "
            f"(bar: 180 s on an idle machine; load average now {os.getloadavg()[0]:.1f})"
        )
        assert first["duration"] > 0
        assert first["model"] == {"name": MODEL, "version": "1", "alias": "champion"}

        # The bootstrap's first run: promoted, announced, trained on months it seeded to S3.
        promoted = hook.wait_for(
            lambda b: b.get("kind") == "champion-promoted", timeout=120, what="champion-promoted"
        )
        assert promoted["payload"]["version"] == "1"
        assert {"raw/green/2023-01.parquet", "raw/green/2023-02.parquet"} <= raw_keys(s3)

        # A deployment run triggered through the Prefect API: a window, on the local cluster.
        triggered = run_deployment(
            "training/train-s3",
            parameters={"train_from": "2023-02", "train_to": "2023-03", "val_month": "2023-04"},
            timeout=0,
            as_subflow=False,
        )
        done = wait_for_final_state(triggered.id, log_file)
        assert done.state.is_completed(), f"{done.state}\n{log_tail(log_file)}"
        assert "raw/green/2023-03.parquet" in raw_keys(s3)

        registry = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
        versions = registry.search_model_versions(f"name='{MODEL}'")
        assert sorted(v.version for v in versions) == ["1", "2"]
        champion = registry.get_model_version_by_alias(MODEL, "champion")
        assert "val_rmse" in champion.tags
        second = registry.get_model_version(MODEL, "2")
        assert set(second.aliases) & {"champion", "challenger"}
        fitted = registry.get_run(second.run_id).data
        assert (fitted.tags["engine"], fitted.metrics["workers"]) == ("dask", 2)
        assert (fitted.params["train_from"], fitted.params["train_to"]) == ("2023-02", "2023-03")
        served = post_ride(predict_url)
        assert served is not None and served["duration"] > 0

        # A run on a month that exists nowhere fails, and the webhook hears of it.
        broken = run_deployment(
            "training/train-s3",
            parameters={"train_month": "2031-01", "val_month": "2031-02"},
            timeout=0,
            as_subflow=False,
        )
        failed = wait_for_final_state(broken.id, log_file)
        assert failed.state.is_failed(), failed.state
        notice = hook.wait_for(
            lambda b: (
                b.get("kind") == "training-run-failed" and b["flow_run"]["name"] == failed.name
            ),
            timeout=120,
            what="training-run-failed",
        )
        assert "2031-01" in notice["flow_run"]["message"]
        runs_before_restart = len(training_runs())
        champion_version = champion.version

    assert stack.returncode is not None
    assert_nothing_left(env[MARKER])

    # Restart on the same state: the same champion is served, nothing is retrained.
    with native_stack(env, log_file) as stack, stack_client(env):
        again = wait_for_prediction(predict_url, stack, log_file)
        assert again["model"]["version"] == champion_version
        wait_for_log(log_file, "bootstrap done", count=2, process=stack)
        restart_log = log_file.read_text()
        assert "first training run: skip" in restart_log
        assert "deployments up to date" in restart_log
        assert len(training_runs()) == runs_before_restart
    assert_nothing_left(env[MARKER])
