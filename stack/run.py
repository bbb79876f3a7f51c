"""Native launcher (`make run`): resolve the stack's environment, then hand over to the
supervisor (stack/supervisor.py).

    python -m stack.run [PROCESS ...]      # default: every process of the Procfile

Embedded defaults when `.env` / the environment says nothing else: SQLite for Prefect and MLflow
and a local artifact folder, all under NYCTAXI_HOME/stack (never the cwd). Postgres or an S3
endpoint are used when PREFECT_API_DATABASE_CONNECTION_URL, MLFLOW_BACKEND_STORE_URI or
S3_ENDPOINT_URL are set. The real environment wins over `.env`.

Dask (README, Scale-out on Dask): DASK_LOCAL_WORKERS=N (N > 0) adds a local cluster to the
Procfile's processes: `dask scheduler` on tls://127.0.0.1:DASK_SCHEDULER_PORT (dashboard on
DASK_DASHBOARD_BIND:DASK_DASHBOARD_PORT) and N `dask worker`s, with mutual TLS files generated
once into NYCTAXI_HOME/dask-tls; the Prefect workers get its address (DASK_SCHEDULER_ADDRESS)
and the client's TLS variables. A DASK_SCHEDULER_ADDRESS of your own wins: no cluster is
started and the address is passed through as it is.

The supervisor starts every Procfile process and prefixes their logs; it restarts a process
that dies (with backoff, after killing what the dead one left behind) while the others keep
running, lets the one-shot bootstrap finish, and stops everything on Ctrl-C. The launcher
replaces itself with the supervisor (exec), so signals reach it directly.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from nyctaxi import dasktls, names
from nyctaxi.credentials import credentials_path
from stack.credentials import ensure_native_credentials
from stack.settings import LocalStackSettings

# Procfile process -> the setting holding the port it listens on.
PROCESS_PORTS = {"prefect": "prefect_port", "mlflow": "mlflow_port", "predict": "predict_port"}
# Procfile processes that run once: not restarted after exit 0.
ONESHOT = ("bootstrap",)
# The local Dask cluster's processes (not in the Procfile: only with DASK_LOCAL_WORKERS > 0).
DASK_SCHEDULER = "dask-scheduler"
DASK_WORKER = "dask-worker"
# Flow-run heartbeats (crash detection): the bootstrap's automation reads the period from
# FLOW_RUN_HEARTBEAT_SECONDS, the workers' flow runs from Prefect's own variable; one value.
HEARTBEAT_SECONDS = "30"


def stack_environment(
    settings: LocalStackSettings, environ: Mapping[str, str], *, app_dir: Path, venv_bin: Path
) -> dict[str, str]:
    """The environment every Procfile process gets: `environ` plus the stack's defaults."""
    state = settings.state_dir
    host = settings.local_host
    s3 = settings.s3_endpoint_url
    prefect_api = settings.prefect_api_url or f"http://{host}:{settings.prefect_port}/api"
    artifacts = (
        f"s3://{settings.mlflow_artifacts_bucket}" if s3 else str(state / "mlflow" / "artifacts")
    )
    defaults = {
        "NYCTAXI_APP_DIR": str(app_dir),
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_UI_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Locked doors: basic auth on every API route but /api/health, CSRF tokens for browser
        # sessions, CORS only for the UI's own origin.
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": ",".join(
            f"http://{name}:{settings.prefect_port}" for name in sorted({host, "localhost"})
        ),
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{state / 'mlflow' / 'auth.db'}",
        "MLFLOW_AUTH_CONFIG_DIR": str(state / "mlflow" / "auth-config"),
        # The prediction service reads the registered model as this account (Procfile).
        "MLFLOW_PREDICTOR_USERNAME": names.MLFLOW_PREDICTOR_USER,
        # The prediction service writes its log here and the worker's monitoring flows read it:
        # one folder for both (nyctaxi.predictionlog).
        names.PREDICTION_LOG_DIR_VARIABLE: str(
            settings.nyctaxi_home.expanduser() / names.PREDICTION_LOG_FOLDER
        ),
        # The worker asks for runs this often (default 10 s): the first model is served sooner.
        "PREFECT_WORKER_QUERY_SECONDS": "5",
        # The bootstrap runs on the workers' machine here, so it can tell orphaned runs.
        "BOOTSTRAP_CRASH_ORPHANED_RUNS": "true",
        "FLOW_RUN_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS,
        # The Prefect server answers 500 while its Postgres is unreachable: clients retry it.
        "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri
        or f"http://{host}:{settings.mlflow_port}",
        "MLFLOW_BACKEND_STORE_URI": settings.mlflow_backend_store_uri
        or f"sqlite:///{state / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": settings.mlflow_artifacts_destination or artifacts,
        # MLflow 3's job runner (GenAI scorers, trace archival) is not used here: it only costs
        # a dozen processes on a small machine.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
        # Idle OpenMP threads of a training run sleep instead of spinning: on a small machine
        # spinning threads starve the servers running beside it.
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    if s3:
        defaults["MLFLOW_S3_ENDPOINT_URL"] = s3
    env = dict(environ)
    for key, value in defaults.items():
        if not env.get(key):
            env[key] = value
    # The server checks the same `user:password` its clients send.
    env["PREFECT_SERVER_API_AUTH_STRING"] = env.get("PREFECT_API_AUTH_STRING", "")
    # Flow runs beat at the period the crash-detection automation expects.
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = env["FLOW_RUN_HEARTBEAT_SECONDS"]
    env.update(
        NYCTAXI_HOME=str(settings.nyctaxi_home.expanduser()),  # `~` from .env, expanded
        BIND_HOST=settings.bind_host,
        PREFECT_PORT=str(settings.prefect_port),
        MLFLOW_PORT=str(settings.mlflow_port),
        PREDICT_PORT=str(settings.predict_port),
        PREDICT_HOST=env.get("PREDICT_HOST") or settings.bind_host,
        MLFLOW_WORKERS=str(settings.mlflow_workers),
        PATH=os.pathsep.join([str(venv_bin), env.get("PATH", "")]),
    )
    # The local cluster's address and key replace any in the environment: they belong together.
    env.update(dask_client_environment(settings))
    return env


