"""Credentials of the native stack (`make run`), generated once into NYCTAXI_HOME.

`$NYCTAXI_HOME/credentials.env` (mode 0600) holds the Prefect auth string, the key Prefect
encrypts block secrets with, the MLflow admin, trainer and predictor passwords and MLflow's
Flask secret, plus `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` of the trainer: the
names Prefect's and MLflow's own clients read. Written once, never rewritten: a later release
only appends the keys the file lacks. Reading it back is nyctaxi.credentials.
"""

from __future__ import annotations

from pathlib import Path

from nyctaxi import names
from nyctaxi.credentials import parse_env_lines
from stack import envfile

# The secrets of the native stack: the Docker stack's, minus the database and S3 passwords
# (SQLite and local files need none).
NATIVE_SECRETS = (
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_ENCRYPTION_KEY",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_TRAINER_PASSWORD",
    "MLFLOW_PREDICTOR_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)


def fresh_values(existing: dict[str, str]) -> dict[str, str]:
    """Values for the keys `existing` lacks (all of them for a new file)."""
    values = {name: envfile.SECRETS[name]() for name in NATIVE_SECRETS if name not in existing}
    trainer_password = existing.get("MLFLOW_TRAINER_PASSWORD") or values["MLFLOW_TRAINER_PASSWORD"]
    derived = {
        "MLFLOW_ADMIN_USERNAME": names.MLFLOW_ADMIN_USER,
        "MLFLOW_TRACKING_USERNAME": names.MLFLOW_TRAINER_USER,
        "MLFLOW_TRACKING_PASSWORD": trainer_password,
    }
    values.update({key: value for key, value in derived.items() if key not in existing})
    return values


def ensure_native_credentials(path: Path) -> dict[str, str]:
    """Create `path` (or add the keys it lacks) and return every credential in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = parse_env_lines(path.read_text()) if path.exists() else {}
    added = fresh_values(existing)
    if added:
        header = (
            ""
            if existing
            else (
                "# nyctaxi native stack credentials, generated once by `make run`. Keep private.\n"
            )
        )
        lines = "".join(f"{key}={value}\n" for key, value in added.items())
        envfile.write_private(path, header + lines, append=bool(existing))
    path.chmod(0o600)
    return {**existing, **added}
