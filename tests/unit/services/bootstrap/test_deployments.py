"""Bootstrap deployments: their months, the sources digest, which ones a stack registers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from services.bootstrap.deployments import (
    declared_deployments,
    months_of,
    runnable_deployments,
    sources_digest,
)
from services.bootstrap.settings import BootstrapSettings
from tests.servers import REPO_ROOT


def settings(**values: object) -> BootstrapSettings:
    return BootstrapSettings(_env_file=None, **values)


def test_months_of_a_deployment_with_and_without_fixed_months() -> None:
    today = date(2026, 11, 22)
    assert months_of({"train_month": "2023-01", "val_month": "2023-02"}, today) == [
        "2023-01",
        "2023-02",
    ]
    # empty months = the newest published ones, as the training flow resolves them
    assert months_of({"train_month": None, "val_month": None}, today) == ["2026-08", "2026-09"]
    assert months_of({"train_month": "2023-02", "val_month": None}, today) == [
        "2023-02",
        "2023-03",
    ]


def test_sources_digest_changes_with_anything_the_deployments_are_made_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NYCTAXI_APP_DIR", raising=False)
    (tmp_path / "flows").mkdir()
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text("deployments: []\n")
    flow_module = tmp_path / "flows" / "training.py"
    flow_module.write_text("def training_flow(train_month: str): ...\n")
    names = ["train-local"]
    first = sources_digest(prefect_file, names)
    assert sources_digest(prefect_file, names) == first  # stable
    (tmp_path / "README.md").write_text("docs do not count\n")
    assert sources_digest(prefect_file, names) == first
    flow_module.write_text("def training_flow(train_month: str, val_month: str): ...\n")
    second = sources_digest(prefect_file, names)
    assert second != first
    prefect_file.write_text("deployments: [{name: x}]\n")
    third = sources_digest(prefect_file, names)
    assert third != second
    # which deployments are registered, and the folder their pull step moves into
    assert sources_digest(prefect_file, [*names, "train-s3"]) != third
    monkeypatch.setenv("NYCTAXI_APP_DIR", "/somewhere/else")
    assert sources_digest(prefect_file, names) != third


def test_a_stack_without_s3_registers_only_the_deployments_that_need_no_bucket() -> None:
    declared = declared_deployments(REPO_ROOT / "prefect.yaml")
    everything = [d["name"] for d in declared]
    assert {"train-local", "train-s3", "ingest"} <= set(everything)
    assert runnable_deployments(declared, s3_enabled=True) == everything
    without_s3 = runnable_deployments(declared, s3_enabled=False)
    assert "train-local" in without_s3
    assert not {"train-s3", "ingest"} & set(without_s3)
    # the first run of a stack without S3 is one of those it registers
    assert settings().first_run_deployment.split("/")[1] in without_s3


def test_a_window_seeds_every_training_month_then_validation() -> None:
    parameters = {"train_from": "2022-11", "train_to": "2023-01", "val_month": "2023-02"}
    assert months_of(parameters, date(2026, 11, 30)) == [
        "2022-11",
        "2022-12",
        "2023-01",
        "2023-02",
    ]
