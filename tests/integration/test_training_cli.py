"""The training command on real months: in-process without a Prefect server, the flow with one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
KEYS = [
    "run_id",
    "model_name",
    "model_version",
    "alias",
    "reason",
    "val_rmse",
    "val_mae",
    "champion_rmse",
    "train_rows",
    "val_rows",
    "train_seconds",
    "train_month",
    "val_month",
    "train_from",
    "train_to",
    "engine",
    "workers",
    "seconds",
]


def train(model_name: str, env: dict[str, str]) -> tuple[dict[str, object], str]:
    """One run of the command; returns its JSON result and its log (stderr)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.training",
            "--train-month",
            "2023-01",
            "--val-month",
            "2023-02",
            "--model-name",
            model_name,
            "--json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_without_a_prefect_server_the_command_trains_in_process_and_caches_cleaned_months(
    pipeline_env: Path, mlflow_url: str
) -> None:
    model_name = f"cli-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}

    first, log = train(model_name, env)

    assert list(first) == KEYS
    assert (first["model_version"], first["alias"]) == ("1", "champion")
    assert "(in-process)" in log and "temporary server" not in log
    assert "# " + model_name + " v1: promoted to **champion**" in log  # the report, in the log
    cached = sorted((pipeline_env / "cache" / "cleaned").glob("prepare-*.pickle"))
    assert [path.name.split("-")[1:3] for path in cached] == [["2023", "01"], ["2023", "02"]]

    second, log = train(model_name, env)

    assert log.count("cleaned month from the cache") == 2
    assert (second["model_version"], second["alias"]) == ("2", "challenger")
    assert second["champion_rmse"] == pytest.approx(first["val_rmse"])
    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    run = client.get_run(str(second["run_id"]))
    assert (run.data.params["train_month"], run.data.params["val_month"]) == ("2023-01", "2023-02")
    version = client.get_model_version(model_name, "2")
    assert version.tags["val_month"] == "2023-02"
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"


def test_with_a_prefect_server_the_command_runs_the_flow_there(
    prefect_api: str, pipeline_env: Path, mlflow_url: str
) -> None:
    model_name = f"cli-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PREFECT_API_URL": prefect_api}

    result, log = train(model_name, env)

    assert list(result) == KEYS
    assert "(prefect)" in log
    assert "Beginning flow run" in log
    assert result["alias"] == "champion"
