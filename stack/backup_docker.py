"""Backup and restore of the Docker stack (docker-compose.yml). Standard library only: it runs
on the host's python3, like `make up`.

Databases: pg_dump (custom format) of prefect, mlflow and mlflow_auth, run in the `postgres`
container (`compose exec -T`, as the superuser of .env, whose password the container already
has: no secret on a command line). Buckets: stack/backup_s3.py in a one-off container of the
`buckets` service (platform image, boto3, MinIO's root keys from .env, the compose network),
with the backup folder bind-mounted and the host user's uid, so the files are the user's own.

Restore onto an empty stack: the app services must be stopped (`make down`); only the data
services start (postgres, minio, then the one-shot `databases` and `buckets` jobs, which create
the databases, roles and buckets with the passwords of this machine's .env); each dump goes
into its empty database as that database's role, the buckets are filled, and `make up` then
starts the rest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stack import backup_sql as sql
from stack.backup_manifest import BackupError, Component

logger = logging.getLogger("stack.backup")

DATABASES = ("prefect", "mlflow", "mlflow_auth")
DATA_SERVICES = ("postgres", "minio")
APP_SERVICES = ("prefect-server", "mlflow", "bootstrap", "worker", "predict")
IMAGE_SERVICES = ("postgres", "minio", "prefect-server", "mlflow", "worker", "predict")
S3_TOOL = Path(__file__).with_name("backup_s3.py")
HEALTH_TIMEOUT_SECONDS = 300
# Connect over TCP as the superuser with the password the container was started with.
PG_WRAPPER = (
    'PGPASSWORD="$POSTGRES_PASSWORD" exec "$0" --host=127.0.0.1 --username="$POSTGRES_USER" "$@"'
)
DESCRIPTIONS = {
    "prefect": "Prefect's database (pg_dump): flows, deployments, runs, blocks, automations",
    "mlflow": "MLflow's tracking store (pg_dump): experiments, runs, models, versions, aliases",
    "mlflow_auth": "MLflow's user store (pg_dump): users, password hashes, grants",
    "raw": "the raw-data bucket: TLC months as ingested",
    "artifacts": "the MLflow artifacts bucket: models and the files each run logged",
}


def default_compose() -> list[str]:
    """`docker compose` (v2) when it answers, else `docker-compose` (1.29)."""
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    except FileNotFoundError:
        return ["docker-compose"]
    return ["docker", "compose"] if probe.returncode == 0 else ["docker-compose"]


@dataclass
class Compose:
    """One compose project: the command prefix (with its -f / --env-file / -p), where to run
    it, and the settings compose reads (the shell's environment wins over the env file)."""

    command: list[str]
    project_dir: Path
    env_file: Path
    process_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(
        self,
        *args: str,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | int = subprocess.PIPE,
        check: bool = True,
        timeout: float = 3600,
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [*self.command, *args],
            cwd=self.project_dir,
            env=self.process_env,
            # Never the caller's terminal: `compose exec` would forward it.
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
        if check:
            sql.checked(result, f"compose {' '.join(args[:3])}")
        return result

    def setting(self, name: str, default: str = "") -> str:
        if self.process_env.get(name):
            return self.process_env[name]
        values = env_file_values(self.env_file)
        return values.get(name) or default

    def containers(self, service: str) -> list[dict[str, Any]]:
        """`docker inspect` of the service's containers (running or not)."""
        ids = self.run("ps", "-q", service, check=False).stdout.decode().split()
        if not ids:
            return []
        out = subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, env=self.process_env, check=False
        )
        return json.loads(out.stdout or b"[]")

    def running(self, service: str) -> bool:
        return any(c["State"].get("Running") for c in self.containers(service))

    def wait_healthy(self, service: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        status = "no container"
        while time.monotonic() < deadline:
            states = [c["State"] for c in self.containers(service)]
            status = ", ".join(s.get("Health", {}).get("Status", s["Status"]) for s in states)
            if states and all(s.get("Health", {}).get("Status") == "healthy" for s in states):
                return
            time.sleep(1)
        raise BackupError(f"{service} not healthy after {timeout:.0f}s ({status})")


def env_file_values(path: Path) -> dict[str, str]:
    from stack.envfile import assignments

    return assignments(path.read_text()) if path.is_file() else {}


class ComposePostgres:
    """pg_dump / pg_restore / psql inside the stack's postgres container."""

    def __init__(self, compose: Compose, database: str, role: str | None = None) -> None:
        self.compose = compose
        self.database = database
        self.role = role

    def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | int = subprocess.PIPE,
    ) -> subprocess.CompletedProcess[bytes]:
        command = ["exec", "-T", "postgres", "sh", "-c", PG_WRAPPER, tool]
        command += [f"--dbname={self.database}", *args]
        return self.compose.run(*command, stdin=stdin, stdout=stdout, check=False)


def buckets(compose: Compose) -> dict[str, str]:
    """Component name -> bucket name, as the compose file names them."""
    return {
        "raw": compose.setting("RAW_BUCKET", "nyctaxi-raw"),
        "artifacts": compose.setting("MLFLOW_ARTIFACTS_BUCKET", "mlflow-artifacts"),
    }


def components(compose: Compose) -> list[Component]:
    found = [
        Component(name, "postgres", f"postgres/{name}", DESCRIPTIONS[name]) for name in DATABASES
    ]
    found += [
        Component(name, "s3", f"s3://{bucket}", DESCRIPTIONS[name])
        for name, bucket in buckets(compose).items()
    ]
    return found


def s3_tool(
    compose: Compose,
    action: str,
    specs: Sequence[str],
    *,
    data: Path | None = None,
    writable: bool = False,
) -> dict[str, Any]:
    """Run stack/backup_s3.py in a one-off `buckets` container, as this user, with `data` at
    /backup (read-only unless `writable`); return its report (written to a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="nyctaxi-s3-") as scratch:
        command = ["run", "--rm", "--no-deps", "-T", "--user", f"{os.getuid()}:{os.getgid()}"]
        command += ["-v", f"{scratch}:/report", "-v", f"{S3_TOOL}:/backup-tool/backup_s3.py:ro"]
        if data is not None:
            command += ["-v", f"{data.resolve()}:/backup" + ("" if writable else ":ro")]
        command += ["buckets", "python", "/backup-tool/backup_s3.py", action]
        command += ["--folder", "/backup/buckets", "--report", "/report/report.json"]
        for spec in specs:
            command += ["--bucket", spec]
        compose.run(*command)
        return json.loads((Path(scratch) / "report.json").read_text())


def image_versions(compose: Compose) -> dict[str, str]:
    """The image each running service was started from."""
    images = {}
    for service in IMAGE_SERVICES:
        for container in compose.containers(service):
            images[service] = container["Config"]["Image"]
    return images


def app_services_running(compose: Compose) -> list[str]:
    return [service for service in APP_SERVICES if compose.running(service)]


def start_data_services(compose: Compose) -> None:
    """Postgres and MinIO, then the one-shot jobs that create databases, roles and buckets."""
    compose.run("up", "-d", *DATA_SERVICES)
    for service in DATA_SERVICES:
        compose.wait_healthy(service)


def run_one_shots(compose: Compose) -> None:
    for service in ("databases", "buckets"):
        compose.run("run", "--rm", "--no-deps", "-T", service)


def drop_databases(compose: Compose, names: Sequence[str]) -> None:
    """For a forced restore: the databases go; the `databases` job creates them again, empty."""
    admin = ComposePostgres(compose, "postgres")
    statements = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names]
    sql.psql(admin, statements, transaction=False)


def dump_all(compose: Compose, folder: Path) -> tuple[dict, str]:
    """pg_dump of every database into folder/<name>.dump; (facts, server version)."""
    facts: dict[str, Any] = {}
    version = ""
    for name in DATABASES:
        db = ComposePostgres(compose, name)
        sql.pg_dump(db, folder / f"{name}.dump")
        facts[name] = sql.pg_facts(db, [*sql.FACT_QUERIES[name], sql.SERVER_VERSION])
        version = str(facts[name].pop("server_version", version))
    return facts, version


def ensure_docker_tools(compose: Compose) -> None:
    if not S3_TOOL.is_file():
        raise BackupError(f"{S3_TOOL} is missing: the bucket copy runs it in a container")
    if shutil.which("docker", path=compose.process_env.get("PATH")) is None:
        raise BackupError("docker is not installed: the Docker stack's backup needs it")


def target_contents(compose: Compose, bucket_names: Mapping[str, str]) -> dict[str, int]:
    """Tables per database and objects per bucket of the (data services of the) stack."""
    contents = {name: sql.pg_table_count(ComposePostgres(compose, name)) for name in DATABASES}
    report = s3_tool(compose, "count", list(bucket_names.values()))
    for name, bucket in bucket_names.items():
        contents[name] = int(report["buckets"][bucket]["objects"])
    return contents


def ensure_platform_image(compose: Compose) -> None:
    """The bucket copy runs in the platform image: build it on a machine that lacks it."""
    image = compose.setting("NYCTAXI_PLATFORM_IMAGE", "nyctaxi/platform:local")
    probe = subprocess.run(
        ["docker", "image", "inspect", image],
        capture_output=True,
        env=compose.process_env,
        check=False,
    )
    if probe.returncode != 0:
        logger.info("building %s (the bucket copy runs in it)", image)
        compose.run("build", "buckets")