def dask_scheduler_address(settings: LocalStackSettings) -> str:
    """The local cluster's scheduler, as its clients and workers reach it."""
    return f"tls://{settings.local_host}:{settings.dask_scheduler_port}"


def dask_dashboard_url(settings: LocalStackSettings) -> str:
    host = settings.dask_dashboard_bind
    shown = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    return f"http://{shown}:{settings.dask_dashboard_port}/status"


def dask_client_environment(settings: LocalStackSettings) -> dict[str, str]:
    """What every process (the Prefect workers' flow runs) needs to use the local cluster;
    nothing without one."""
    if not settings.local_cluster:
        return {}
    return {
        "DASK_SCHEDULER_ADDRESS": dask_scheduler_address(settings),
        **dasktls.tls_environment(settings.dask_tls_dir, "client"),
    }


def dask_processes(settings: LocalStackSettings) -> dict[str, str]:
    """Procfile-style commands of the local cluster (none without one), each with its role's
    TLS variables in front."""
    if not settings.local_cluster:
        return {}
    tls = settings.dask_tls_dir
    host = settings.local_host
    origins = dasktls.dashboard_origins(
        {settings.dask_dashboard_bind, host, "localhost", "127.0.0.1"} - {"0.0.0.0", "::"},
        settings.dask_dashboard_port,
    )
    scheduler_env = dasktls.tls_environment(tls, "scheduler") | dasktls.dashboard_environment(
        origins
    )
    scheduler = [
        "dask", "scheduler",
        "--host", f"tls://{host}",
        "--port", str(settings.dask_scheduler_port),
        "--dashboard-address", f"{settings.dask_dashboard_bind}:{settings.dask_dashboard_port}",
    ]  # fmt: skip
    worker = [
        "dask", "worker", dask_scheduler_address(settings),
        "--host", host,
        "--nthreads", str(settings.dask_worker_nthreads),
        "--memory-limit", settings.dask_worker_memory_limit,
        # Its HTTP server (/health, metrics) on a free local port; no Bokeh pages.
        "--no-dashboard", "--dashboard-address", f"{host}:0",
        # Spilled data: beside the state folder, not in it (backups copy that folder).
        "--local-directory", str(settings.nyctaxi_home.expanduser() / "dask-scratch"),
    ]  # fmt: skip
    worker_env = dasktls.roles_environment(tls, ["worker", "client"])
    return {
        DASK_SCHEDULER: _command(scheduler_env, scheduler),
        DASK_WORKER: _command(worker_env, worker),
    }


def _command(env: Mapping[str, str], argv: list[str]) -> str:
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    return f"{assignments} exec {shlex.join(argv)}"


def supervisor_command(
    settings: LocalStackSettings, *, python: str, procfile: Path, processes: list[str]
) -> list[str]:
    """`python -m stack.supervisor ...`: it runs with the resolved environment, in the
    Procfile's folder, and reads no `.env`."""
    command = [python, "-m", "stack.supervisor", "--procfile", str(procfile)]
    command += ["--concurrency", f"worker={settings.nyctaxi_workers}"]
    for name in ONESHOT:
        command += ["--oneshot", name]
    cluster = dask_processes(settings)
    for name, line in cluster.items():
        command += ["--process", f"{name}: {line}"]
    if cluster:
        command += ["--concurrency", f"{DASK_WORKER}={settings.dask_local_workers}"]
    return command + processes


