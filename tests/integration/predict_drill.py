"""Helpers of the prediction service's outage drills (test_predict_outages.py).

An MLflow server that can be killed and started again on the same port and store, the service
under real gunicorn with its worker processes in reach, and a load client that records every
answer and every failed connection with its time.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests

from tests.servers import (
    RIDE,
    VENV_BIN,
    free_port,
    http_ok,
    running_process,
    stop_process_group,
    wait_until,
)

# Workers import MLflow and XGBoost and load the model: slow on a busy 2-core machine.
READY_TIMEOUT = 240


@dataclass
class MlflowProcess:
    """A real MLflow server (SQLite store, local artifacts) that a drill kills and restarts."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "mlflow-server.log"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--workers",
            "1",
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        wait_until(
            lambda: http_ok(f"{self.url}/health"),
            timeout=420,
            what="MLflow server",
            log_file=self.log_file,
        )

    def kill(self) -> None:
        """SIGKILL to the server's whole process group: an outage, not a shutdown."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


@contextlib.contextmanager
def mlflow_process(root: Path) -> Iterator[MlflowProcess]:
    server = MlflowProcess(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Service:
    url: str
    log_file: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def worker_pids(self) -> set[int]:
        """The gunicorn master's children: its worker processes."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def metric_lines(self, prefix: str) -> list[str]:
        return [line for line in self.get("/metrics").text.splitlines() if line.startswith(prefix)]

    def gauge(self, name: str) -> float | None:
        """A gauge aggregated over the live workers (livemin / livemax)."""
        lines = self.metric_lines(f"{name} ")
        return float(lines[0].split()[1]) if lines else None

    def per_worker(self, name: str) -> dict[int, float]:
        """A `liveall` gauge: one value per live worker, by pid."""
        values = {}
        for line in self.metric_lines(f"{name}{{"):
            pid = re.search(r'pid="(\d+)"', line)
            if pid:
                values[int(pid.group(1))] = float(line.rsplit(" ", 1)[1])
        return values

    def serving_only(self, version: str) -> bool:
        """Every live worker serves `version` (predict_model_info is livemax per version)."""
        info = self.metric_lines("predict_model_info{")
        live = set()
        for line in info:
            found = re.search(r'version="([^"]+)"', line)
            if found and line.endswith(" 1.0"):
                live.add(found.group(1))
        return live == {version} and self.gauge("predict_model_ready") == 1.0

    def model_from(self, pid: int, attempts: int = 40) -> dict:
        """/model as answered by the worker `pid` (requests land on any worker)."""
        for _ in range(attempts):
            body = self.get("/model").json()
            if body.get("worker_pid") == pid:
                return body
        raise AssertionError(f"worker {pid} never answered /model")

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")


@contextlib.contextmanager
def predict_service(
    log_file: Path, tracking_uri: str, model_name: str, **settings: str
) -> Iterator[Service]:
    """gunicorn with 2 workers polling every second; `settings` are extra variables."""
    port = free_port()
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODEL_NAME": model_name,
        "MODEL_ALIAS": "champion",
        "PREDICT_HOST": "127.0.0.1",
        "PREDICT_PORT": str(port),
        "PREDICT_WORKERS": "2",
        "PREDICT_RELOAD_INTERVAL_SECONDS": "1",
        "PREDICT_RETRY_INTERVAL_SECONDS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        # Empty is unset for gunicorn_conf.py: the service makes (and cleans) its own folder.
        "PROMETHEUS_MULTIPROC_DIR": "",
        "PREDICTION_LOG_DIR": str(log_file.parent / "prediction-log"),
        **settings,
    }
    args = [
        str(VENV_BIN / "gunicorn"),
        "--config",
        "services/predict/gunicorn_conf.py",
        "services.predict.app:create_app()",
    ]
    with running_process(args, log_file=log_file, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_ok(f"{url}/health"), timeout=180, what="predict service", log_file=log_file
        )
        yield Service(url, log_file, proc)


@dataclass
class Outcome:
    at: float  # time.monotonic() when the answer came
    status: int
    version: str | None


@dataclass
class LoadClient:
    """Threads posting single rides until stopped, recording every answer and failure."""

    url: str
    threads: int = 2
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = requests.post(self.url + "/predict", json=RIDE, timeout=10)
                version = (response.json().get("model") or {}).get("version")
            except (requests.RequestException, ValueError) as error:
                self.errors.append((time.monotonic(), repr(error)))
                time.sleep(0.05)  # no port listening: do not spin
                continue
            self.outcomes.append(Outcome(time.monotonic(), response.status_code, version))

    def wait_for(self, more: int, timeout: float = 60) -> None:
        """Until `more` further answers came."""
        target = len(self.outcomes) + more
        wait_until(lambda: len(self.outcomes) >= target, timeout=timeout, what=f"{more} answers")

    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not 200 <= outcome.status < 300]

    def __enter__(self) -> LoadClient:
        self._workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)


_ATTEMPT = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[(?P<pid>\d+)\] \[WARNING\] "
    r"services\.predict\.holder: refused version (?P<version>\S+) \(run \S+\) "
    r"attempt (?P<attempt>\d+):",
    re.MULTILINE,
)


def refusal_attempts(log_text: str, version: str) -> dict[int, list[float]]:
    """Times (epoch seconds) of each worker's attempts at `version`, from the service log."""
    attempts: dict[int, list[float]] = {}
    for match in _ATTEMPT.finditer(log_text):
        if match["version"] == version:
            moment = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            attempts.setdefault(int(match["pid"]), []).append(moment)
    return attempts
