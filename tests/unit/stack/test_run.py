"""The native launcher's environment: embedded defaults, opt-in Postgres / S3, env wins."""

from __future__ import annotations

import socket
from pathlib import Path

from stack.run import busy_ports, stack_environment, supervisor_command
from stack.settings import LocalStackSettings

APP = Path("/srv/app")
VENV_BIN = Path("/srv/app/.venv/bin")


def settings(**values: object) -> LocalStackSettings:
    return LocalStackSettings(_env_file=None, **values)


def env_for(stack: LocalStackSettings, environ: dict[str, str] | None = None) -> dict[str, str]:
    base = {"PATH": "/usr/bin"} if environ is None else environ
    return stack_environment(stack, base, app_dir=APP, venv_bin=VENV_BIN)


def test_embedded_defaults_live_under_nyctaxi_home_never_the_cwd(tmp_path: Path) -> None:
    env = env_for(settings(nyctaxi_home=tmp_path))
    assert env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{tmp_path}/stack/mlflow/mlflow.db"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == f"{tmp_path}/stack/mlflow/artifacts"
    assert env["PREFECT_HOME"] == f"{tmp_path}/stack/prefect"
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in env  # Prefect's SQLite in PREFECT_HOME
    assert "MLFLOW_S3_ENDPOINT_URL" not in env
    assert env["NYCTAXI_APP_DIR"] == str(APP)
    assert env["PREDICTION_LOG_DIR"] == f"{tmp_path}/prediction-log"


def test_clients_get_the_api_urls_of_the_configured_ports(tmp_path: Path) -> None:
    stack = settings(
        nyctaxi_home=tmp_path,
        prefect_port=14200,
        mlflow_port=15000,
        predict_port=19696,
        bind_host="0.0.0.0",
    )
    env = env_for(stack)
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:14200/api"
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:14200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    assert (env["PREFECT_PORT"], env["MLFLOW_PORT"], env["PREDICT_PORT"]) == (
        "14200",
        "15000",
        "19696",
    )
    assert env["BIND_HOST"] == env["PREDICT_HOST"] == "0.0.0.0"


def test_s3_endpoint_moves_mlflow_artifacts_to_the_bucket(tmp_path: Path) -> None:
    stack = settings(
        nyctaxi_home=tmp_path,
        s3_endpoint_url="http://127.0.0.1:9000",
        mlflow_artifacts_bucket="arts",
    )
    env = env_for(stack)
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://arts"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"


def test_values_from_the_environment_win_and_empty_ones_count_as_unset(tmp_path: Path) -> None:
    environ = {
        "PATH": "/usr/bin",
        "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@db/mlflow",
        "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://prefect@db/prefect",
        "PREFECT_UI_API_URL": "",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true",
    }
    env = env_for(settings(nyctaxi_home=tmp_path), environ)
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://mlflow@db/mlflow"
    assert (
        env["PREFECT_API_DATABASE_CONNECTION_URL"] == environ["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    assert env["PREFECT_UI_API_URL"] == env["PREFECT_API_URL"]
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_a_home_with_a_tilde_reaches_the_processes_expanded(tmp_path: Path) -> None:
    env = env_for(settings(nyctaxi_home="~/nyctaxi-state"), {"NYCTAXI_HOME": "~/nyctaxi-state"})
    assert env["NYCTAXI_HOME"] == str(Path.home() / "nyctaxi-state")
    assert env["PREFECT_HOME"].startswith(str(Path.home()))


def test_the_venv_comes_first_on_path(tmp_path: Path) -> None:
    env = env_for(settings(nyctaxi_home=tmp_path))
    assert env["PATH"].split(":")[:2] == [str(VENV_BIN), "/usr/bin"]


def test_the_supervisor_scales_workers_and_runs_the_bootstrap_once(tmp_path: Path) -> None:
    command = supervisor_command(
        settings(nyctaxi_home=tmp_path, nyctaxi_workers=3),
        python="/venv/bin/python",
        procfile=APP / "Procfile",
        processes=["worker"],
    )
    assert command[:3] == ["/venv/bin/python", "-m", "stack.supervisor"]
    assert command[command.index("--procfile") + 1] == str(APP / "Procfile")
    assert command[command.index("--concurrency") + 1] == "worker=3"
    assert command[command.index("--oneshot") + 1] == "bootstrap"
    assert command[-1] == "worker"


def test_flow_runs_beat_at_the_period_the_crash_detection_expects(tmp_path: Path) -> None:
    env = env_for(settings(nyctaxi_home=tmp_path))
    assert env["FLOW_RUN_HEARTBEAT_SECONDS"] == env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    environ = {"PATH": "/usr/bin", "FLOW_RUN_HEARTBEAT_SECONDS": "60"}
    env = env_for(settings(nyctaxi_home=tmp_path), environ)
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "60"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_busy_ports_names_the_process_whose_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = settings(
            nyctaxi_home=tmp_path,
            mlflow_port=port,
            prefect_port=free_port(),
            predict_port=free_port(),
        )
        assert busy_ports(stack, []) == [f"mlflow:{port}"]
        assert busy_ports(stack, ["prefect", "predict"]) == []


def test_the_servers_lock_their_doors_with_the_clients_credentials(tmp_path: Path) -> None:
    environ = {"PATH": "/usr/bin", "PREFECT_API_AUTH_STRING": "admin:secret"}
    env = env_for(settings(nyctaxi_home=tmp_path, prefect_port=14200), environ)
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == "admin:secret"
    assert env["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] == "true"
    origins = env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"].split(",")
    assert set(origins) == {"http://127.0.0.1:14200", "http://localhost:14200"}
    assert env["MLFLOW_AUTH_DATABASE_URI"] == f"sqlite:///{tmp_path}/stack/mlflow/auth.db"


def test_the_banner_says_where_to_log_in_but_never_a_password(tmp_path: Path) -> None:
    from stack.run import banner

    environ = {"PATH": "/usr/bin", "PREFECT_API_AUTH_STRING": "admin:s3cret-value"}
    environ |= {"MLFLOW_ADMIN_USERNAME": "admin", "MLFLOW_ADMIN_PASSWORD": "other-s3cret"}
    stack = settings(nyctaxi_home=tmp_path)
    text = banner(stack, env_for(stack, environ), tmp_path / "credentials.env")
    assert "s3cret" not in text
    assert "http://127.0.0.1:4200" in text and "http://127.0.0.1:5000" in text
    assert str(tmp_path / "credentials.env") in text
