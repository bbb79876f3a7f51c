"""`make run` on its embedded defaults (SQLite, local files, no S3), then `make train` as a user
types it: the monthly retrains that reuse last run's validation month, and the runs that must
fail with their reason on the terminal.

The bootstrap trains 2023-01 -> 2023-02; then 2023-02 -> 2023-03 and 2023-03 -> 2023-04 must
complete (each month is prepared first for validation, then reused for training, through the
worker's result cache) and record exactly the months asked for.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client

from services.bootstrap.deployments import registered_names
from tests.e2e.doors import check_locked
from tests.e2e.native import (
    MODEL,
    base_environment,
    basic_auth,
    native_stack,
    stack_client,
    stack_urls,
    wait_for_prediction,
)
from tests.servers import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def make_train(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "train", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def months_of_version(client: MlflowClient, version: str) -> tuple[str, str]:
    run = client.get_run(client.get_model_version(MODEL, version).run_id)
    return run.data.params["train_month"], run.data.params["val_month"]


def test_make_train_rolls_the_months_forward_and_says_why_a_run_fails(
    tmp_path: Path, measurement: Callable[[str], None]
) -> None:
    env = base_environment(tmp_path)  # make run's defaults: SQLite, no S3
    prefect_api, mlflow_url, predict_url = stack_urls(env)
    log_file = tmp_path / "stack.log"
    with native_stack(env, log_file) as stack, stack_client(env) as credentials:
        first = wait_for_prediction(predict_url, stack, log_file)
        assert first["model"]["version"] == "1"

        # Every door asks for a key; the banner says where the key is, never what it is.
        auth = basic_auth(credentials["PREFECT_API_AUTH_STRING"])
        measurement("native defaults: " + check_locked(prefect_api, auth, mlflow_url))
        log = log_file.read_text(errors="replace")
        assert "credentials.env" in log and "PREFECT_API_AUTH_STRING" in log
        leaked = [key for key, value in credentials.items() if len(value) > 8 and value in log]
        assert not leaked, f"credentials in the stack's log: {leaked}"

        # Only what this stack can run is registered: no bucket, no train-s3, no ingest.
        with get_client(sync_client=True) as client:
            assert registered_names(client) == {
                "training/train-local",
                "monitoring/monitor-month",
                "monitoring-live/monitor-live",
                "batch/score-month",
            }

        registry = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
        for version, (train, val) in enumerate([("2023-02", "2023-03"), ("2023-03", "2023-04")], 2):
            done = make_train(env, f"TRAIN_MONTH={train}", f"VAL_MONTH={val}")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "Completed" in done.stdout
            assert months_of_version(registry, str(version)) == (train, val)
            tags = registry.get_model_version(MODEL, str(version)).tags
            assert (tags["train_month"], tags["val_month"]) == (train, val)
        assert months_of_version(registry, "1") == ("2023-01", "2023-02")
        measurement("native defaults: make train 2023-02/03 and 2023-03/04 both Completed")

        # A failed run says why on the terminal, not only in the worker's log.
        malformed = make_train(env, "TRAIN_MONTH=2023-13", "VAL_MONTH=2023-02")
        assert malformed.returncode != 0
        assert "Failed: " in malformed.stderr
        assert "month must be 1..12, got 13" in malformed.stderr

        same = make_train(env, "TRAIN_MONTH=2023-03", "VAL_MONTH=2023-03")
        assert same.returncode != 0
        assert "must come after the training month" in same.stderr

        s3_only = make_train(env, "DEPLOYMENT=training/train-s3")
        assert s3_only.returncode != 0
        assert "not registered" in s3_only.stderr and "S3_ENDPOINT_URL" in s3_only.stderr

        # Neither refused run registered anything.
        versions = registry.search_model_versions(f"name='{MODEL}'")
        assert sorted(int(v.version) for v in versions) == [1, 2, 3]
