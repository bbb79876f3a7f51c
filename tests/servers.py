"""Real servers for integration and end-to-end tests.

Each helper is a context manager that starts one real server on a free loopback port, waits
for it to answer (polling with a deadline, never a fixed sleep) and stops it on exit. Logs go
to a file beside the server's state so a failing test can show them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "tlc"


def taxi_data_dir() -> Path:
    """Folder with the real TLC months (TAXI_DATA_DIR, else ../shared/data/tlc)."""
    return Path(os.environ.get("TAXI_DATA_DIR") or DEFAULT_DATA_DIR)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    log_file: Path | None = None,
) -> None:
    """Poll `condition` until it is true; fail with `what` (and the log's tail) after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    tail = ""
    if log_file is not None and log_file.exists():
        tail = "\n--- log tail ---\n" + "\n".join(log_file.read_text().splitlines()[-40:])
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s{tail}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@contextlib.contextmanager
def running_process(
    args: list[str], *, log_file: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process in its own process group; on exit stop the whole group."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd or REPO_ROOT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def prefect_server(
    home: Path,
    *,
    database_url: str | None = None,
    auth_string: str | None = None,
    encryption_key: str | None = None,
    ui: bool = False,
) -> Iterator[str]:
    """A real Prefect 3 server (SQLite under `home` unless `database_url`); yields the API URL.

    With `auth_string` ("user:password") it runs like both stacks do (`python -m
    services.prefect`): basic auth, CSRF
    protection, CORS limited to its own UI origin and a Fernet key from the environment
    (`encryption_key`, else a fresh one). With `ui` it serves the UI from a copy under `home`.
    """
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": "",
        **_prefect_ui_env(home, api_url, ui),
    }
    if auth_string:
        env |= _prefect_auth_env(api_url, auth_string, encryption_key)
    elif encryption_key:
        env["PREFECT_SERVER_ENCRYPTION_KEY"] = encryption_key
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    log_file = home / "prefect-server.log"
    # With auth: the stacks' launcher (basic auth answered before Prefect's CSRF check).
    launcher = [sys.executable, "-m", "services.prefect"] if auth_string else None
    args = launcher or [str(VENV_BIN / "prefect"), "server", "start"]
    with running_process(
        [*args, "--host", "127.0.0.1", "--port", str(port)], log_file=log_file, env=env
    ):
        # /api/health stays open under basic auth (as /api/ready does), so no credentials here.
        wait_until(
            lambda: http_ok(f"{api_url}/health"),
            timeout=300,
            what="Prefect server",
            log_file=log_file,
        )
        yield api_url


def _prefect_ui_env(home: Path, api_url: str, ui: bool) -> dict[str, str]:
    if not ui:
        return {"PREFECT_UI_ENABLED": "false"}
    # The server copies the UI bundle to rewrite its base path: a folder of this server's own,
    # not site-packages, which may be read-only and is shared by every test server.
    return {
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_UI_STATIC_DIRECTORY": str(home / "ui"),
    }


def _prefect_auth_env(api_url: str, auth_string: str, encryption_key: str | None) -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "PREFECT_SERVER_API_AUTH_STRING": auth_string,
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": api_url.removesuffix("/api"),
        # From the environment the key is never written to the database beside the secrets.
        "PREFECT_SERVER_ENCRYPTION_KEY": encryption_key or Fernet.generate_key().decode(),
    }


@contextlib.contextmanager
def mlflow_server(
    root: Path,
    *,
    backend_uri: str | None = None,
    artifacts_destination: str | None = None,
    env: dict[str, str] | None = None,
    auth: MlflowAuth | None = None,
) -> Iterator[str]:
    """A real MLflow tracking server with the artifact proxy; yields its URL.

    With `auth`, started the way both stacks start it (`python -m services.mlflow`): the
    basic-auth app with `auth`'s admin and a SQLite user store under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server_args = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend_uri or f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts_destination or str(root / "artifacts"),
        "--workers",
        "1",
    ]
    args = [str(VENV_BIN / "mlflow"), "server", *server_args]
    if auth is not None:
        args = [sys.executable, "-m", "services.mlflow", *server_args]
        env = {**auth.server_env(root), **(env or {})}
    log_file = root / "mlflow-server.log"
    # MLflow 3's job runner (GenAI scorers) is unused here and costs a dozen processes.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    with running_process(args, log_file=log_file, env=env):
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_ok(f"{url}/health"), timeout=420, what="MLflow server", log_file=log_file
        )
        yield url


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str = "testing-key"
    secret_key: str = "testing-secret"
    region: str = "us-east-1"

    def client_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        client.create_bucket(Bucket=name)


@contextlib.contextmanager
def moto_s3_server(root: Path) -> Iterator[S3Endpoint]:
    """moto's server mode standing in for MinIO: a real S3 HTTP endpoint on loopback."""
    port = free_port()
    log_file = root / "moto.log"
    args = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running_process(args, log_file=log_file):
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_ok(f"{url}/moto-api/"),
            timeout=60,
            what="moto S3 server",
            log_file=log_file,
        )
        yield S3Endpoint(url=url)


