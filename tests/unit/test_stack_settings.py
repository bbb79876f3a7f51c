"""Bootstrap settings: which deployment the first run uses, and the promotion event's resource."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from nyctaxi.stack.deployments import months_of, sources_digest
from nyctaxi.stack.settings import BootstrapSettings


def settings(**values: object) -> BootstrapSettings:
    return BootstrapSettings(_env_file=None, **values)


def test_first_run_reads_the_bucket_when_an_s3_endpoint_is_configured() -> None:
    assert settings().first_run_deployment == "training/train-local"
    assert settings(s3_endpoint_url="http://minio:9000").first_run_deployment == (
        "training/train-s3"
    )
    assert settings(bootstrap_deployment="training/custom").first_run_deployment == (
        "training/custom"
    )


def test_promotion_resource_follows_the_model_name() -> None:
    assert settings(model_name="m2").promoted_resource_id == "nyctaxi.model.m2"


def test_webhook_url_is_a_secret() -> None:
    hook = settings(notify_webhook_url="https://hooks.example/T0K3N")
    assert "T0K3N" not in repr(hook)


def test_months_of_a_deployment_with_and_without_fixed_months() -> None:
    today = date(2026, 11, 22)
    assert months_of({"train_month": "2023-01", "val_month": "2023-02"}, today) == [
        "2023-01",
        "2023-02",
    ]
    # empty months = the newest published ones, as the training flow resolves them
    assert months_of({"train_month": None, "val_month": None}, today) == ["2026-08", "2026-09"]


def test_sources_digest_changes_with_prefect_yaml_or_a_flow_module(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text("deployments: []\n")
    flow_module = tmp_path / "flows" / "training.py"
    flow_module.write_text("def training_flow(train_month: str): ...\n")
    first = sources_digest(prefect_file)
    assert sources_digest(prefect_file) == first  # stable
    (tmp_path / "README.md").write_text("docs do not count\n")
    assert sources_digest(prefect_file) == first
    flow_module.write_text("def training_flow(train_month: str, val_month: str): ...\n")
    second = sources_digest(prefect_file)
    assert second != first
    prefect_file.write_text("deployments: [{name: x}]\n")
    assert sources_digest(prefect_file) != second


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose passes `NOTIFY_WEBHOOK_URL: ${NOTIFY_WEBHOOK_URL:-}` when .env has none
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "")
    monkeypatch.setenv("S3_ENDPOINT_URL", "")
    loaded = BootstrapSettings(_env_file=None)
    assert loaded.notify_webhook_url is None
    assert not loaded.s3_enabled
