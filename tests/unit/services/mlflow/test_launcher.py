"""The MLflow launcher without a server: the ini it writes, the settings it refuses, what it
execs, and the admin reconciliation on a real (SQLite) user store."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from services.mlflow import launcher
from services.mlflow.settings import MlflowServerSettings

ADMIN_PASSWORD = "admin-secret-%;#=x"  # characters configparser would otherwise mangle
REQUIRED = {
    "MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret",
    "MLFLOW_AUTH_DATABASE_URI": "postgresql://mlflow_auth:p%40ss@postgres:5432/mlflow_auth",
}
OPTIONAL = ("MLFLOW_ADMIN_USERNAME", "MLFLOW_AUTH_CONFIG_DIR")
# The image has psycopg2, which a driverless postgresql:// URI does not select in SQLAlchemy 2.1.
POSTGRES_WITH_DRIVER = "postgresql+psycopg2://mlflow_auth:p%40ss@postgres:5432/mlflow_auth"


class Execed(Exception):
    """Raised by the stand-in for os.execve, carrying what would have run."""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A complete launcher environment; tests delete or change variables from it."""
    for name in OPTIONAL:
        monkeypatch.delenv(name, raising=False)
    # main() sets it in os.environ; setting it first makes monkeypatch restore it afterwards.
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", "")
    monkeypatch.delenv("MLFLOW_AUTH_CONFIG_PATH")
    values = {**REQUIRED, "MLFLOW_AUTH_CONFIG_DIR": str(tmp_path / "conf")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_execve(path: str, args: list[str], env: dict[str, str]) -> None:
        calls.append((args, env))
        raise Execed

    monkeypatch.setattr(launcher.os, "execve", fake_execve)
    monkeypatch.setattr(launcher, "reconcile_admin", lambda settings: None)
    return calls


def test_ini_is_private_and_reads_back_unchanged_through_mlflow(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.auth.config import read_auth_config

    path = launcher.write_auth_config(MlflowServerSettings())
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert config.default_permission == "NO_PERMISSIONS"
    assert config.database_uri == POSTGRES_WITH_DRIVER
    assert (config.admin_username, config.admin_password) == ("admin", ADMIN_PASSWORD)
    assert config.authorization_function == launcher.AUTHORIZATION_FUNCTION


@pytest.mark.parametrize(
    ("configured", "used"),
    [
        (REQUIRED["MLFLOW_AUTH_DATABASE_URI"], POSTGRES_WITH_DRIVER),
        (POSTGRES_WITH_DRIVER, POSTGRES_WITH_DRIVER),
        ("sqlite:////state/mlflow/auth.db", "sqlite:////state/mlflow/auth.db"),
    ],
)
def test_a_postgres_uri_without_driver_gets_the_installed_one(
    configured: str, used: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_AUTH_DATABASE_URI", configured)
    assert MlflowServerSettings().database_uri() == used


def test_ini_goes_to_a_fresh_private_temp_folder_by_default(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_AUTH_CONFIG_DIR")
    monkeypatch.setattr(launcher.tempfile, "tempdir", str(tmp_path))
    first = launcher.write_auth_config(MlflowServerSettings())
    second = launcher.write_auth_config(MlflowServerSettings())
    assert first.parent != second.parent
    assert mode(first.parent) == 0o700
    assert mode(first) == 0o600


def test_an_older_ini_is_replaced_by_a_private_one(env: dict[str, str]) -> None:
    folder = Path(env["MLFLOW_AUTH_CONFIG_DIR"])
    folder.mkdir()
    (folder / launcher.CONFIG_FILE).write_text("[mlflow]\nadmin_password = old\n")
    (folder / launcher.CONFIG_FILE).chmod(0o644)
    path = launcher.write_auth_config(MlflowServerSettings())
    assert mode(path) == 0o600
    assert "old" not in path.read_text()
    assert [p.name for p in folder.iterdir()] == [launcher.CONFIG_FILE]


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_setting_is_refused_by_name(
    missing: str,
    env: dict[str, str],
    exec_calls: list[object],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(missing, "")  # empty counts as unset (compose's `${VAR:-}`)
    assert launcher.main(["--port", "5000"]) == launcher.EXIT_BAD_SETTINGS
    assert f"{missing} is not set" in caplog.text
    assert exec_calls == []
    assert not Path(env["MLFLOW_AUTH_CONFIG_DIR"]).exists()


@pytest.mark.parametrize(
    "password", ["short-pw", " padded-password ", "two\nline-password", "password1234"]
)
def test_an_unusable_admin_password_is_refused_without_echoing_it(
    password: str,
    env: dict[str, str],
    exec_calls: list[object],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MLFLOW_ADMIN_PASSWORD", password)
    assert launcher.main([]) == launcher.EXIT_BAD_SETTINGS
    assert "MLFLOW_ADMIN_PASSWORD" in caplog.text
    assert password.strip() not in caplog.text
    assert exec_calls == []


def test_execs_the_basic_auth_server_without_our_secrets_in_its_environment(
    env: dict[str, str],
    exec_calls: list[tuple[list[str], dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "would-override-the-ini")
    with pytest.raises(Execed):
        launcher.main(["--host", "0.0.0.0", "--port", "5000"])
    [(args, server_env)] = exec_calls
    assert args == [
        sys.executable,
        *("-m", "mlflow", "server", "--app-name", "basic-auth"),
        *("--host", "0.0.0.0", "--port", "5000"),
    ]
    config = Path(env["MLFLOW_AUTH_CONFIG_DIR"]) / launcher.CONFIG_FILE
    assert server_env["MLFLOW_AUTH_CONFIG_PATH"] == str(config)
    assert server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "flask-secret"
    for name in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_AUTH_DATABASE_URI", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert name not in server_env
    assert ADMIN_PASSWORD not in caplog.text


def test_a_failing_user_store_stops_the_start_without_leaking_secrets(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(settings: MlflowServerSettings) -> None:
        uri = settings.mlflow_auth_database_uri.get_secret_value()
        raise RuntimeError(f"could not connect to {uri} (password p@ss)")

    monkeypatch.setattr(launcher, "reconcile_admin", refuse)
    assert launcher.main([]) == 1
    assert list(Path(env["MLFLOW_AUTH_CONFIG_DIR"]).iterdir()) == []  # no password left behind
    assert "could not connect to ***" in caplog.text
    assert "p@ss" not in caplog.text
    assert "p%40ss" not in caplog.text


def test_a_sqlite_user_store_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "stack" / "mlflow" / "auth.db"
    assert launcher.make_sqlite_store_private(f"sqlite:///{path}") == path
    assert mode(path) == 0o600
    path.chmod(0o644)
    launcher.make_sqlite_store_private(f"sqlite:///{path}")
    assert mode(path) == 0o600
    assert launcher.make_sqlite_store_private(REQUIRED["MLFLOW_AUTH_DATABASE_URI"]) is None


def test_reconcile_sets_the_configured_admin_password(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{tmp_path / 'auth.db'}"
    monkeypatch.setenv("MLFLOW_AUTH_DATABASE_URI", uri)
    store = SqlAlchemyStore()
    store.init_db(uri)
    store.create_user("admin", "the-old-password", is_admin=False)

    launcher.reconcile_admin(MlflowServerSettings())

    assert store.authenticate_user("admin", ADMIN_PASSWORD)
    assert not store.authenticate_user("admin", "the-old-password")
    assert store.get_user("admin").is_admin


def test_reconcile_leaves_creating_a_new_admin_to_mlflow(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{tmp_path / 'auth.db'}"
    monkeypatch.setenv("MLFLOW_AUTH_DATABASE_URI", uri)
    launcher.reconcile_admin(MlflowServerSettings())
    store = SqlAlchemyStore()
    store.init_db(uri)
    assert not store.has_user("admin")
