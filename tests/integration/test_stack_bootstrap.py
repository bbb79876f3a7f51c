"""The bootstrap's pieces against a real Prefect server and a real S3 endpoint (moto).

Deployments and the first training run need the flows and MLflow: the native e2e test covers them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import boto3
import pytest
from prefect import flow
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events import emit_event
from prefect.states import Completed, Running
from prefect.utilities.callables import parameter_schema
from prefect_aws import AwsCredentials, S3Bucket

from nyctaxi.names import DEGRADED_EVENT, MODEL_NAME, model_resource_id
from services.bootstrap import deployments, first_run
from services.bootstrap.automations import AUTOMATION_NAMES, CRASH_SILENT_RUNS, crash_silent_runs
from services.bootstrap.bootstrap import bootstrap
from services.bootstrap.retraining import RETRAIN_ON_DEGRADED
from services.bootstrap.settings import BootstrapSettings
from tests.servers import S3Endpoint, has_beaten, wait_until
from tests.webhooks import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as hook:
        yield hook


def stack_settings(
    prefect_api: str, s3: S3Endpoint, home: Path, webhook: str | None
) -> BootstrapSettings:
    return BootstrapSettings(
        _env_file=None,
        prefect_api_url=prefect_api,
        mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",  # no server needed: no training
        s3_endpoint_url=s3.url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        raw_bucket="stack-test-raw",
        mlflow_artifacts_bucket="stack-test-artifacts",
        notify_webhook_url=webhook,
        bootstrap_deploy=False,
        bootstrap_train=False,
        bootstrap_timeout_seconds=60,
    )


@flow(name="training")
def failing_training() -> None:
    raise RuntimeError('month "2031-01" not found')


def test_bootstrap_twice_sets_up_pool_blocks_buckets_and_one_copy_of_each_automation(
    prefect_api: str, s3_endpoint: S3Endpoint, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    settings = stack_settings(prefect_api, s3_endpoint, tmp_path, receiver.url)
    bootstrap(settings)
    bootstrap(settings)  # idempotent: nothing duplicated, nothing fails

    with get_client(sync_client=True) as client:
        assert client.read_work_pool("nyctaxi-process").type == "process"
        for name in (*AUTOMATION_NAMES, CRASH_SILENT_RUNS):
            assert len(client.read_automations_by_name(name)) == 1
    credentials = AwsCredentials.load("nyctaxi-minio")
    assert credentials.aws_client_parameters.endpoint_url == s3_endpoint.url
    assert S3Bucket.load("nyctaxi-raw").bucket_name == "stack-test-raw"
    assert Webhook.load("nyctaxi-notify").url.get_secret_value() == receiver.url
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.url,
        aws_access_key_id=s3_endpoint.access_key,
        aws_secret_access_key=s3_endpoint.secret_key,
        region_name=s3_endpoint.region,
    )
    buckets = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    assert {"stack-test-raw", "stack-test-artifacts"} <= buckets


def test_automations_call_the_webhook_on_promotion_and_on_a_failed_training_run(
    prefect_api: str, s3_endpoint: S3Endpoint, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    bootstrap(stack_settings(prefect_api, s3_endpoint, tmp_path, receiver.url))

    failed = failing_training(return_state=True)
    assert failed.is_failed()
    failure = receiver.wait_for(
        lambda body: body.get("kind") == "training-run-failed", timeout=90, what="failure"
    )
    assert failure["flow_run"]["state"] == "Failed"
    # Emitted only once the server has acted on an automation made by this bootstrap: an event
    # that arrives before the server has loaded the automation is (rightly) not matched later.
    emit_event(
        event="nyctaxi.model.promoted",
        resource={"prefect.resource.id": "nyctaxi.model.nyc-taxi-duration"},
        payload={"version": "4", "val_rmse": 4.9},
    )
    promoted = receiver.wait_for(
        lambda body: body.get("kind") == "champion-promoted", timeout=90, what="promotion"
    )
    assert promoted["payload"] == {"version": "4", "val_rmse": 4.9}
    assert "2031-01" in failure["flow_run"]["message"]


def test_without_a_webhook_url_the_automations_are_removed(
    prefect_api: str, s3_endpoint: S3Endpoint, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    bootstrap(stack_settings(prefect_api, s3_endpoint, tmp_path, receiver.url))
    bootstrap(stack_settings(prefect_api, s3_endpoint, tmp_path, None))
    with get_client(sync_client=True) as client:
        for name in AUTOMATION_NAMES:
            assert client.read_automations_by_name(name) == []
        # Crash detection is no notification: a dead run is Crashed with or without a webhook.
        [crash_detection] = client.read_automations_by_name(CRASH_SILENT_RUNS)
        assert crash_detection.enabled


def test_a_refused_model_version_is_notified_with_its_reason(
    prefect_api: str, s3_endpoint: S3Endpoint, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    bootstrap(stack_settings(prefect_api, s3_endpoint, tmp_path, receiver.url))
    payload = {"version": "5", "run_id": "0123abcd", "reason": "warm-up failed: ValueError"}

    def refused_notified() -> bool:
        # Sent again until heard: an event that reaches the server before it has loaded the
        # new automation is (rightly) never matched.
        emit_event(
            event="nyctaxi.model.refused",
            resource={"prefect.resource.id": "nyctaxi.model.nyc-taxi-duration"},
            payload=payload,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(body.get("kind") == "model-refused" for body in receiver.bodies):
                return True
            time.sleep(0.25)
        return False

    wait_until(refused_notified, timeout=90, what="model-refused notification", interval=0)
    body = next(body for body in receiver.bodies if body.get("kind") == "model-refused")
    assert body["model"] == "nyctaxi.model.nyc-taxi-duration"
    assert body["payload"] == payload


def test_deployments_are_registered_once_and_skipped_while_unchanged(
    prefect_api: str,
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = stack_settings(prefect_api, s3_endpoint, tmp_path, receiver.url).model_copy(
        update={"bootstrap_deploy": True, "bootstrap_redeploy": True}
    )
    bootstrap(settings)
    with get_client(sync_client=True) as client:
        assert deployments.registered_names(client) >= {
            "training/train-local",
            "training/train-s3",
            "ingest/ingest",
        }
        for name in ("training/train-local", "training/train-s3"):
            assert client.read_deployment_by_name(name).work_pool_name == "nyctaxi-process"
    caplog.set_level(logging.INFO, logger="services.bootstrap")
    bootstrap(settings.model_copy(update={"bootstrap_redeploy": False}))
    assert "deployments up to date" in caplog.text

    # The same server bootstrapped by a stack without an S3 store (`make run` on its defaults):
    # the deployments that need the bucket would fail on every run, so they go.
    caplog.clear()
    without_s3 = settings.model_copy(update={"bootstrap_redeploy": False, "s3_endpoint_url": None})
    bootstrap(without_s3)
    assert "deployments up to date" not in caplog.text
    with get_client(sync_client=True) as client:
        ours = {
            name
            for name in deployments.registered_names(client)
            if name.startswith(("training/", "ingest/"))
        }
    assert ours == {"training/train-local"}
    assert "removed deployment train-s3" in caplog.text


def test_running_run_whose_process_is_gone_is_marked_crashed(prefect_api: str) -> None:
    # A live stand-in for a flow-run process: its command line names prefect.
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)", "prefect.engine"]
    with get_client(sync_client=True) as client, subprocess.Popen(sleeper) as live:
        try:
            deployment_id = _failing_training_deployment(client, "orphan-test")
            gone = client.create_flow_run_from_deployment(deployment_id, state=Running())
            going = client.create_flow_run_from_deployment(deployment_id, state=Running())
            client.update_flow_run(gone.id, infrastructure_pid=str(_dead_pid()))
            client.update_flow_run(going.id, infrastructure_pid=str(live.pid))

            first_run.crash_orphaned_runs(client)

            assert client.read_flow_run(gone.id).state.type == StateType.CRASHED
            assert client.read_flow_run(going.id).state.type == StateType.RUNNING
        finally:
            live.kill()


def _failing_training_deployment(client: SyncPrefectClient, name: str) -> UUID:
    """A deployment of failing_training on the stack's work pool (created if missing)."""
    deployments.ensure_work_pool(client)
    return client.create_deployment(
        client.create_flow(failing_training),
        name,
        work_pool_name="nyctaxi-process",
        entrypoint="tests/integration/test_stack_bootstrap.py:failing_training",
    )


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_running_runs_that_stopped_beating_are_crashed_and_beating_ones_left_alone(
    prefect_api: str,
) -> None:
    heartbeat, missed = 3, 2  # a 6 s window (the settings hold the stacks to 30 s beats)
    with get_client(sync_client=True) as client:
        deployment_id = _failing_training_deployment(client, "silence-test")
        silent = client.create_flow_run_from_deployment(deployment_id, state=Running())
        beating = client.create_flow_run_from_deployment(deployment_id, state=Running())
        started = client.read_flow_run(silent.id).state.timestamp
        wait_until(
            lambda: (datetime.now(UTC) - started).total_seconds() > heartbeat * missed + 1,
            timeout=30,
            what="both runs older than the window",
        )
        beat = f"prefect.flow-run.{beating.id}"
        emit_event(event="prefect.flow-run.heartbeat", resource={"prefect.resource.id": beat})
        wait_until(lambda: has_beaten(beating.id), timeout=30, what="the heartbeat recorded")
        try:
            crash_silent_runs(client, heartbeat, missed)

            crashed = client.read_flow_run(silent.id).state
            assert crashed.type == StateType.CRASHED
            assert "2 missed heartbeats of 3 s" in (crashed.message or "")
            assert client.read_flow_run(beating.id).state.type == StateType.RUNNING
        finally:
            client.set_flow_run_state(beating.id, Completed(), force=True)


