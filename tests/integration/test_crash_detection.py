"""Fault drills: a flow run whose process dies is Crashed and notified; the next run completes.

A real Prefect server (behind basic auth, as in both stacks), the bootstrap's automations, a
real process worker and a deployment of a flow named like the training flow that sleeps:
- worker SIGKILL: the worker and its flow-run process are killed together, as when a container
  dies. Nobody is left to report the end of the run: it stops beating, and the crash-detection
  automation marks it Crashed after the missed heartbeats; the failure automation notifies the
  webhook. A new worker (the restarted container) runs the next run to completion.
- flow-run process SIGKILL: the worker sees its child die and reports the run Crashed itself.

Heartbeats at Prefect's minimum period (30 s) and 2 missed beats keep the first drill near a
minute; the stacks' defaults (30 s, 3 beats) are checked on `make run` by
tests/e2e/test_native_faults.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from services.bootstrap.bootstrap import bootstrap
from services.bootstrap.deployments import ensure_work_pool
from services.bootstrap.settings import BootstrapSettings
from tests.servers import (
    PULL_FROM_REPO,
    VENV_BIN,
    flow_run_pids,
    has_beaten,
    running_process,
    wait_until,
)
from tests.webhooks import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

HEARTBEAT_SECONDS = 30  # Prefect's minimum
MISSED_HEARTBEATS = 2
POOL = "crash-drill"  # its own pool: no other test's runs for this worker
DEPLOYMENT = "training/crash-drill"
LONG = 900.0  # seconds a run sleeps unless killed


@flow(name="training")  # the name the failure notification listens to
def sleepy_training(seconds: float = LONG) -> float:
    time.sleep(seconds)
    return seconds


@dataclass(frozen=True)
class Drill:
    api_url: str
    hook: WebhookReceiver
    logs: Path


@pytest.fixture
def drill(prefect_api: str, tmp_path: Path) -> Iterator[Drill]:
    """The bootstrap's automations (short heartbeats) and the drill's deployment."""
    with webhook_receiver() as hook:
        settings = BootstrapSettings(
            _env_file=None,
            prefect_api_url=prefect_api,
            mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",  # no MLflow server needed
            mlflow_admin_password=None,
            notify_webhook_url=hook.url,
            bootstrap_deploy=False,
            bootstrap_train=False,
            bootstrap_timeout_seconds=60,
            flow_run_heartbeat_seconds=HEARTBEAT_SECONDS,
            flow_run_missed_heartbeats=MISSED_HEARTBEATS,
        )
        bootstrap(settings)
        with get_client(sync_client=True) as client:
            ensure_work_pool(client, POOL)
            deployment_id = client.create_deployment(
                client.create_flow(sleepy_training),
                "crash-drill",
                work_pool_name=POOL,
                entrypoint="tests/integration/test_crash_detection.py:sleepy_training",
                pull_steps=PULL_FROM_REPO,
            )
        try:
            yield Drill(prefect_api, hook, tmp_path)
        finally:
            # The session's server is shared: other tests count the training deployments.
            with get_client(sync_client=True) as client:
                client.delete_deployment(deployment_id)


@contextlib.contextmanager
def process_worker(drill: Drill, name: str) -> Iterator[int]:
    """`prefect worker start` on the drill's pool, in its own process group; yields its PID."""
    env = {
        "PREFECT_API_URL": drill.api_url,
        "PREFECT_HOME": str(drill.logs / "prefect-home"),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    command = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
    with running_process(command, log_file=drill.logs / f"{name}.log", env=env) as worker:
        yield worker.pid


@contextlib.contextmanager
def killed_on_exit(flow_run_id: UUID) -> Iterator[None]:
    """Safety net: no flow-run process of this test outlives it."""
    try:
        yield
    finally:
        for pid in flow_run_pids(flow_run_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_run(seconds: float = LONG) -> FlowRun:
    return run_deployment(DEPLOYMENT, parameters={"seconds": seconds}, timeout=0, as_subflow=False)


def read_run(flow_run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def wait_for_state(flow_run_id: UUID, state: str, timeout: float) -> FlowRun:
    def reached() -> bool:
        run = read_run(flow_run_id)
        return run.state is not None and run.state.name == state

    wait_until(reached, timeout=timeout, what=f"flow run {state}", interval=1)
    return read_run(flow_run_id)


def notified(flow_run_id: UUID) -> Callable[[dict], bool]:
    resource = f"prefect.flow-run.{flow_run_id}"
    return lambda body: (
        body.get("kind") == "training-run-failed" and body["flow_run"]["id"] == resource
    )


def assert_next_run_completes() -> None:
    follow_up = start_run(seconds=1)
    with killed_on_exit(follow_up.id):
        done = wait_for_state(follow_up.id, "Completed", timeout=180)
    assert done.state is not None and done.state.is_completed()


def test_worker_sigkill_mid_run_is_crashed_by_missed_heartbeats_and_notified(
    drill: Drill, measurement: Callable[[str], None]
) -> None:
    window = HEARTBEAT_SECONDS * MISSED_HEARTBEATS
    with process_worker(drill, "worker-killed") as worker_pid:
        victim = start_run()
        with killed_on_exit(victim.id):
            wait_until(lambda: has_beaten(victim.id), timeout=180, what="a heartbeat", interval=1)
            [flow_run_pid] = flow_run_pids(victim.id)
            # The container dies: the worker's group and the flow run's (a session of its own).
            os.killpg(worker_pid, signal.SIGKILL)
            os.killpg(os.getpgid(flow_run_pid), signal.SIGKILL)
            killed = time.monotonic()
            wait_until(lambda: not flow_run_pids(victim.id), timeout=10, what="processes gone")

    assert read_run(victim.id).state.name == "Running"  # nobody left to say otherwise
    with process_worker(drill, "worker-restarted"), killed_on_exit(victim.id):
        crashed = wait_for_state(victim.id, "Crashed", timeout=window + 60)
        to_crashed = time.monotonic() - killed
        notice = drill.hook.wait_for(notified(victim.id), timeout=60, what="the crash")
        to_notified = time.monotonic() - killed
        assert_next_run_completes()

    measurement(
        f"worker SIGKILL mid-run (heartbeat {HEARTBEAT_SECONDS} s, {MISSED_HEARTBEATS} missed): "
        f"Crashed {to_crashed:.0f} s and notified {to_notified:.0f} s after the kill; "
        "next run Completed"
    )
    assert to_crashed <= window + 30, to_crashed  # last beat + window + evaluation (5 s)
    assert f"{MISSED_HEARTBEATS} missed heartbeats" in (crashed.state.message or "")
    assert notice["flow_run"]["state"] == "Crashed"
    assert "missed heartbeats" in notice["flow_run"]["message"]


def test_flow_run_process_sigkill_is_reported_crashed_by_its_worker_and_notified(
    drill: Drill, measurement: Callable[[str], None]
) -> None:
    with process_worker(drill, "worker"):
        victim = start_run()
        with killed_on_exit(victim.id):
            wait_until(
                lambda: bool(flow_run_pids(victim.id)) and read_run(victim.id).state.is_running(),
                timeout=180,
                what="the flow-run process running",
                interval=1,
            )
            for pid in flow_run_pids(victim.id):
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            crashed = wait_for_state(victim.id, "Crashed", timeout=60)
            to_crashed = time.monotonic() - killed
        notice = drill.hook.wait_for(notified(victim.id), timeout=60, what="the crash")
        to_notified = time.monotonic() - killed
        assert_next_run_completes()

    measurement(
        f"flow-run process SIGKILL: Crashed {to_crashed:.0f} s and notified "
        f"{to_notified:.0f} s after the kill (reported by the worker); next run Completed"
    )
    assert "-9" in (crashed.state.message or "") or "SIGKILL" in (crashed.state.message or "")
    assert notice["flow_run"]["state"] == "Crashed"
