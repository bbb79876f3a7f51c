"""The Docker stack's backup drill, called from tests/e2e/test_docker_stack.py (which owns the
engine, the images and the `Stack` objects): back up the running stack, wipe it (`down -v`),
restore onto a fresh project with secrets of its own, `up`, and check that the same champion
answers and the same runs, versions and deployments are visible, with no new training run.

    backup, seconds = docker_backup.take_backup(stack, tmp_path / "backups")
    restored, seconds = docker_backup.restore_onto(fresh_stack, backup)

`drill(...)` does all of it and returns the line to print with the `measurement` fixture.
A `Stack` here is anything with `project`, `env_file`, `process_env`, `compose(*args)`,
`prediction()`, `champion()`, `model_versions()`, `training_runs()`, `prefect_post(path, body)`
and `container_states(service)` (test_docker_stack.Stack has them).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stack import backup_docker
from stack.backup_manifest import BackupError, human_bytes, read_manifest
from stack.backup_stacks import Restored, restore_docker
from stack.backup_stacks import backup_docker as take_docker_backup
from tests.servers import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
MODEL = "nyc-taxi-duration"
# Encrypted with the backed-up stack's PREFECT_SERVER_ENCRYPTION_KEY: dropped on a restore onto
# other secrets, saved again by the bootstrap.
STORAGE_BLOCKS = {"block:aws-credentials/nyctaxi-minio", "block:s3-bucket/nyctaxi-raw"}


def compose_of(stack: Any, compose_command: list[str]) -> backup_docker.Compose:
    """The stack's compose project as stack.backup_docker drives it (the same -f, --env-file
    and -p as the test's own commands)."""
    command = [*compose_command, "-f", str(COMPOSE_FILE), "--env-file", str(stack.env_file)]
    command += ["-p", stack.project]
    return backup_docker.Compose(command, REPO_ROOT, Path(stack.env_file), dict(stack.process_env))


def take_backup(stack: Any, into: Path, compose_command: list[str]) -> tuple[Path, float]:
    started = time.monotonic()
    path = take_docker_backup(compose_of(stack, compose_command), into)
    return path, time.monotonic() - started


def restore_onto(
    stack: Any, backup: Path, compose_command: list[str], *, force: bool = False
) -> tuple[Restored, float]:
    started = time.monotonic()
    done = restore_docker(compose_of(stack, compose_command), backup, force=force)
    return done, time.monotonic() - started


def deployments(stack: Any) -> dict[str, str]:
    response = stack.prefect_post("/api/deployments/filter", {})
    response.raise_for_status()
    return {item["name"]: item["id"] for item in response.json()}


def observe(stack: Any) -> dict[str, Any]:
    """What users see: champion (version, run), versions, training runs, deployments."""
    champion, reason = stack.champion()
    assert champion is not None, reason
    return {
        "champion": (champion["version"], champion["run_id"]),
        "versions": stack.model_versions(),
        "training_runs": stack.training_runs(),
        "deployments": deployments(stack),
    }


def check_backup(backup: Path, before: dict[str, Any]) -> dict[str, Any]:
    """The manifest says what the stack held: the assertions to make on a fresh backup."""
    manifest = read_manifest(backup)
    assert manifest["stack"] == "docker"
    assert {c["name"] for c in manifest["components"]} == {
        "prefect",
        "mlflow",
        "mlflow_auth",
        "raw",
        "artifacts",
    }
    facts = manifest["facts"]
    assert facts["mlflow"]["aliases"][f"{MODEL}@champion"] == before["champion"][0]
    assert facts["mlflow"]["model_versions"] == len(before["versions"])
    assert facts["prefect"]["flow_runs"] >= len(before["training_runs"])
    assert facts["prefect"]["deployments"] == len(before["deployments"])
    assert facts["raw"]["objects"] >= 2 and facts["artifacts"]["objects"] >= 1
    assert manifest["versions"]["prefect"] and manifest["versions"]["mlflow"]
    assert manifest["versions"]["postgres"] and manifest["versions"]["images"]["minio"]
    assert not manifest["secrets"]["included"]
    assert not (backup / "secrets.env").exists()
    assert backup.stat().st_mode & 0o777 == 0o700
    return manifest


def check_corrupt_refused(backup: Path, fresh: Any, compose_command: list[str]) -> None:
    """A copy with one flipped byte is refused, naming the file, before anything starts."""
    corrupt = backup.with_name(backup.name + "-corrupt")
    shutil.copytree(backup, corrupt)
    dump = corrupt / "mlflow.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"corrupt backup: mlflow\.dump: sha256 differs"):
        restore_onto(fresh, corrupt, compose_command)
    assert not fresh.compose("ps", "-q").split(), "a refused restore started containers"
    shutil.rmtree(corrupt)


