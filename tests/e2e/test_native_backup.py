"""Backup, wipe, restore: the native stack gives back the same champion, runs, versions and
deployments, with secrets of its own.

The drill on `make run`'s defaults (SQLite, local artifacts), with a notification webhook so that
Prefect holds an encrypted block: the bootstrap trains the first champion; `make backup` while the
stack serves; Ctrl-C; a new, empty NYCTAXI_HOME (its credentials.env, generated on restore, holds
other secrets than the backed-up stack's); `make restore`; `make run` again: the same champion
(version and run) answers /predict, the same flow runs, deployments (ids), MLflow runs and
versions are there, the bootstrap trained nothing, and a restore onto the running stack is
refused.

The configured stores (Postgres databases, S3 buckets) and the Docker stack's backup logic on a
stand-in for compose need no whole stack: tests/integration/test_backup_stores.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest
from mlflow.tracking import MlflowClient
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client

from nyctaxi.credentials import parse_env_lines
from stack.backup_manifest import human_bytes, read_manifest
from tests.e2e.native import (
    MARKER,
    MODEL,
    assert_nothing_left,
    base_environment,
    native_stack,
    stack_client,
    stack_urls,
    training_runs,
    wait_for_final_state,
    wait_for_log,
    wait_for_prediction,
)
from tests.servers import REPO_ROOT
from tests.webhooks import webhook_receiver

pytestmark = [pytest.mark.e2e]


def make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def observe(mlflow_url: str) -> dict:
    """What a user sees through the APIs: champion, versions, runs, deployments, flow runs."""
    registry = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    champion = registry.get_model_version_by_alias(MODEL, "champion")
    experiments = [e.experiment_id for e in registry.search_experiments()]
    with get_client(sync_client=True) as client:
        deployments = {d.name: str(d.id) for d in client.read_deployments()}
        flow_runs = {str(r.id): r.state.type.value for r in client.read_flow_runs() if r.state}
    return {
        "champion": (champion.version, champion.run_id),
        "versions": sorted(v.version for v in registry.search_model_versions(f"name='{MODEL}'")),
        "mlflow_runs": sorted(r.info.run_id for r in registry.search_runs(experiments)),
        "deployments": deployments,
        "flow_runs": flow_runs,
    }


@pytest.mark.timeout(1800)
def test_native_backup_wipe_restore_serves_the_same_champion_without_retraining(
    tmp_path: Path, measurement: Callable[[str], None]
) -> None:
    with webhook_receiver() as hook:
        env = base_environment(tmp_path) | {"NOTIFY_WEBHOOK_URL": hook.url}
        _, mlflow_url, predict_url = stack_urls(env)
        log_file = tmp_path / "stack-1.log"
        with native_stack(env, log_file) as stack, stack_client(env) as old_secrets:
            wait_for_prediction(predict_url, stack, log_file)
            wait_for_log(log_file, "bootstrap done", count=1, process=stack)
            for run in training_runs():
                assert wait_for_final_state(run.id, log_file).state.is_completed()
            before = observe(mlflow_url)

            started = time.monotonic()
            backup_dir = tmp_path / "backups"
            made = make(env, "backup", "BACKUP_STACK=native", f"BACKUP_DIR={backup_dir}")
            backup_seconds = time.monotonic() - started
            assert made.returncode == 0, made.stdout + made.stderr
        assert_nothing_left(env[MARKER])
        backup = Path(made.stdout.split("backup: ", 1)[1].splitlines()[0])
        manifest = read_manifest(backup)
        assert manifest["facts"]["mlflow"]["aliases"] == {
            f"{MODEL}@champion": before["champion"][0]
        }
        assert manifest["facts"]["prefect"]["flow_runs"] == len(before["flow_runs"])
        assert manifest["facts"]["prefect"]["block_documents"] >= 1  # the webhook, encrypted
        assert not any(
            value in (backup / "manifest.json").read_text()
            for value in old_secrets.values()
            if len(value) > 8
        )

        # The wipe: a new, empty home. Its secrets are generated on restore, unlike the old ones.
        env |= {"NYCTAXI_HOME": str(tmp_path / "home-2"), MARKER: uuid4().hex}
        started = time.monotonic()
        restored = make(env, "restore", f"BACKUP={backup}")
        restore_seconds = time.monotonic() - started
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "webhook/nyctaxi-notify" in restored.stdout, restored.stdout  # dropped, re-made
        assert "WARNING" not in restored.stdout, restored.stdout
        new_secrets = parse_env_lines((tmp_path / "home-2" / "credentials.env").read_text())
        changed = [
            k
            for k in ("PREFECT_SERVER_ENCRYPTION_KEY", "MLFLOW_PREDICTOR_PASSWORD")
            if new_secrets[k] != old_secrets[k]
        ]
        assert len(changed) == 2, "the restored stack runs with secrets of its own"

        log_file = tmp_path / "stack-2.log"
        started = time.monotonic()
        with native_stack(env, log_file) as stack, stack_client(env):
            answer = wait_for_prediction(predict_url, stack, log_file)
            serve_seconds = time.monotonic() - started
            assert answer["model"]["version"] == before["champion"][0], answer
            wait_for_log(log_file, "bootstrap done", count=1, process=stack)
            assert "first training run: skip" in log_file.read_text(errors="replace")
            # Same ids too: deployments are restored, not registered anew (the bootstrap only
            # re-registers, in place, when prefect.yaml or flows/ changed since the backup).
            assert observe(mlflow_url) == before
            assert Webhook.load("nyctaxi-notify").url is not None  # saved again with the new key

            refused = make(env, "restore", f"BACKUP={backup}")
            assert refused.returncode != 0 and "the native stack is running" in refused.stderr
        assert_nothing_left(env[MARKER])

    measurement(
        f"native backup drill: backup {human_bytes(manifest['total_bytes'])} "
        f"({len(manifest['files'])} files) in {backup_seconds:.1f}s while serving; restore onto an "
        f"empty home {restore_seconds:.1f}s; restored stack served champion "
        f"v{before['champion'][0]} (same run) {serve_seconds:.0f}s after start, trained nothing"
    )
