"""The Docker stack (docker-compose.yml) end to end, with locally built stand-in base images.

No registry is reachable here, so the images the compose file pulls are replaced by stand-ins
built from Debian packages (tests/fixtures/docker/build_standins.sh): python:3.11-slim and
postgres:15 under their own tags, an s3rver-based MinIO stand-in through MINIO_IMAGE in the test's
.env. The compose file itself is the one users get. Phases, each timed and printed:

  engine      tests/fixtures/docker/ensure_engine.sh (installs and starts dockerd if needed)
  standins    the stand-in base images (kept between runs)
  build       `compose build` of both images from uv.lock: predict and platform (every other
              service of ours); their sizes are measured against the bars below
  first-up    `compose up -d` on empty volumes, until deployments exist, the bootstrap's training
              run is Completed, MLflow has nyc-taxi-duration@champion and POST /predict answers
  restart     `compose down`, `compose up -d --scale worker=3`: same champion, same model
              versions, same training runs (no retraining), 3 healthy workers, /predict answers
  teardown    `compose down -v` (always)

The project name and every host port are unique to the run; everything goes to 127.0.0.1 only.
NYCTAXI_DOCKER_E2E=0 skips it (machines without root or apt); CI runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml

from nyctaxi import names
from stack import envfile
from tests.e2e import docker_backup, docker_doors
from tests.e2e.doors import loopback_session
from tests.servers import REPO_ROOT, free_port, taxi_data_dir

pytestmark = [pytest.mark.e2e]

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "docker"
S3_STANDIN = "nyctaxi-test/s3-standin:1"
PLATFORM_IMAGE = "nyctaxi/platform:e2e"
PREDICT_IMAGE = "nyctaxi/predict:e2e"
# Size bars (`docker image inspect` Size, bytes; `docker image ls` shows the same in MB/GB): the
# prediction image holds only what serving needs, the platform image no test tools. Raised for
# issue 10 (measured 683 MB and 1341 MB): pyarrow writes the prediction log (+158 MB), Evidently
# and its dependencies (plotly, statsmodels, nltk, litestar) build the monitoring reports.
IMAGE_SIZE_BARS = {PREDICT_IMAGE: 750_000_000, PLATFORM_IMAGE: 1_450_000_000}
# Distributions an image must not hold (its uv dependency groups leave them out).
TEST_TOOLS = {"pytest", "moto", "hypothesis", "schemathesis", "ruff"}
NOT_IN_IMAGE = {
    PREDICT_IMAGE: {"prefect", "prefect-aws", "mlflow", "psycopg2-binary", *TEST_TOOLS},
    PLATFORM_IMAGE: TEST_TOOLS,
}
MODEL = "nyc-taxi-duration"
TRAINING_FLOW = "training"
DEPLOYMENTS = {"train-local", "train-s3", "monitor-month", "monitor-live", "score-month"}
ONE_SHOT = {"preflight", "databases", "buckets", "bootstrap", "dask-certs"}
# Services behind a profile: not started by a plain `up` (the dask phase turns them on).
PROFILE_ONLY = {"dask-certs", "dask-scheduler", "dask-worker"}
DASK_WORKERS = 2
# Its own bind variable: the Dask dashboard has no login (README, Scale-out on Dask).
PORT_BINDS = {"dask-scheduler": "${DASK_DASHBOARD_BIND:-127.0.0.1}:"}
RIDE = {
    "PULocationID": 43,
    "DOLocationID": 151,
    "trip_distance": 1.2,
    "lpep_pickup_datetime": "2023-03-01T08:15:00",
}
FIRST_UP_DEADLINE = 1200  # empty volumes: MLflow migrations, bootstrap, one training run
RESTART_DEADLINE = 900
WORKERS = 3

T = TypeVar("T")


# -- static checks of the compose file (no engine needed) ---------------------------------------


def compose_spec() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_file_follows_the_house_rules() -> None:
    spec = compose_spec()
    assert "version" not in spec, "Compose Specification: no version key"
    services: dict[str, dict[str, Any]] = spec["services"]
    for name, service in services.items():
        assert "container_name" not in service, f"{name}: container_name breaks --scale"
        long_running = service.get("restart") != "no"
        assert service.get("logging", {}).get("options", {}).get("max-size"), f"{name}: logs"
        assert re.fullmatch(r"\$\{[A-Z_]+_MEM_LIMIT:-\d+[mg]\}", service.get("mem_limit", "")), (
            f"{name}: memory limit with an .env override"
        )
        assert long_running != (name in ONE_SHOT), f"{name}: restart policy"
        if long_running:
            assert "healthcheck" in service, f"{name}: long-running service without healthcheck"
        for port in service.get("ports", []):
            bind = PORT_BINDS.get(name, "${BIND_ADDRESS:-127.0.0.1}:")
            assert str(port).startswith(bind), f"{name}: {port}"
        for dependency, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else ("service_healthy")
            )
            assert condition == {"condition": expected}, f"{name} -> {dependency}"
        command = " ".join(map(str, service.get("command", [])))
        assert not re.search(r"\bpip install\b|\bsleep\b", command), f"{name}: {command}"
        for volume in service.get("volumes", []):
            host = str(volume).split(":")[0]
            assert host not in {".", "./", "${PWD}"}, f"{name}: the repo is bind-mounted"
    assert "ports" not in services["worker"], "workers must scale: no fixed host ports"
    text = COMPOSE_FILE.read_text()
    for secret in ("POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD"):
        assert re.search(rf"\${{{secret}:\?", text), f"{secret} must be required, no default"
    assert re.search(r"\$\{MINIO_ROOT_PASSWORD:\?", text)
    assert re.search(r"\$\{MINIO_IMAGE:-minio/minio:RELEASE\.", text), "pinned, overridable"
    docker_doors.check_compose_hardening(services)


# -- helpers -----------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], tuple[T | None, str]], timeout: float) -> T:
    """Poll `probe` (returns (value, reason)) until it gives a value; fail at the deadline."""
    deadline = time.monotonic() + timeout
    reason = "not probed yet"
    while True:
        try:
            value, reason = probe()
        except requests.RequestException as error:
            value, reason = None, f"{type(error).__name__}: {error}"
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s; last: {reason}")
        time.sleep(3)


def compose_command() -> list[str]:
    if forced := os.environ.get("NYCTAXI_COMPOSE"):
        return forced.split()
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError("neither `docker compose` nor `docker-compose` is available")


class Stack:
    """One compose project: its .env, its ports, and the commands and APIs it answers."""

    def __init__(self, env_file: Path, ports: dict[str, int]) -> None:
        self.project = f"nyctaxi-e2e-{secrets.token_hex(4)}"
        self.env_file = env_file
        self.ports = ports
        self.profiles: list[str] = []  # compose profiles every later command includes
        self.secrets = values = envfile.assignments(env_file.read_text())
        # Each API with the key of the account that uses it: Prefect's basic auth (plus a CSRF
        # token, fetched on the first write), MLflow as the trainer, predict with its token.
        user, _, password = values.get("PREFECT_API_AUTH_STRING", "").partition(":")
        self.http = loopback_session(auth=(user, password))
        trainer = (names.MLFLOW_TRAINER_USER, values.get("MLFLOW_TRAINER_PASSWORD", ""))
        self.mlflow = loopback_session(auth=trainer)
        self.predict = loopback_session()
        self.predict.headers["Authorization"] = f"Bearer {values.get('PREDICT_API_TOKEN', '')}"
        # Variables of the shell win over --env-file: keep ours from being overridden (the
        # Makefile exports a developer's .env into the environment of the tests).
        self.process_env = {
            key: value
            for key, value in os.environ.items()
            if key not in values and not key.startswith("COMPOSE_")
        }

    def compose(self, *args: str, timeout: float = 1200, check: bool = True) -> str:
        command = [*compose_command(), "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file)]
        command += ["-p", self.project]
        for profile in self.profiles:
            command += ["--profile", profile]
        command += args
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=self.process_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def prefect_post(self, path: str, body: dict[str, Any]) -> requests.Response:
        """POST to the Prefect API: basic auth, and the CSRF token its server asks for."""
        if "Prefect-Csrf-Token" not in self.http.headers:
            client = f"e2e-{self.project}"
            response = self.http.get(
                self.url("PREFECT_PORT", "/api/csrf-token"), params={"client": client}
            )
            response.raise_for_status()
            self.http.headers["Prefect-Csrf-Token"] = response.json()["token"]
            self.http.headers["Prefect-Csrf-Client"] = client
        return self.http.post(self.url("PREFECT_PORT", path), json=body)

    # Prefect
    def deployment_names(self) -> tuple[set[str] | None, str]:
        response = self.prefect_post("/api/deployments/filter", {})
        response.raise_for_status()
        names = {item["name"] for item in response.json()}
        return (names if names >= DEPLOYMENTS else None), f"deployments: {sorted(names)}"

    def training_runs(self) -> dict[str, str]:
        """Training flow runs by id -> state type."""
        body = {"flows": {"name": {"any_": [TRAINING_FLOW]}}, "limit": 200}
        response = self.prefect_post("/api/flow_runs/filter", body)
        response.raise_for_status()
        return {run["id"]: run["state_type"] for run in response.json()}

    def completed_training(self) -> tuple[dict[str, str] | None, str]:
        runs = self.training_runs()
        broken = {run: state for run, state in runs.items() if state in {"FAILED", "CRASHED"}}
        assert not broken, f"training runs failed: {broken}"
        done = "COMPLETED" in runs.values()
        return (runs if done else None), f"training runs: {runs or 'none yet'}"

    def start_run(self, deployment: str, parameters: dict[str, Any]) -> str:
        """Start a run of `deployment` ("flow/deployment") as `make monitor` does; its id."""
        response = self.http.get(self.url("PREFECT_PORT", f"/api/deployments/name/{deployment}"))
        response.raise_for_status()
        path = f"/api/deployments/{response.json()['id']}/create_flow_run"
        created = self.prefect_post(path, {"parameters": parameters})
        created.raise_for_status()
        return str(created.json()["id"])

    def final_state(self, flow_run_id: str) -> tuple[str | None, str]:
        response = self.http.get(self.url("PREFECT_PORT", f"/api/flow_runs/{flow_run_id}"))
        response.raise_for_status()
        state = response.json()["state"] or {}
        final = state.get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        return (state["type"] if final else None), f"{state.get('type')}: {state.get('message')}"

    def artifact_types(self, flow_run_id: str) -> list[str]:
        body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        response = self.prefect_post("/api/artifacts/filter", body)
        response.raise_for_status()
        return sorted(artifact["type"] for artifact in response.json())

    # MLflow
    def run_status(self, run_id: str) -> str:
        response = self.mlflow.get(
            self.url("MLFLOW_PORT", "/api/2.0/mlflow/runs/get"), params={"run_id": run_id}
        )
        response.raise_for_status()
        return response.json()["run"]["info"]["status"]

    def champion(self) -> tuple[dict[str, Any] | None, str]:
        response = self.mlflow.get(
            self.url("MLFLOW_PORT", "/api/2.0/mlflow/registered-models/alias"),
            params={"name": MODEL, "alias": "champion"},
        )
        if response.status_code != 200:
            return None, f"alias lookup answered {response.status_code}: {response.text[:200]}"
        return response.json()["model_version"], "found"

    def latest_training_run(self) -> dict[str, dict[str, Any]]:
        """The MLflow run of the newest version: its tags, metrics and params by key."""
        response = self.mlflow.get(
            self.url("MLFLOW_PORT", "/api/2.0/mlflow/model-versions/search"),
            params={"filter": f"name='{MODEL}'"},
        )
        response.raise_for_status()
        newest = max(response.json()["model_versions"], key=lambda v: int(v["version"]))
        data = self.mlflow.get(
            self.url("MLFLOW_PORT", "/api/2.0/mlflow/runs/get"),
            params={"run_id": newest["run_id"]},
        ).json()["run"]["data"]
        return {
            kind: {item["key"]: item["value"] for item in data.get(kind, [])}
            for kind in ("tags", "metrics", "params")
        }

    def model_versions(self) -> list[str]:
        response = self.mlflow.get(
            self.url("MLFLOW_PORT", "/api/2.0/mlflow/model-versions/search"),
            params={"filter": f"name='{MODEL}'"},
        )
        response.raise_for_status()
        return sorted(v["version"] for v in response.json().get("model_versions", []))

    # predict
    def prediction(self) -> tuple[dict[str, Any] | None, str]:
        response = self.predict.post(self.url("PREDICT_PORT", "/predict"), json=RIDE, timeout=10)
        if response.status_code != 200:
            return None, f"/predict answered {response.status_code}: {response.text[:200]}"
        return response.json(), "ok"

    def rides_the_worker_reads(self) -> tuple[int | None, str]:
        """Rides of the last hour in the prediction log, read inside a Prefect worker as the
        monitoring flow reads them (the volume the predict service writes, mounted read-only)."""
        script = (
            "import os; from datetime import UTC, datetime, timedelta; from pathlib import Path; "
            "from nyctaxi.predictionlog import read_window; now = datetime.now(UTC); "
            "print(len(read_window(Path(os.environ['PREDICTION_LOG_DIR']), "
            "now - timedelta(hours=1), now + timedelta(minutes=1))))"
        )
        output = self.compose("exec", "-T", "worker", "python", "-c", script, check=False)
        rides = int(output.split()[-1]) if output.split() else 0
        return (rides if rides > 0 else None), f"{rides} rides read: {output[-300:]!r}"

    # containers
    def container_states(self, service: str) -> list[dict[str, Any]]:
        ids = self.compose("ps", "-q", service).split()
        if not ids:
            return []
        out = subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, check=True
        ).stdout
        return [container["State"] for container in json.loads(out)]

    def healthy_workers(self) -> tuple[int | None, str]:
        states = self.container_states("worker")
        health = [state.get("Health", {}).get("Status") for state in states]
        count = health.count("healthy")
        return (count if count == WORKERS else None), f"worker health: {health}"

    def memory_peaks(self) -> dict[str, int]:
        """Peak memory (bytes) of each running container since it started, from its cgroup."""
        ids = self.compose("ps", "-q").split()
        if not ids:
            return {}
        out = subprocess.run(
            ["docker", "inspect", "--format", "{{.Id}} {{.Name}}", *ids],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        peaks: dict[str, int] = {}
        for line in out.splitlines():
            container_id, name = line.split()
            peak = cgroup_memory_peak(container_id)
            if peak is not None:
                peaks[name.lstrip("/").removeprefix(self.project).strip("-_")] = peak
        return peaks

    def logs(self) -> str:
        return self.compose("ps", check=False) + self.compose("logs", "--tail=60", check=False)


def cgroup_memory_peak(container_id: str) -> int | None:
    """The container's peak memory: cgroup v1 max_usage_in_bytes or v2 memory.peak."""
    candidates = [
        f"/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes",
        f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope/memory.max_usage_in_bytes",
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak",
        f"/sys/fs/cgroup/docker/{container_id}/memory.peak",
    ]
    for candidate in candidates:
        path = Path(candidate)
        if path.exists():
            return int(path.read_text().strip())
    return None


