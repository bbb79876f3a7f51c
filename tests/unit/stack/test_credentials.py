"""The native stack's credentials: generated once, private, found by every command."""

from __future__ import annotations

import stat
from pathlib import Path

from nyctaxi import credentials, names
from stack.credentials import NATIVE_SECRETS, ensure_native_credentials


def test_generated_once_private_and_with_the_names_the_clients_read(tmp_path: Path) -> None:
    path = tmp_path / "home" / names.CREDENTIALS_FILE
    first = ensure_native_credentials(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(NATIVE_SECRETS) <= set(first)
    assert first["MLFLOW_TRACKING_USERNAME"] == names.MLFLOW_TRAINER_USER
    assert first["MLFLOW_TRACKING_PASSWORD"] == first["MLFLOW_TRAINER_PASSWORD"]
    assert ensure_native_credentials(path) == first, "never regenerated"
    assert credentials.parse_env_lines(path.read_text()) == first


def test_a_file_from_an_older_release_only_gains_the_keys_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / names.CREDENTIALS_FILE
    path.write_text("PREFECT_API_AUTH_STRING=admin:old\n")
    values = ensure_native_credentials(path)
    assert values["PREFECT_API_AUTH_STRING"] == "admin:old"
    assert set(NATIVE_SECRETS) <= set(values)


def test_commands_load_them_without_overriding_what_is_set(tmp_path: Path) -> None:
    path = tmp_path / names.CREDENTIALS_FILE
    generated = ensure_native_credentials(path)
    environ = {"NYCTAXI_HOME": str(tmp_path), "PREFECT_API_AUTH_STRING": "me:mine"}
    added = credentials.load_native_credentials(environ)
    assert environ["PREFECT_API_AUTH_STRING"] == "me:mine"
    assert "PREFECT_API_AUTH_STRING" not in added
    assert environ["MLFLOW_TRACKING_PASSWORD"] == generated["MLFLOW_TRACKING_PASSWORD"]


def test_no_file_no_change(tmp_path: Path) -> None:
    environ = {"NYCTAXI_HOME": str(tmp_path)}
    assert credentials.load_native_credentials(environ) == []
    assert environ == {"NYCTAXI_HOME": str(tmp_path)}
