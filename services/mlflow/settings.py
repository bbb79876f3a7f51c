"""Settings of the MLflow server launcher (`python -m services.mlflow`).

Read from the environment; field names are the environment variables. Empty variables count
as unset (compose passes `${VAR:-}`), so a blank password is refused like a missing one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nyctaxi import names

# MLflow's own password policy (mlflow.utils.validation._validate_password): refusing a shorter
# one here names our variable instead of failing inside the server's admin bootstrap.
MIN_PASSWORD_LENGTH = 12
# Shipped in basic_auth.ini by older MLflow versions (GHSA-gq3w-7jj3-x7gr); MLflow refuses it.
LEGACY_DEFAULT_PASSWORD = "password1234"


def check_password(value: SecretStr) -> SecretStr:
    """Refuse passwords that the ini file (configparser strips whitespace around values and
    joins continuation lines) or HTTP basic auth would not carry unchanged."""
    secret = value.get_secret_value()
    if secret != secret.strip() or any(ord(char) < 32 or ord(char) == 127 for char in secret):
        raise ValueError("must not start or end with whitespace or contain control characters")
    if secret == LEGACY_DEFAULT_PASSWORD:
        raise ValueError("is the publicly known default of older MLflow versions")
    return value


class MlflowServerSettings(BaseSettings):
    """What the launcher needs to start `mlflow server --app-name basic-auth`."""

    # hide_input_in_errors: a validation error must never print a password.
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", env_ignore_empty=True, hide_input_in_errors=True
    )

    mlflow_admin_username: str = Field(names.MLFLOW_ADMIN_USER, min_length=1)
    mlflow_admin_password: SecretStr = Field(min_length=MIN_PASSWORD_LENGTH)
    # MLflow reads this variable itself (Flask session and CSRF key); it is checked here so a
    # missing one is refused with the others instead of failing inside the server.
    mlflow_flask_server_secret_key: SecretStr = Field(min_length=1)
    # A secret: the Postgres form carries the role's password.
    mlflow_auth_database_uri: SecretStr = Field(
        min_length=1, description="user store, e.g. postgresql://... or sqlite:////abs/auth.db"
    )
    mlflow_auth_config_dir: Path | None = Field(
        None, description="folder of the generated ini (mode 0700); default a fresh temp folder"
    )

    _password = field_validator("mlflow_admin_password")(check_password)

    def database_uri(self) -> str:
        """The user store's URI as SQLAlchemy must get it. A driverless `postgresql://` means
        psycopg (3) to SQLAlchemy 2.1, but the image ships psycopg2 (the tracking store's URI
        names it too), so such a URI gets psycopg2 unless psycopg is installed."""
        uri = self.mlflow_auth_database_uri.get_secret_value()
        if uri.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + uri.removeprefix("postgresql://")
        return uri


def settings_problems(error: ValidationError) -> list[str]:
    """One line per invalid setting, naming the variable and never echoing its value (pydantic's
    own message quotes the input, which would print a password)."""
    problems = []
    for item in error.errors():
        variable = str(item["loc"][0]).upper() if item["loc"] else "settings"
        reason = "is not set" if item["type"] == "missing" else item["msg"]
        reason = reason.removeprefix("Value error, ")
        problems.append(f"{variable} {reason}")
    return problems
