"""`.env.example` documents every variable the compose file and the settings objects read."""

from __future__ import annotations

import re

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from nyctaxi.config import PipelineSettings
from services.bootstrap.settings import BootstrapSettings
from services.mlflow.settings import MlflowServerSettings
from services.predict.settings import PredictSettings
from stack.settings import LocalStackSettings
from tests.servers import REPO_ROOT


def documented() -> set[str]:
    """Names set (`NAME=`) or shown commented out (`#NAME=`) in .env.example."""
    text = (REPO_ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def environment_names(settings: type[BaseSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    names = set()
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            names.add(str(alias.choices[0]).upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(prefix + field_name.upper())
    return names


def test_every_compose_variable_is_documented() -> None:
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose))
    assert used, "no variables found: the pattern is wrong"
    assert used - documented() == set()


@pytest.mark.parametrize(
    "settings",
    [
        PipelineSettings,
        PredictSettings,
        BootstrapSettings,
        LocalStackSettings,
        MlflowServerSettings,
    ],
)
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    # PREFECT_FILE is the path of prefect.yaml inside the app, not a user setting.
    missing = environment_names(settings) - documented() - {"PREFECT_FILE"}
    assert missing == set(), f"{settings.__name__}: add these to .env.example"


def test_secrets_in_the_example_are_placeholders_never_usable_values() -> None:
    # `make env` replaces them with random values; a hand copy is refused by the preflight.
    text = (REPO_ROOT / ".env.example").read_text()
    for secret in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "PREFECT_API_AUTH_STRING"):
        assert re.search(rf"^{secret}=change-me$", text, flags=re.MULTILINE), secret