def memory_bytes(value: object) -> int:
    """`1g`, `1536m`, `1073741824` (compose v2 normalises to bytes, docker-compose 1.29 not)."""
    text = str(value).strip().lower().removesuffix("b")
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text or 0)


def report_memory(stack: Stack, when: str, measurement: Callable[[str], None]) -> None:
    """Print each container's peak against its limit (the defaults in .env.example are sized
    from these figures) and fail if one came within 10% of its limit."""
    peaks = stack.memory_peaks()
    limits = {}
    for service, spec in yaml.safe_load(stack.compose("config")).get("services", {}).items():
        limits[service] = memory_bytes(spec.get("mem_limit", 0))
    rows = []
    close = []
    for container, peak in sorted(peaks.items()):
        service = re.sub(r"[-_]\d+$", "", container)
        limit = limits.get(service, 0)
        rows.append(f"{container} {peak / 2**20:.0f}/{limit / 2**20:.0f} MiB")
        if limit and peak > 0.9 * limit:
            close.append(container)
    measurement(f"docker memory peaks {when} (peak/limit): " + ", ".join(rows))
    assert peaks, "no cgroup memory figures found"
    assert not close, f"containers within 10% of their memory limit: {close}"


@contextlib.contextmanager
def phase(name: str, timings: dict[str, float]) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - started
        print(f"[docker e2e] {name}: {timings[name]:.0f}s", flush=True)


