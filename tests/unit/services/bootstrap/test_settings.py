"""Bootstrap settings: which deployment the first run uses, and the promotion event's resource."""

from __future__ import annotations

import pytest

from services.bootstrap.settings import BootstrapSettings


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


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose passes `NOTIFY_WEBHOOK_URL: ${NOTIFY_WEBHOOK_URL:-}` when .env has none
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "")
    monkeypatch.setenv("S3_ENDPOINT_URL", "")
    loaded = BootstrapSettings(_env_file=None)
    assert loaded.notify_webhook_url is None
    assert not loaded.s3_enabled
