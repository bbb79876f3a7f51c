"""Helpers of the native-stack end-to-end tests: start `python -m stack.run`, talk to
it, stop it like Ctrl-C and check that nothing is left running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from nyctaxi.credentials import parse_env_lines
from stack.supervisor import marked_pids
from tests.servers import REPO_ROOT, free_port, taxi_data_dir

MODEL = "nyc-taxi-duration"
RIDE = {
    "PULocationID": 43,
    "DOLocationID": 151,
    "trip_distance": 1.2,
    "lpep_pickup_datetime": "2023-03-01T08:15:00",
}
MARKER = "NYCTAXI_E2E_STACK_ID"  # every process the stack starts inherits it
STARTUP_DEADLINE = 900  # a loaded 2-core machine is much slower than the 180 s bar
RUN_DEADLINE = 600


def base_environment(tmp_path: Path) -> dict[str, str]:
    """Only what a user's shell would have (no Prefect, MLflow or S3 settings: the launcher's
    embedded defaults), plus private state, free ports and the real months."""
    own = ("PREFECT_", "MLFLOW_", "S3_", "DASK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env.update(
        {
            MARKER: uuid4().hex,
            "PREFECT_PORT": str(free_port()),
            "MLFLOW_PORT": str(free_port()),
            "PREDICT_PORT": str(free_port()),
            "NYCTAXI_HOME": str(tmp_path / "home"),
            "TAXI_DATA_DIR": str(taxi_data_dir()),
            "TLC_ALLOW_DOWNLOAD": "false",  # tests never reach the internet
            "PREDICT_WORKERS": "1",
        }
    )
    return env


def stack_urls(env: dict) -> tuple[str, str, str]:
    return (
        f"http://127.0.0.1:{env['PREFECT_PORT']}/api",
        f"http://127.0.0.1:{env['MLFLOW_PORT']}",
        f"http://127.0.0.1:{env['PREDICT_PORT']}/predict",
    )


def marked_processes(marker: str) -> list[int]:
    """PIDs of live processes whose environment carries this stack's marker."""
    return marked_pids(marker, variable=MARKER)


def log_tail(log_file: Path, lines: int = 60) -> str:
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def native_stack(env: dict, log_file: Path) -> Iterator[subprocess.Popen]:
    """`python -m stack.run` in its own session; stopped like Ctrl-C (SIGINT to the supervisor)."""
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stack.run"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_stack(process, env[MARKER])


def stop_stack(process: subprocess.Popen, marker: str) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    # Safety net for a failing test; the test asserts there is nothing left before it gets here.
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stack_credentials(env: dict) -> dict[str, str]:
    """What `make run` generated into NYCTAXI_HOME (the launcher writes it before any server
    starts, so it exists once the stack answers)."""
    path = Path(env["NYCTAXI_HOME"]) / "credentials.env"
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.2)
    assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)
    return parse_env_lines(path.read_text())


@contextlib.contextmanager
def stack_client(env: dict) -> Iterator[dict[str, str]]:
    """This test process's Prefect and MLflow clients use the stack's generated credentials,
    the way our CLIs find them; nothing is typed."""
    credentials = stack_credentials(env)
    prefect_api, _, _ = stack_urls(env)
    mlflow_vars = {
        k: credentials[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    saved = {key: os.environ.get(key) for key in mlflow_vars}
    os.environ.update(mlflow_vars)
    settings = {
        PREFECT_API_URL: prefect_api,
        PREFECT_API_AUTH_STRING: credentials["PREFECT_API_AUTH_STRING"],
    }
    try:
        with temporary_settings(updates=settings):
            yield credentials
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def basic_auth(auth_string: str) -> tuple[str, str]:
    user, _, password = auth_string.partition(":")
    return user, password


def post_ride(url: str) -> dict | None:
    request = urllib.request.Request(
        url, data=json.dumps(RIDE).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_for_prediction(url: str, process: subprocess.Popen, log_file: Path) -> dict:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the stack stopped:\n{log_tail(log_file)}"
        answer = post_ride(url)
        if answer is not None and "duration" in answer:
            return answer
        time.sleep(1)
    raise AssertionError(f"no good /predict after {STARTUP_DEADLINE}s:\n{log_tail(log_file)}")


def wait_for_final_state(flow_run_id, log_file: Path) -> FlowRun:
    deadline = time.monotonic() + RUN_DEADLINE
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not finished:\n{log_tail(log_file)}")


def training_runs() -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["training"])))


def wait_for_log(log_file: Path, text: str, *, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while log_file.read_text(errors="replace").count(text) < count:
        assert process.poll() is None, f"the stack stopped:\n{log_tail(log_file)}"
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log_tail(log_file)}"
        time.sleep(1)


def assert_nothing_left(marker: str) -> None:
    deadline = time.monotonic() + 15  # give the kernel time to reap the last exits
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = marked_processes(marker)
    details = [
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
        for pid in leftovers
        if Path(f"/proc/{pid}").exists()
    ]
    assert not leftovers, f"processes left running after Ctrl-C: {details}"