def drill(
    source: Any,
    fresh: Any,
    tmp_path: Path,
    compose_command: list[str],
    wait_for: Callable[..., Any],
    *,
    deadline: float = 900,
) -> str:
    """Backup `source` (up, trained), wipe it (`down -v`), restore onto `fresh` (another
    project, .env with other secrets, nothing started), `up`, compare. Returns the figures."""
    before = observe(source)
    backup, backup_seconds = take_backup(source, tmp_path / "backups", compose_command)
    manifest = check_backup(backup, before)
    source.compose("down", "-v", timeout=300)  # the wipe

    check_corrupt_refused(backup, fresh, compose_command)
    done, restore_seconds = restore_onto(fresh, backup, compose_command)
    assert done.warnings == [], done.warnings
    assert set(done.dropped_blocks) >= STORAGE_BLOCKS, done.dropped_blocks  # other key
    started = time.monotonic()
    fresh.compose("up", "-d", timeout=deadline)
    answer = wait_for("POST /predict after the restore", fresh.prediction, deadline)
    serve_seconds = time.monotonic() - started
    assert answer["model"]["version"] == before["champion"][0], answer
    after = observe(fresh)
    assert after == before, (before, after)  # same champion and run, versions, runs, deployments
    states = fresh.container_states("bootstrap")
    assert [s["ExitCode"] for s in states] == [0], f"bootstrap: {states}"  # blocks saved again

    with pytest.raises(BackupError, match="make down` first"):
        restore_onto(fresh, backup, compose_command)
    return (
        f"docker backup drill: backup {human_bytes(manifest['total_bytes'])} "
        f"({len(manifest['files'])} files) in {backup_seconds:.1f}s; restore onto a fresh project "
        f"with other secrets {restore_seconds:.1f}s; champion v{before['champion'][0]} (same run) "
        f"served {serve_seconds:.0f}s after `up`; no new training run"
    )


# -- a stand-in for docker and compose, for the backup's logic without an engine ------------------

# Runs what `docker compose` would run in the containers on this machine instead: `exec -T
# postgres CMD` against a local cluster with the postgres service's environment, the one-shot
# jobs (`databases`: services/postgres/init-databases.sh; `buckets`: services.buckets) against it
# and an S3 endpoint, and `run ... buckets python /backup-tool/backup_s3.py ...` with the bind
# mounts (-v HOST:CONTAINER) mapped back to host paths. `ps`, `up`, `docker inspect` keep a list
# of "running" services in STAND_IN_STATE/running.json. It proves the backup's own logic, not
# Docker: the Docker end-to-end test runs the real thing.
STAND_IN = r"""
import json, os, sys
from pathlib import Path

state = Path(os.environ["STAND_IN_STATE"]) / "running.json"
running = set(json.loads(state.read_text())) if state.exists() else set()
pg = {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "unused", "PGHOST": "127.0.0.1",
      "PGPORT": os.environ["STAND_IN_PGPORT"]}
s3 = json.loads(os.environ["STAND_IN_S3"])
args = sys.argv[1:]
if args[0] == "inspect":
    health = {"Status": "healthy"}
    print(json.dumps([{"State": {"Running": True, "Status": "running", "Health": health},
                       "Config": {"Image": "stand-in/" + cid.removeprefix("cid-")}}
                      for cid in args[1:]]))
    sys.exit(0)
while args and args[0] in ("-f", "--env-file", "-p"):
    args = args[2:]
command, rest = args[0], args[1:]
if command == "ps":
    print(f"cid-{rest[-1]}" if rest[-1] in running else "")
elif command == "up":
    state.write_text(json.dumps(sorted(running | {a for a in rest if not a.startswith("-")})))
elif command == "exec":
    inner = rest[rest.index("postgres") + 1:]
    os.execvpe(inner[0], inner, {**os.environ, **pg})
elif command == "run":
    mounts, i = [], 0
    while rest[i].startswith("-"):
        if rest[i] in ("-v", "--user"):
            if rest[i] == "-v":
                host, container = rest[i + 1].split(":")[:2]
                mounts.append((container, host))
            i += 2
        else:
            i += 1
    service, inner = rest[i], rest[i + 1:]
    if service == "databases":
        env = {**os.environ, **pg, "POSTGRES_DB": "postgres", "PREFECT_DB_PASSWORD": "pw",
               "MLFLOW_DB_PASSWORD": "pw", "MLFLOW_AUTH_DB_PASSWORD": "pw"}
        script = os.path.join(os.environ["STAND_IN_REPO"], "services/postgres/init-databases.sh")
        os.execvpe("bash", ["bash", script], env)
    inner = inner or ["python", "-m", "services.buckets"]
    mounts.sort(key=lambda m: -len(m[0]))
    def host_path(arg):
        for container, host in mounts:
            if arg == container or arg.startswith(container + "/"):
                return host + arg[len(container):]
        return arg
    inner = [sys.executable] + [host_path(a) for a in inner[1:]]
    os.chdir(os.environ["STAND_IN_REPO"])
    os.execvpe(inner[0], inner, {**os.environ, **s3})
elif command != "build":
    sys.exit(f"stand-in compose: {command} not supported")
"""


def stand_in_compose(
    root: Path, pg_port: int, s3_env: dict[str, str], env_file: Path
) -> backup_docker.Compose:
    """A Compose whose `docker` and `docker compose` are the stand-in above (on PATH)."""
    bin_dir = root / "stand-in-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "stand_in.py"
    script.write_text(STAND_IN)
    docker = bin_dir / "docker"
    docker.write_text(
        f'#!/bin/sh\n[ "$1" = compose ] && shift\nexec "{sys.executable}" "{script}" "$@"\n'
    )
    docker.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "STAND_IN_STATE": str(root),
        "STAND_IN_PGPORT": str(pg_port),
        "STAND_IN_S3": json.dumps(s3_env),
        "STAND_IN_REPO": str(REPO_ROOT),
    }
    return backup_docker.Compose([str(docker), "compose"], REPO_ROOT, env_file, env)


def set_running(compose: backup_docker.Compose, services: list[str]) -> None:
    (Path(compose.process_env["STAND_IN_STATE"]) / "running.json").write_text(json.dumps(services))
