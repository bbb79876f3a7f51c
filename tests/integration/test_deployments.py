"""`prefect --no-prompt deploy --all` registers prefect.yaml's deployments on a real server."""

from __future__ import annotations

import os
import subprocess

import pytest
from prefect.client.orchestration import get_client

from tests.servers import REPO_ROOT, VENV_BIN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def prefect_cli(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "NYCTAXI_APP_DIR": str(REPO_ROOT)}
    return subprocess.run(
        [str(VENV_BIN / "prefect"), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_deploy_all_registers_the_deployments_on_the_process_pool(prefect_api: str) -> None:
    pool = prefect_cli(
        prefect_api, "work-pool", "create", "nyctaxi-process", "--type", "process", "--overwrite"
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr

    deploy = prefect_cli(prefect_api, "--no-prompt", "deploy", "--all")
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr

    with get_client(sync_client=True) as client:
        deployments = {
            f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()
        }
    assert {
        "training/train-local",
        "training/train-s3",
        "ingest/ingest",
        "monitoring/monitor-month",
        "monitoring-live/monitor-live",
        "batch/score-month",
    } <= set(deployments)
    local = deployments["training/train-local"]
    assert local.work_pool_name == "nyctaxi-process"
    assert local.parameters["data_source"] == "local"
    assert local.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
    ]
    # Monitoring keeps the model fresh: no blind monthly retraining.
    assert local.schedules == [] and deployments["training/train-s3"].schedules == []
    [monthly] = deployments["monitoring/monitor-month"].schedules
    assert monthly.schedule.cron == "0 6 5 * *"
    assert monthly.active is True
    assert monthly.parameters == {"month": None}
    [daily] = deployments["monitoring-live/monitor-live"].schedules
    assert daily.schedule.cron == "0 7 * * *" and daily.active is True
    # Batch scoring runs when asked for (make batch): no schedule.
    assert deployments["batch/score-month"].schedules == []
