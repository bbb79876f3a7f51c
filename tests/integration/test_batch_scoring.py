"""Batch scoring of real TLC months with a real registered champion: in this process and on a
real Dask cluster (the session's LocalCluster, two worker processes), with a worker killed
mid-month, through the command and through the flow on a real Prefect server.

The champion is trained on 2023-01 with the library and registered in a local MLflow store of
the module's own NYCTAXI_HOME (no server needed: the workers load a staged copy of the model).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from nyctaxi import batchio, batchrun, cleaning, evaluation, model, tracking, training
from nyctaxi.batch import BatchSettings, ChunkSummary, IncompleteMonthError
from nyctaxi.months import file_name
from tests.servers import REPO_ROOT, S3Endpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MONTH = "2023-02"
STARTED_QUEUE = "batch-test-started"
GO_EVENT = "batch-test-go"


@pytest.fixture(scope="module")
def champion(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A champion trained on 2023-01 (validation RMSE on 2023-02 tagged), in its own store."""
    home = tmp_path_factory.mktemp("batch-home")
    name = f"nyc-taxi-batch-{uuid.uuid4().hex[:8]}"
    env = {
        "NYCTAXI_HOME": str(home),
        "TAXI_DATA_DIR": str(data_dir),
        "TLC_ALLOW_DOWNLOAD": "false",
        "MODEL_NAME": name,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the local store under NYCTAXI_HOME
        tracking.configure(BatchSettings())
        train = cleaning.prepare_month(data_dir / file_name("2023-01"), "2023-01", "-").trips
        val = cleaning.prepare_month(data_dir / file_name(MONTH), MONTH, "-").trips
        booster = training.train_on_trips(train, training.TrainingParams(num_boost_round=30))
        with mlflow.start_run():
            info = model.log_model(booster, input_example=train, registered_model_name=name)
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.set_registered_model_alias(name, "champion", version)
        val_rmse = evaluation.rmse(cleaning.target(val), evaluation.predict_trips(booster, val))
        yield {**env, "VERSION": version, "VAL_RMSE": repr(val_rmse), "VAL_ROWS": str(len(val))}


@pytest.fixture
def batch_env(champion: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> BatchSettings:
    for key in ("NYCTAXI_HOME", "TAXI_DATA_DIR", "TLC_ALLOW_DOWNLOAD", "MODEL_NAME"):
        monkeypatch.setenv(key, champion[key])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    settings = BatchSettings()
    batchrun.configure(settings)
    return settings


def read_month(root: Path, month: str = MONTH) -> pd.DataFrame:
    frame = pd.read_parquet(batchio.month_dir(root, month))
    return frame.sort_values("ride_id", ignore_index=True)


def raw_rows(champion: dict[str, str], month: str = MONTH) -> int:
    return batchio.raw_row_count(Path(champion["TAXI_DATA_DIR"]) / file_name(month))


@pytest.fixture(scope="module")
def in_process_output(
    champion: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> pd.DataFrame:
    """2023-02 scored in this process: the reference the cluster's output must equal."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("in-process")
        for key in ("NYCTAXI_HOME", "MODEL_NAME"):
            patch.setenv(key, champion[key])
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("BATCH_OUTPUT_DIR", str(root))
        settings = BatchSettings()
        batchrun.configure(settings)
        model_ref = batchrun.resolve_model(settings.model_name)
        source = Path(champion["TAXI_DATA_DIR"]) / file_name(MONTH)
        scored = batchrun.run_month(source, MONTH, model_ref, settings)
    # Every raw row read; exactly the rows training would validate on carry a label, and the
    # RMSE over them is the champion's validation RMSE on this month.
    assert scored.summary.rows_read == raw_rows(champion)
    assert scored.summary.labelled == int(champion["VAL_ROWS"])
    assert scored.summary.rmse == pytest.approx(float(champion["VAL_RMSE"]), rel=1e-6)
    assert scored.engine == "in-process"
    return read_month(root)


def test_dask_writes_the_same_predictions_as_in_process_and_a_rerun_replaces_them(
    batch_env: BatchSettings,
    dask_cluster: str,
    in_process_output: pd.DataFrame,
    tmp_path: Path,
    champion: dict[str, str],
) -> None:
    settings = batch_env.model_copy(update={"batch_output_dir": tmp_path})
    model_ref = batchrun.resolve_model(settings.model_name)
    source = Path(champion["TAXI_DATA_DIR"]) / file_name(MONTH)
    first = batchrun.run_month(source, MONTH, model_ref, settings, address=dask_cluster)
    assert (first.engine, first.workers, first.summary.chunks) == ("dask", 2, 3)
    pd.testing.assert_frame_equal(read_month(tmp_path), in_process_output)
    parts = sorted(p.name for p in first.output.iterdir())

    again = batchrun.run_month(source, MONTH, model_ref, settings, address=dask_cluster)
    assert sorted(p.name for p in again.output.iterdir()) == parts
    rerun = read_month(tmp_path)
    assert rerun["ride_id"].is_unique and len(rerun) == first.summary.rows
    pd.testing.assert_frame_equal(rerun, in_process_output)
    assert [p.name for p in (tmp_path / batchio.STAGING).iterdir()] == [f"month={MONTH}.lock"]


def gated_chunk(job: batchrun.ChunkJob) -> ChunkSummary:
    """The real chunk function, held until the test says go: the test kills a worker while
    chunks are in flight. Announces the worker process it runs in."""
    from distributed import Event, Queue

    Queue(STARTED_QUEUE).put(os.getpid())
    if not Event(GO_EVENT).wait(timeout=120):
        raise TimeoutError("the test never said go")
    return batchrun.score_chunk(job)


def score_killing_a_worker(
    settings: BatchSettings, address: str, root: Path, champion: dict[str, str]
) -> batchrun.ScoredMonth:
    """Score 2023-02 in 7 chunks on the cluster; SIGKILL the worker process of the first chunk
    that starts, then let the chunks go on."""
    from distributed import Client, Event, Queue

    model_ref = batchrun.resolve_model(settings.model_name)
    model_dir = batchrun.stage_model(model_ref, settings.model_stage_dir())
    source = Path(champion["TAXI_DATA_DIR"]) / file_name(MONTH)
    with Client(address, set_as_default=False) as client, ThreadPoolExecutor(1) as pool:
        client.wait_for_workers(2, timeout=60)  # a worker killed earlier is back
        go, started = Event(GO_EVENT, client=client), Queue(STARTED_QUEUE, client=client)
        go.clear()
        running = pool.submit(
            batchrun.score_month,
            source,
            MONTH,
            model_ref,
            root,
            chunk_rows=10_000,
            client=client,
            model_dir=model_dir,
            chunk=gated_chunk,
        )
        killed = started.get(timeout=60)
        os.kill(killed, signal.SIGKILL)
        go.set()
        try:
            scored = running.result(timeout=180)
            assert killed not in client.run(os.getpid).values()  # it did die mid-month
            return scored
        finally:
            while started.qsize():
                started.get()
            client.wait_for_workers(2, timeout=60)


def test_a_worker_killed_mid_month_is_replaced_and_the_month_is_complete(
    batch_env: BatchSettings,
    dask_cluster: str,
    in_process_output: pd.DataFrame,
    tmp_path: Path,
    champion: dict[str, str],
) -> None:
    scored = score_killing_a_worker(batch_env, dask_cluster, tmp_path, champion)

    assert scored.summary.chunks == 7
    assert scored.summary.rows_read == raw_rows(champion)
    pd.testing.assert_frame_equal(read_month(tmp_path), in_process_output)


def test_a_lost_chunk_dask_gives_up_on_fails_the_run_and_publishes_nothing(
    batch_env: BatchSettings, dask_cluster: str, tmp_path: Path, champion: dict[str, str]
) -> None:
    from distributed import Client

    def allow_failures(dask_scheduler: object, count: int) -> int:
        previous = dask_scheduler.allowed_failures  # type: ignore[attr-defined]
        dask_scheduler.allowed_failures = count  # type: ignore[attr-defined]
        return int(previous)

    with Client(dask_cluster, set_as_default=False) as client:
        previous = client.run_on_scheduler(allow_failures, count=0)
        try:
            with pytest.raises(IncompleteMonthError, match="lost with its Dask workers"):
                score_killing_a_worker(batch_env, dask_cluster, tmp_path, champion)
        finally:
            client.run_on_scheduler(allow_failures, count=previous)
    assert not batchio.month_dir(tmp_path, MONTH).exists()


def test_the_command_prints_its_json_and_runs_without_prefect(
    batch_env: BatchSettings, dask_cluster: str, tmp_path: Path, champion: dict[str, str]
) -> None:
    env = {**os.environ, "BATCH_OUTPUT_DIR": str(tmp_path), "DASK_SCHEDULER_ADDRESS": dask_cluster}
    env.pop("PREFECT_API_URL", None)
    probe = "import runpy, sys; sys.argv = ['flows.batch', *sys.argv[1:]]\n" + (
        "try:\n    runpy.run_module('flows.batch', run_name='__main__')\n"
        "finally:\n    print('PREFECT_IMPORTED', 'prefect' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "--from", "2023-02", "--to", "2023-03", "--json"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PREFECT_IMPORTED False" in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"rows", "seconds", "rows_per_second", "output", "engine", "workers"} <= set(result)
    assert (result["engine"], result["workers"]) == ("dask", 2)
    assert result["model_version"] == champion["VERSION"]
    assert [m["month"] for m in result["months"]] == ["2023-02", "2023-03"]
    written = pd.read_parquet(tmp_path)
    assert len(written) == result["rows"] == sum(m["rows"] for m in result["months"])
    assert result["rows_read"] == raw_rows(champion, "2023-02") + raw_rows(champion, "2023-03")
    assert np.isclose(result["rows_per_second"], result["rows"] / result["seconds"], rtol=1e-3)


def test_the_flow_scores_on_prefect_and_publishes_the_summary(
    batch_env: BatchSettings,
    prefect_api: str,
    in_process_output: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.batch.flow import batch_flow
    from tests.integration.test_training_flow import read_markdown_artifact

    monkeypatch.setenv("BATCH_OUTPUT_DIR", str(tmp_path))
    result = batch_flow(month=MONTH)

    assert (result.engine, result.rows) == ("in-process", len(in_process_output))
    pd.testing.assert_frame_equal(read_month(tmp_path), in_process_output)
    report = read_markdown_artifact(f"batch-{MONTH}")
    assert f"v{result.model_version}" in report and f"{result.rows:,}" in report


def s3_client(endpoint: S3Endpoint) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name=endpoint.region,
    )


def test_in_a_stack_with_a_bucket_the_flow_copies_each_month_there_replacing_older_parts(
    batch_env: BatchSettings,
    bucket: str,
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.batch.flow import batch_flow

    prefix = f"predictions/green/month={MONTH}/"
    stale = f"{prefix}part-00099.parquet"  # left by an earlier run that wrote more parts
    s3 = s3_client(s3_endpoint)
    s3.put_object(Bucket=bucket, Key=stale, Body=b"old")
    monkeypatch.setenv("BATCH_OUTPUT_DIR", str(tmp_path))

    batch_flow(month=MONTH)

    local = sorted(p.name for p in batchio.month_dir(tmp_path, MONTH).glob("part-*.parquet"))
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    assert sorted(item["Key"] for item in listing) == [prefix + name for name in local]
    body = s3.get_object(Bucket=bucket, Key=prefix + local[0])["Body"].read()
    assert body == (batchio.month_dir(tmp_path, MONTH) / local[0]).read_bytes()