def write_env_file(path: Path, ports: dict[str, int], data_dir: Path) -> None:
    values = {
        # Random values for every secret, as `make env` makes them.
        **{name: make_secret() for name, make_secret in envfile.SECRETS.items()},
        "NYCTAXI_ENV_FILE": str(path),
        "PREDICT_API_TOKEN": secrets.token_urlsafe(24),
        "BIND_ADDRESS": "127.0.0.1",
        "PUBLIC_HOST": "localhost",
        "NYCTAXI_PLATFORM_IMAGE": PLATFORM_IMAGE,
        "NYCTAXI_PREDICT_IMAGE": PREDICT_IMAGE,
        "PYTHON_IMAGE": "python:3.11-slim",
        "POSTGRES_USER": "nyctaxi",
        "MINIO_IMAGE": S3_STANDIN,
        "MINIO_ROOT_USER": "nyctaxi-e2e",
        "TAXI_DATA_HOST_DIR": str(data_dir),
        "TLC_ALLOW_DOWNLOAD": "false",  # tests never reach the internet
        "NOTIFY_WEBHOOK_URL": "",
        "MLFLOW_WORKERS": "1",
        "PREDICT_WORKERS": "1",
        **{name: str(port) for name, port in ports.items()},
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def image_sizes() -> dict[str, int]:
    """Size in bytes of each of our images, as `docker image inspect` reports it."""
    sizes = {}
    for image in IMAGE_SIZE_BARS:
        out = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        sizes[image] = int(out.strip())
    return sizes


def installed(image: str, distributions: set[str]) -> set[str]:
    """Which of `distributions` are installed in `image`."""
    probe = (
        "import importlib.metadata as m, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        m.distribution(name)\n"
        "        print(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", image, "python", "-c", probe, *sorted(distributions)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def run_script(script: str, timeout: float) -> None:
    result = subprocess.run(
        ["bash", str(FIXTURES / script)], capture_output=True, text=True, timeout=timeout
    )
    print(result.stdout, end="", flush=True)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"


# -- the end-to-end test -----------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.timeout(3000)
def test_docker_stack_first_start_restart_and_scale(
    tmp_path: Path, measurement: Callable[[str], None]
) -> None:
    if os.environ.get("NYCTAXI_DOCKER_E2E") == "0":
        pytest.skip("NYCTAXI_DOCKER_E2E=0: Docker end-to-end test switched off")
    data_dir = taxi_data_dir()
    assert any(data_dir.glob("green_tripdata_*.parquet")), f"no TLC months in {data_dir}"
    timings: dict[str, float] = {}
    sizes: dict[str, int] = {}

    with phase("engine", timings):
        run_script("ensure_engine.sh", timeout=600)
    # `cp .env.example .env` gives a valid configuration, which the preflight then refuses.
    Stack(REPO_ROOT / ".env.example", {}).compose("config", "-q")
    with phase("standins", timings):
        run_script("build_standins.sh", timeout=1500)
    with phase("placeholders", timings):
        refused = docker_doors.check_placeholders_refused(Stack, tmp_path / "placeholder.env")
    measurement(f"docker: a .env with change-me values is refused: {refused}")

    ports = {
        name: free_port() for name in ("PREFECT_PORT", "MLFLOW_PORT", "PREDICT_PORT", "MINIO_PORT")
    }
    ports["MINIO_CONSOLE_PORT"] = free_port()
    ports["DASK_DASHBOARD_PORT"] = free_port()
    env_file = tmp_path / "stack.env"
    write_env_file(env_file, ports, data_dir)
    stack = Stack(env_file, ports)
    print(f"[docker e2e] project {stack.project}, ports {ports}", flush=True)

    try:
        with phase("build", timings):
            stack.compose("build", timeout=1800)
        sizes = image_sizes()
        line = ", ".join(f"{image} {size / 1e6:.0f} MB" for image, size in sizes.items())
        print(f"[docker e2e] image sizes: {line}", flush=True)
        bars = ", ".join(f"{image} <= {bar / 1e6:.0f} MB" for image, bar in IMAGE_SIZE_BARS.items())
        measurement(f"docker image sizes (bars: {bars}): {line}")
        for image, unwanted in NOT_IN_IMAGE.items():
            assert not installed(image, unwanted), f"{image} holds {installed(image, unwanted)}"
        with phase("first-up", timings):
            check_first_start(stack)
        first = snapshot(stack)
        report_memory(stack, "after the first start and its training run", measurement)
        with phase("doors", timings):
            measurement("docker: " + docker_doors.check_doors(stack, first["champion"]))
        with phase("restart", timings):
            stack.compose("down", timeout=300)
            stack.compose("up", "-d", "--scale", f"worker={WORKERS}", timeout=RESTART_DEADLINE)
            check_restart(stack, first)
        with phase("dask", timings):
            measurement("docker: " + check_dask_profile(stack))
        with phase("backup-restore", timings):
            # Back up, wipe (down -v), restore onto a stack with other secrets, same champion.
            fresh_env = tmp_path / "fresh.env"
            write_env_file(fresh_env, ports, data_dir)
            fresh = Stack(fresh_env, ports)
            try:
                measurement(
                    docker_backup.drill(stack, fresh, tmp_path, compose_command(), wait_for)
                )
            except BaseException:
                print(fresh.logs(), flush=True)
                raise
            finally:
                fresh.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
    except BaseException:
        print(stack.logs(), flush=True)
        raise
    finally:
        with phase("teardown", timings):
            stack.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
        measurement(
            f"docker stack phases (s): {json.dumps({k: round(v) for k, v in timings.items()})}"
        )
    over = {image: size for image, size in sizes.items() if size > IMAGE_SIZE_BARS[image]}
    assert not over, f"images over their size bars {IMAGE_SIZE_BARS}: {over}"


def check_first_start(stack: Stack) -> None:
    started = time.monotonic()
    stack.compose("up", "-d", timeout=FIRST_UP_DEADLINE)

    def left() -> float:
        return max(FIRST_UP_DEADLINE - (time.monotonic() - started), 30)

    names = wait_for("Prefect deployments", stack.deployment_names, left())
    print(f"[docker e2e] deployments: {sorted(names)}", flush=True)
    ui = stack.http.get(stack.url("PREFECT_PORT", "/ui-settings")).json()
    assert ui["api_url"] == f"http://localhost:{stack.ports['PREFECT_PORT']}/api", ui
    runs = wait_for("a Completed training run", stack.completed_training, left())
    completed = [run for run, state in runs.items() if state == "COMPLETED"]
    assert "markdown" in stack.artifact_types(completed[0]), "the run's report artifact"
    champion = wait_for(f"{MODEL}@champion", stack.champion, left())
    assert stack.run_status(champion["run_id"]) == "FINISHED", champion
    answer = wait_for("POST /predict", stack.prediction, left())
    assert answer["duration"] > 0, answer
    assert answer["model"]["version"] == champion["version"], (answer, champion)
    # The ride just served reaches the worker's read-only view of the prediction log.
    rides = wait_for("rides in the worker's prediction log", stack.rides_the_worker_reads, 60)
    # A monitoring run in the platform image (Evidently, the trainer's MLflow account).
    monitor_started = time.monotonic()
    monitoring = stack.start_run("monitoring/monitor-month", {"month": "2023-03"})
    monitored = wait_for("the monitoring run", lambda: stack.final_state(monitoring), left())
    monitor_seconds = time.monotonic() - monitor_started
    assert monitored == "COMPLETED", stack.final_state(monitoring)
    assert "table" in stack.artifact_types(monitoring), "the monitoring run's artifacts"
    print(
        f"[docker e2e] prediction log: {rides} ride(s) read by the worker; "
        f"monitoring 2023-03: {monitored} in {monitor_seconds:.0f}s; "
        f"first start to first prediction: {time.monotonic() - started:.0f}s; "
        f"training runs {runs}; champion v{champion['version']}; prediction {answer}",
        flush=True,
    )


def snapshot(stack: Stack) -> dict[str, Any]:
    champion, _ = stack.champion()
    assert champion is not None
    return {
        "champion": champion["version"],
        "run_id": champion["run_id"],
        "versions": stack.model_versions(),
        "training_runs": stack.training_runs(),
    }


def check_restart(stack: Stack, before: dict[str, Any]) -> None:
    for service in ONE_SHOT - PROFILE_ONLY:  # `up -d` returned: the one-shot jobs ran again
        states = stack.container_states(service)
        assert [s["ExitCode"] for s in states] == [0], f"{service}: {states}"
    answer = wait_for("POST /predict after restart", stack.prediction, RESTART_DEADLINE)
    assert answer["model"]["version"] == before["champion"], answer
    after = snapshot(stack)
    assert after["champion"] == before["champion"], (before, after)
    assert after["versions"] == before["versions"], "a model version was lost or added"
    assert after["training_runs"] == before["training_runs"], "training runs lost or retrained"
    assert stack.run_status(after["run_id"]) == "FINISHED", after
    workers = wait_for(f"{WORKERS} healthy workers", stack.healthy_workers, RESTART_DEADLINE)
    print(
        f"[docker e2e] after restart: champion v{after['champion']}, versions "
        f"{after['versions']}, {len(after['training_runs'])} training run(s), {workers} workers",
        flush=True,
    )


def check_dask_profile(stack: Stack) -> str:
    """Turn the dask profile on in the running stack (the worker is recreated with the address)
    and train a window of months through the deployment: its tasks and fit on the 2 workers."""
    with stack.env_file.open("a") as env:
        env.write("DASK_SCHEDULER_ADDRESS=tls://dask-scheduler:8786\n")
    stack.profiles.append("dask")
    started = time.monotonic()
    scale = ["--scale", f"dask-worker={DASK_WORKERS}", "--scale", f"worker={WORKERS}"]
    stack.compose("up", "-d", *scale, timeout=RESTART_DEADLINE)

    def healthy_dask_workers() -> tuple[int | None, str]:
        states = stack.container_states("dask-worker")
        healthy = sum(s.get("Health", {}).get("Status") == "healthy" for s in states)
        return (healthy if healthy == DASK_WORKERS else None), f"{healthy} healthy: {states}"

    wait_for(f"{DASK_WORKERS} healthy Dask workers", healthy_dask_workers, RESTART_DEADLINE)
    wait_for(f"{WORKERS} healthy workers", stack.healthy_workers, RESTART_DEADLINE)
    up_seconds = time.monotonic() - started
    window = {"train_from": "2022-01", "train_to": "2022-03", "val_month": "2023-01"}
    run = stack.start_run(f"{TRAINING_FLOW}/{names.TRAIN_LOCAL_DEPLOYMENT}", window)
    final = wait_for("the window training run on Dask", lambda: stack.final_state(run), 600)
    assert final == "COMPLETED", stack.final_state(run)
    mlflow_run = stack.latest_training_run()
    assert mlflow_run["tags"]["engine"] == "dask", mlflow_run
    assert float(mlflow_run["metrics"]["workers"]) == DASK_WORKERS, mlflow_run
    assert mlflow_run["params"]["train_from"] == "2022-01", mlflow_run
    # Batch scoring on the cluster: each chunk read, scored and written by a Dask worker.
    batch_started = time.monotonic()
    score_month = f"{names.BATCH_FLOW}/{names.SCORE_MONTH_DEPLOYMENT}"
    scoring = stack.start_run(score_month, {"month": "2023-03"})
    scored = wait_for("the batch scoring run on Dask", lambda: stack.final_state(scoring), 600)
    assert scored == "COMPLETED", stack.final_state(scoring)
    assert "markdown" in stack.artifact_types(scoring), "the batch summary artifact"
    batch_seconds = time.monotonic() - batch_started
    return (
        f"dask profile up with {DASK_WORKERS} healthy workers in {up_seconds:.0f}s; window "
        f"2022-01..2022-03 -> 2023-01 through the deployment: {final} in "
        f"{time.monotonic() - started - up_seconds:.0f}s, val_rmse "
        f"{float(mlflow_run['metrics']['val_rmse']):.4f} (engine dask, {DASK_WORKERS} workers); "
        f"batch/score-month 2023-03: {scored} in {batch_seconds:.0f}s"
    )
