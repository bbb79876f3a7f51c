"""Start `mlflow server --app-name basic-auth` from our settings (see services/mlflow/__init__.py).

`write_auth_config` and `reconcile_admin` are the two steps before the exec; `main` is the CLI.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError
from sqlalchemy.engine import make_url

from services.mlflow.settings import MlflowServerSettings, settings_problems

logger = logging.getLogger("services.mlflow")

CONFIG_FILE = "basic_auth.ini"
# Deny by default: a user sees only what the bootstrap (or an admin) granted.
DEFAULT_PERMISSION = "NO_PERMISSIONS"
AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"
# MLflow prefers these over the ini's admin_* keys; dropped so the ini stays the one source.
MLFLOW_ADMIN_OVERRIDES = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD")
# Ours, and the server only needs them through the ini: not handed on to its processes.
OWN_SECRETS = ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_AUTH_DATABASE_URI")
EXIT_BAD_SETTINGS = 2


def auth_config_text(settings: MlflowServerSettings) -> str:
    """The ini MLflow's basic-auth app reads at MLFLOW_AUTH_CONFIG_PATH."""
    values = {
        "default_permission": DEFAULT_PERMISSION,
        "database_uri": settings.database_uri(),
        "admin_username": settings.mlflow_admin_username,
        "admin_password": settings.mlflow_admin_password.get_secret_value(),
        "authorization_function": AUTHORIZATION_FUNCTION,
    }
    # MLflow reads the file with interpolation on, so a literal `%` (URL-encoded passwords in
    # the database URI have them) must be written as `%%`.
    parser = configparser.ConfigParser(interpolation=None)
    parser["mlflow"] = {key: value.replace("%", "%%") for key, value in values.items()}
    text = io.StringIO()
    parser.write(text)
    return text.getvalue()


def write_auth_config(settings: MlflowServerSettings) -> Path:
    """Write the ini, readable by this user only, into MLFLOW_AUTH_CONFIG_DIR or a fresh private
    temp folder; return its path. The server keeps reading it (every worker it restarts reads it
    again), so it stays in place after the exec."""
    if settings.mlflow_auth_config_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="nyctaxi-mlflow-auth-"))  # mode 0700
    else:
        folder = settings.mlflow_auth_config_dir
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    # Written beside the target and renamed over it: the file is 0600 from its first byte, and a
    # server (re)reading it never sees half of it.
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{CONFIG_FILE}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(auth_config_text(settings))
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def discard_auth_config(path: Path | None, settings: MlflowServerSettings) -> None:
    """Remove the ini of a start that failed: no server will read its admin password."""
    if path is None:
        return
    if settings.mlflow_auth_config_dir is None:
        shutil.rmtree(path.parent, ignore_errors=True)  # the temp folder made for it
    else:
        path.unlink(missing_ok=True)


def make_sqlite_store_private(database_uri: str) -> Path | None:
    """Create a SQLite user store readable by this user only (it holds password hashes; SQLite
    gives its journal files the same mode); return its path, None for a server database."""
    url = make_url(database_uri)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    path.chmod(0o600)  # an older store may have been created with the umask's mode
    return path


def reconcile_admin(settings: MlflowServerSettings) -> None:
    """Make an existing admin account match the configured password (and admin flag).

    MLflow creates the admin from the ini only while the user does not exist and ignores
    admin_password afterwards, so without this a changed MLFLOW_ADMIN_PASSWORD (or a regenerated
    credentials file) would lock the bootstrap out. A missing admin is left to MLflow's own
    start-up, which creates it.
    """
    # Heavy import (the whole auth app); it reads MLFLOW_AUTH_CONFIG_PATH, set before this runs.
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    username = settings.mlflow_admin_username
    password = settings.mlflow_admin_password.get_secret_value()
    store = SqlAlchemyStore()
    store.init_db(settings.database_uri())  # migrates the schema as MLflow's start-up would
    try:
        if not store.has_user(username, use_primary=True):
            logger.info("admin user %s not created yet: the server creates it", username)
            return
        if not store.authenticate_user(username, password, use_primary=True):
            store.update_user(username, password=password)
            logger.warning("admin user %s: password reset to MLFLOW_ADMIN_PASSWORD", username)
        if not store.get_user(username).is_admin:
            store.update_user(username, is_admin=True)
            logger.warning("admin user %s: admin flag restored", username)
    finally:
        store.engine.dispose()  # no connection survives into the server


def redact(error: BaseException, settings: MlflowServerSettings) -> str:
    """The error's text without our secrets: SQLAlchemy quotes a URI it cannot parse whole."""
    uri = settings.mlflow_auth_database_uri.get_secret_value()
    secrets = [uri, settings.database_uri(), settings.mlflow_admin_password.get_secret_value()]
    with contextlib.suppress(ValueError):  # an unparsable URI is covered by the whole-URI entry
        if password := urlsplit(uri).password:
            secrets += [password, unquote(password)]
    text = f"{type(error).__name__}: {error}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def server_environment(config_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in MLFLOW_ADMIN_OVERRIDES + OWN_SECRETS
    }
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(config_path)
    return env


def server_command(extra_args: list[str]) -> list[str]:
    # The interpreter running us: its MLflow is the one whose auth app we configured.
    return [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", *extra_args]


def load_settings() -> MlflowServerSettings | None:
    try:
        return MlflowServerSettings()
    except ValidationError as error:
        for problem in settings_problems(error):
            logger.error("cannot start MLflow with authentication: %s", problem)
        return None


def main(argv: list[str] | None = None) -> int:
    """`python -m services.mlflow [mlflow server args...]`; returns only on failure."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    extra_args = sys.argv[1:] if argv is None else argv
    settings = load_settings()
    if settings is None:
        return EXIT_BAD_SETTINGS
    config_path: Path | None = None
    try:
        config_path = write_auth_config(settings)
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(config_path)
        make_sqlite_store_private(settings.database_uri())
        reconcile_admin(settings)
    except Exception as error:  # e.g. the database is unreachable or the URI malformed
        logger.error("cannot start MLflow with authentication: %s", redact(error, settings))
        discard_auth_config(config_path, settings)
        return 1
    command = server_command(extra_args)
    # Only our fixed arguments: the caller's may hold a backend store URI with its password.
    logger.info("auth config %s; exec %s ...", config_path, " ".join(command[1:6]))
    os.execve(command[0], command, server_environment(config_path))