def busy_ports(settings: LocalStackSettings, processes: list[str]) -> list[str]:
    """'name:port' of each process to start whose port is taken already."""
    ports = [(name, getattr(settings, field)) for name, field in PROCESS_PORTS.items()]
    if settings.local_cluster:
        ports += [
            (DASK_SCHEDULER, settings.dask_scheduler_port),
            (DASK_SCHEDULER, settings.dask_dashboard_port),
        ]
    busy = []
    for name, port in ports:
        if processes and name not in processes:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((settings.local_host, port))
            except OSError:
                busy.append(f"{name}:{port}")
    return busy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole stack as local processes.")
    parser.add_argument("processes", nargs="*", help="Procfile processes (default: all)")
    parser.add_argument("--procfile", type=Path, default=Path("Procfile"))
    args = parser.parse_args(argv)

    procfile = args.procfile.resolve()
    app_dir = procfile.parent
    dotenv = {k: v for k, v in dotenv_values(app_dir / ".env").items() if v is not None}
    environ = {**dotenv, **os.environ}
    # Generated once; what the shell or `.env` sets wins over a generated value.
    credentials_file = credentials_path(environ)
    environ = {**ensure_native_credentials(credentials_file), **environ}
    settings = LocalStackSettings(**settings_input(environ))
    busy = busy_ports(settings, args.processes)
    if busy:
        print(  # noqa: T201 - the CLI's own output
            f"port(s) in use: {', '.join(busy)}. Stop what uses them or choose others "
            "(PREFECT_PORT, MLFLOW_PORT, PREDICT_PORT, DASK_SCHEDULER_PORT, DASK_DASHBOARD_PORT "
            "in .env).",
            file=sys.stderr,
        )
        return 2
    env = stack_environment(
        settings, environ, app_dir=app_dir, venv_bin=Path(sys.executable).parent
    )
    for folder in ("prefect", "mlflow/artifacts"):
        (settings.state_dir / folder).mkdir(parents=True, exist_ok=True)
    if settings.local_cluster:
        try:  # once: later starts keep them (and check them)
            dasktls.ensure_tls_files(settings.dask_tls_dir)
        except (dasktls.TlsFilesError, OSError) as error:
            print(f"Dask TLS files: {error}", file=sys.stderr)  # noqa: T201 - the CLI's output
            return 2
    print(banner(settings, env, credentials_file), flush=True)  # noqa: T201 - the CLI's output
    command = supervisor_command(
        settings, python=sys.executable, procfile=procfile, processes=args.processes
    )
    os.execve(sys.executable, command, env)
    return 0  # not reached: exec replaced this process


def banner(settings: LocalStackSettings, env: Mapping[str, str], credentials_file: Path) -> str:
    """Where the UIs are and how to log in; names the file with the passwords, never a value."""
    prefect_ui = env["PREFECT_API_URL"].removesuffix("/api")
    return "\n".join(
        [
            "nyctaxi stack (Ctrl-C stops everything)",
            f"  Prefect UI  {prefect_ui}  log in with PREFECT_API_AUTH_STRING (user:password)",
            f"  MLflow UI   {env['MLFLOW_TRACKING_URI']}  user {env.get('MLFLOW_ADMIN_USERNAME')},"
            " password MLFLOW_ADMIN_PASSWORD",
            f"  predict     http://{settings.local_host}:{settings.predict_port}/predict",
            dask_banner(settings, env),
            f"  credentials {credentials_file} (mode 0600; make targets and our CLIs read it)",
            f"  state       {settings.state_dir}",
        ]
    )


def dask_banner(settings: LocalStackSettings, env: Mapping[str, str]) -> str:
    if settings.local_cluster:
        return (
            f"  Dask        {dask_dashboard_url(settings)}  dashboard (read-only, no login); "
            f"scheduler {env['DASK_SCHEDULER_ADDRESS']}, {settings.dask_local_workers} worker(s), "
            f"mutual TLS with the files in {settings.dask_tls_dir}"
        )
    address = (settings.dask_scheduler_address or "").strip()
    if not address:
        return (
            "  Dask        none: tasks run in the flow runs (DASK_LOCAL_WORKERS=N starts N workers)"
        )
    warning = "" if dasktls.is_tls_address(address) else " (not tls://: no key asked for)"
    return f"  Dask        your scheduler {address}{warning}; no local cluster"


def settings_input(environ: Mapping[str, str]) -> dict[str, str]:
    """Settings fields found in `environ` (so `.env` values count, not only os.environ)."""
    fields = LocalStackSettings.model_fields
    return {name: environ[name.upper()] for name in fields if environ.get(name.upper())}


if __name__ == "__main__":
    sys.exit(main())