@dataclass(frozen=True)
class PostgresCluster:
    host: str
    port: int
    user: str
    data_dir: Path  # its socket folder and log file sit beside it

    def create_database(self, name: str) -> str:
        """Create a database; return its SQLAlchemy-style URL without a driver."""
        subprocess.run(
            [_pg_bin("createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, name],
            check=True,
            capture_output=True,
        )
        return f"{self.user}@{self.host}:{self.port}/{name}"

    def start(self) -> None:
        """Start the server (again: same port, socket folder and address). -l keeps its log in a
        file: a postmaster holding our pipes would block subprocess.run."""
        root = self.data_dir.parent
        options = f"-p {self.port} -k {root} -c listen_addresses={self.host}"
        _as_postgres(
            f"{_pg_bin('pg_ctl')} -D {self.data_dir} -l {root / 'postgres.log'} -w -t 60 "
            f"-o '{options}' start"
        )

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        """`fast`: a clean shutdown; `immediate`: as a crash (no checkpoint, connections cut,
        crash recovery on the next start)."""
        _as_postgres(f"{_pg_bin('pg_ctl')} -D {self.data_dir} -m {mode} -w stop", check=check)


def _as_postgres(command: str, *, check: bool = True) -> None:
    """Run a shell command as the `postgres` OS user (the server refuses to run as root)."""
    subprocess.run(["su", "postgres", "-c", command], check=check, capture_output=True, text=True)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise FileNotFoundError(
            f"PostgreSQL binary {name!r} not found (apt-get install postgresql)"
        )
    return str(candidates[-1])


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster owned by the `postgres` OS user (it refuses to run as root).

    It lives in its own folder under /tmp because pytest's tmp_path is private to root.
    """
    root = Path(tempfile.mkdtemp(prefix="nyctaxi-pg-"))
    data_dir = root / "pgdata"
    data_dir.mkdir()
    postgres_user = pwd.getpwnam("postgres")
    for path in (root, data_dir):
        os.chown(path, postgres_user.pw_uid, postgres_user.pw_gid)
    _as_postgres(f"{_pg_bin('initdb')} -D {data_dir} -U app --auth=trust")
    cluster = PostgresCluster(host="127.0.0.1", port=free_port(), user="app", data_dir=data_dir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(check=False)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class MlflowAuth:
    """Basic-auth settings of an MLflow server started by `mlflow_server(..., auth=...)`."""

    admin_username: str = "admin"
    admin_password: str = "test-admin-password"
    flask_secret_key: str = "test-flask-secret-key"

    def server_env(self, root: Path) -> dict[str, str]:
        """The launcher's environment: the user store and its ini live under `root`."""
        return {
            "MLFLOW_ADMIN_USERNAME": self.admin_username,
            "MLFLOW_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.flask_secret_key,
            "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root / 'auth.db'}",
            "MLFLOW_AUTH_CONFIG_DIR": str(root / "auth-config"),
        }


# One plain ride, valid for every model version the tests register.
RIDE = {
    "PULocationID": 43,
    "DOLocationID": 151,
    "trip_distance": 1.2,
    "lpep_pickup_datetime": "2023-03-01T08:15:00",
}


def flow_run_pids(flow_run_id: object) -> list[int]:
    """Live processes running this flow run (a process worker passes its id in their env)."""
    needle = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes() if entry.name.isdigit() else b""
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def has_beaten(flow_run_id: object) -> bool:
    """Whether the Prefect server (the current settings') has a heartbeat of this flow run."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            ),
            limit=1,
        )
    return bool(page.events)


# A deployment's pull steps for a worker on this machine: its runs import from the checkout.
PULL_FROM_REPO = [
    {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
]


def ride_payloads(trips: pd.DataFrame) -> list[dict[str, object]]:
    """TLC rows (the raw columns) as a client sends them to /predict."""
    return [
        {
            "PULocationID": int(row.PULocationID),
            "DOLocationID": int(row.DOLocationID),
            "trip_distance": float(row.trip_distance),
            "lpep_pickup_datetime": row.lpep_pickup_datetime.isoformat(),
        }
        for row in trips.itertuples()
    ]