def _training_stand_in(client: SyncPrefectClient, name: str) -> UUID:
    """A training deployment like train-s3, registered without `prefect deploy` (slow): the real
    training flow's parameter schema (enforced) and train-s3's defaults. No worker runs it."""
    from flows.training.flow import training_flow  # heavy import: only this test needs it

    schema = parameter_schema(training_flow).model_dump_for_openapi()
    # The worker calls the flow with the automation's parameters: it must take each one.
    assert {"train_month", "val_month", "retrain_reason"} <= set(schema["properties"])
    deployments.ensure_work_pool(client)
    return client.create_deployment(
        client.create_flow_from_name("training"),
        name,
        work_pool_name="nyctaxi-process",
        entrypoint="flows.training.flow:training_flow",
        parameters={"train_month": "2023-01", "val_month": "2023-02", "data_source": "s3"},
        parameter_openapi_schema=schema,
        enforce_parameter_schema=True,
    )


def test_a_degraded_model_event_starts_a_training_run_on_the_month_before_and_the_month(
    prefect_api: str,
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
    measurement: Callable[[str], None],
) -> None:
    settings = stack_settings(prefect_api, s3_endpoint, tmp_path, None).model_copy(
        update={"bootstrap_deployment": "training/retrain-test"}  # no webhook: it is no notice
    )
    emitted: dict[str, datetime] = {}  # reason -> when the event was sent

    def degraded(model: str, reason: str) -> None:
        emitted[reason] = datetime.now(UTC)
        emit_event(
            event=DEGRADED_EVENT,
            resource={"prefect.resource.id": model_resource_id(model)},
            payload={
                "model": model,
                "version": "3",
                "month": "2021-02",
                "train_month": "2021-01",
                "val_month": "2021-02",
                "reason": reason,
                "rmse": 7.91,
                "val_rmse": 5.2,
                "rmse_ratio": 1.52,
                "drift_share": 0.6,
            },
        )

    with get_client(sync_client=True) as client:
        deployment_id = _training_stand_in(client, "retrain-test")

        def runs() -> list[FlowRun]:
            only_ours = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            return client.read_flow_runs(deployment_filter=only_ours)

        def reasons() -> set[str]:
            return {run.parameters.get("retrain_reason") for run in runs()}

        def retrained() -> bool:
            # Sent again until answered, each time with its own reason: an event that reaches
            # the server before it has loaded the new automation is (rightly) never matched.
            degraded(MODEL_NAME, f"rmse 7.91 > 1.10 x val_rmse 5.20 (event {len(emitted) + 1})")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if runs():
                    return True
                time.sleep(0.25)
            return False

        try:
            bootstrap(settings)
            bootstrap(settings)  # idempotent: one automation
            [automation] = client.read_automations_by_name(RETRAIN_ON_DEGRADED)
            assert automation.enabled

            wait_until(retrained, timeout=90, what="the retraining run", interval=0)
            first = min(runs(), key=lambda run: run.created)
            reason = first.parameters["retrain_reason"]
            assert first.parameters == {
                "train_month": "2021-01",
                "val_month": "2021-02",
                "retrain_reason": reason,
                "data_source": "s3",  # the deployment's default, untouched
            }
            assert reason in emitted
            assert first.state is not None and first.state.type == StateType.SCHEDULED
            measurement(
                f"retraining automation: {(first.created - emitted[reason]).total_seconds():.2f}"
                f" s from the degraded event to the training run ({len(emitted)} event(s) sent)"
            )

            # Another model's event, then ours as a marker: once the marker's run exists, the
            # server has dealt with the other event too (sent first, on the same connection).
            degraded("another-model", "another model")
            degraded(MODEL_NAME, "marker")
            wait_until(lambda: "marker" in reasons(), timeout=60, what="the marker's run")
            assert "another model" not in reasons()
            assert reasons() <= set(emitted)

            bootstrap(settings.model_copy(update={"retrain_on_degraded": False}))
            assert client.read_automations_by_name(RETRAIN_ON_DEGRADED) == []
        finally:
            for run in runs():
                client.delete_flow_run(run.id)
            client.delete_deployment(deployment_id)
