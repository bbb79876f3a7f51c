"""What users run over time, not just first runs: rolling retrains on real servers.

Every month in these tests is used in more than one role, and the cleaned months are result-
cached across runs (and across tests: one Prefect server and one result store per session), so
a cached value that carries the role it was first prepared in shows up here as a wrong
`train_month` / `val_month`, or as MLflow refusing to change a logged param.
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.training.flow import TrainingResult, training_flow
from nyctaxi.months import MonthPairError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture
def model_name() -> str:
    return f"nyc-taxi-sequence-{uuid.uuid4().hex[:8]}"


def train(model_name: str, **months: object) -> TrainingResult:
    """One run in-process on the real servers; it must end Completed."""
    state = training_flow(model_name=model_name, return_state=True, **months)
    assert state.is_completed(), f"{state.name}: {state.message}"
    return state.result()


def assert_recorded(mlflow_url: str, result: TrainingResult, train_month: str, val_month: str):
    """The run's params and tags and the version's tags say exactly the months asked for."""
    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    assert (result.train_month, result.val_month) == (train_month, val_month)
    run = client.get_run(result.run_id)
    assert run.data.params["train_month"] == train_month
    assert run.data.params["val_month"] == val_month
    assert len(run.data.tags["train_sha256"]) == 64
    assert len(run.data.tags["val_sha256"]) == 64
    assert run.data.tags["train_sha256"] != run.data.tags["val_sha256"]
    version = client.get_model_version(result.model_name, result.model_version)
    assert version.tags["train_month"] == train_month
    assert version.tags["val_month"] == val_month
    assert result.alias in version.aliases
    return version


def champion_of(mlflow_url: str, model_name: str) -> str:
    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    return str(client.get_model_version_by_alias(model_name, "champion").version)


def test_rolling_retrains_over_consecutive_months_then_the_same_pair_again(
    prefect_api: str, pipeline_env: Path, mlflow_url: str, model_name: str
) -> None:
    # 2023-02 and 2023-03 are each prepared as validation first, then used for training.
    chain = [("2023-01", "2023-02"), ("2023-02", "2023-03"), ("2023-03", "2023-04")]
    results = []
    for number, (train_month, val_month) in enumerate(chain, start=1):
        result = train(model_name, train_month=train_month, val_month=val_month)
        assert result.model_version == str(number)
        assert_recorded(mlflow_url, result, train_month, val_month)
        results.append(result)
    # The first version is champion; each later one is gated against it on its own month.
    assert results[0].alias == "champion"
    for result in results[1:]:
        assert result.champion_rmse is not None
        better = result.val_rmse < result.champion_rmse
        assert result.alias == ("champion" if better else "challenger")
    champion_before = champion_of(mlflow_url, model_name)

    # The same pair twice: the same data and code give the same score, which is not *better*.
    again = train(model_name, train_month="2023-03", val_month="2023-04")
    version = assert_recorded(mlflow_url, again, "2023-03", "2023-04")
    assert again.model_version == "4"
    assert again.val_rmse == pytest.approx(results[2].val_rmse, rel=1e-6)
    assert again.alias == "challenger"
    assert "does not beat" in version.tags["promotion"]
    assert champion_of(mlflow_url, model_name) == champion_before


def test_scheduled_runs_in_consecutive_months_retrain_on_last_months_validation_month(
    prefect_api: str, pipeline_env: Path, mlflow_url: str, model_name: str
) -> None:
    # A scheduled run leaves the months empty; `as_of` stands for the day it is scheduled on.
    # TLC publishes about two months late: on 2023-05-05 the newest month is 2023-03.
    may = train(model_name, train_month=None, val_month=None, as_of=date(2023, 5, 5))
    assert_recorded(mlflow_url, may, "2023-02", "2023-03")
    june = train(model_name, train_month=None, val_month=None, as_of=date(2023, 6, 5))
    assert_recorded(mlflow_url, june, "2023-03", "2023-04")
    assert (may.model_version, june.model_version) == ("1", "2")


@pytest.mark.parametrize(
    ("train_month", "val_month"), [("2023-03", "2023-03"), ("2023-04", "2023-03")]
)
def test_a_validation_month_not_after_the_training_month_is_refused_before_any_work(
    prefect_api: str,
    pipeline_env: Path,
    mlflow_url: str,
    model_name: str,
    train_month: str,
    val_month: str,
) -> None:
    state = training_flow(
        train_month=train_month, val_month=val_month, model_name=model_name, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(MonthPairError, match="must come after the training month"):
        state.result()
    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    assert client.search_model_versions(f"name='{model_name}'") == []
