"""The training flow on real TLC months against a real Prefect server and a real MLflow server."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.training.flow import training_flow
from nyctaxi.training import TrainingParams

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture
def model_name() -> str:
    return f"nyc-taxi-duration-{uuid.uuid4().hex[:8]}"


def read_markdown_artifact(key: str) -> str:
    """The newest version of the artifact with this key (each run adds one)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert artifacts, f"no artifact with key {key}"
    return str(artifacts[0].data)


def test_training_flow_registers_a_champion_that_predicts_raw_rows(
    prefect_api: str, pipeline_env: Path, mlflow_url: str, model_name: str, data_dir: Path
) -> None:
    result = training_flow(train_month="2023-01", val_month="2023-02", model_name=model_name)

    assert result.alias == "champion"
    assert result.model_version == "1"
    assert result.train_rows > 50_000 and result.val_rows > 50_000
    assert 2.0 < result.val_rmse < 6.0

    mlflow.set_tracking_uri(mlflow_url)
    run = MlflowClient().get_run(result.run_id)
    assert run.data.params["train_month"] == "2023-01"
    assert run.data.params["val_month"] == "2023-02"
    assert len(run.data.tags["train_sha256"]) == 64
    assert run.data.metrics["val_rmse"] == pytest.approx(result.val_rmse)
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "plots")}
    assert artifacts == {"plots/residuals.png"}

    # The registered model is self-contained and takes the raw TLC columns, extras ignored.
    model = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    raw = pd.read_parquet(data_dir / "green_tripdata_2023-03.parquet").head(500)
    minutes = np.asarray(model.predict(raw))
    assert minutes.shape == (500,)
    assert np.isfinite(minutes).all()
    assert 5 < float(np.median(minutes)) < 30

    report = read_markdown_artifact(f"training-report-{model_name}")
    assert f"v{result.model_version}: promoted to **champion**" in report
    assert "2023-01" in report and "2023-02" in report
    assert result.run_id in report


def test_worse_model_does_not_take_the_champion_alias(
    prefect_api: str, pipeline_env: Path, mlflow_url: str, model_name: str
) -> None:
    first = training_flow(train_month="2023-01", val_month="2023-02", model_name=model_name)
    weak = TrainingParams(num_boost_round=2, max_depth=1)
    second = training_flow(
        train_month="2023-01", val_month="2023-02", model_name=model_name, hyperparams=weak
    )

    assert second.val_rmse > first.val_rmse
    assert second.alias == "challenger"
    assert "does not beat champion v1" in second.reason
    client = MlflowClient(tracking_uri=mlflow_url)
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    assert client.get_model_version_by_alias(model_name, "challenger").version == "2"
    report = read_markdown_artifact(f"training-report-{model_name}")
    assert "kept as **challenger**" in report
