"""Window training on a real Dask cluster (2 worker processes) against in-process training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.servers import REPO_ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WINDOW = ["--train-from", "2022-01", "--train-to", "2022-03", "--val-month", "2023-01"]


def train(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.training", *args, "--json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_window_training_on_dask_scores_within_one_percent_of_in_process(
    prefect_api: str, dask_cluster: str, pipeline_env: Path, mlflow_url: str
) -> None:
    model_name = f"window-{uuid.uuid4().hex[:8]}"
    base = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    in_process_env = {k: v for k, v in base.items() if k != "PREFECT_API_URL"}
    # The flow on a Prefect server: its tasks on the cluster (DaskTaskRunner), xgboost.dask.
    dask_env = {**base, "PREFECT_API_URL": prefect_api, "DASK_SCHEDULER_ADDRESS": dask_cluster}

    here = result_of(train(in_process_env, *WINDOW, "--model-name", model_name))
    done = train(dask_env, *WINDOW, "--model-name", model_name)
    on_dask = result_of(done)

    assert (here["engine"], here["workers"]) == ("in-process", 1)
    assert (on_dask["engine"], on_dask["workers"]) == ("dask", 2)
    assert "Connecting to an existing Dask cluster" in done.stderr
    for result in (here, on_dask):
        assert (result["train_from"], result["train_to"], result["val_month"]) == (
            "2022-01",
            "2022-03",
            "2023-01",
        )
    assert here["train_rows"] == on_dask["train_rows"] > 190_000  # three months, every row
    ratio = float(on_dask["val_rmse"]) / float(here["val_rmse"])
    print(f"[dask] RMSE in-process {here['val_rmse']:.4f}, dask {on_dask['val_rmse']:.4f}")
    assert 0.99 <= ratio <= 1.01, f"RMSE ratio dask / in-process {ratio:.4f}"
    # Gated like any run: scored against the in-process champion on the same rows.
    assert on_dask["champion_rmse"] == pytest.approx(here["val_rmse"])
    run = MlflowClient(tracking_uri=mlflow_url).get_run(str(on_dask["run_id"]))
    assert run.data.tags["engine"] == "dask"
    assert run.data.metrics["workers"] == 2
    assert run.data.metrics["train_months"] == 3
    assert (run.data.params["train_from"], run.data.params["train_to"]) == ("2022-01", "2022-03")


def test_a_scheduler_that_is_not_there_fails_the_command_with_its_address(
    pipeline_env: Path,
) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"DASK_SCHEDULER_ADDRESS": address, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}

    done = train(env, *WINDOW)

    assert done.returncode != 0
    assert f"no Dask scheduler reachable at {address}" in done.stderr
    assert not done.stdout.strip()  # no JSON line: nothing was trained
