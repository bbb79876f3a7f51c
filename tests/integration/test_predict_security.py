"""The prediction service's security under real gunicorn against a real MLflow server.

With PREDICT_API_TOKEN set, only /health, /ready and /openapi.json answer without the token;
registry credentials (in the tracking URI and in MLFLOW_TRACKING_PASSWORD) reach neither a
response nor the log; made-up methods and paths add no metric series; and the service writes
only to its temp dir: a fresh HOME and working folder stay empty through a model load.
"""

from __future__ import annotations

import contextlib
import os
import random
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from bench.serving_model import clean_month, register_version, train_booster
from tests.servers import REPO_ROOT, VENV_BIN, free_port, http_ok, running_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TOKEN = f"it-token-{uuid.uuid4().hex}"
# The fake server ignores basic auth; a server with auth (the stacks') needs the real account.
USERNAME = os.environ.get("MLFLOW_TRACKING_USERNAME") or "predictor"
PASSWORD = os.environ.get("MLFLOW_TRACKING_PASSWORD") or f"pw-{uuid.uuid4().hex}"
RIDE = {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.2}
READY_TIMEOUT = 240  # workers import MLflow and XGBoost and download the model


@dataclass
class Guarded:
    url: str
    model_name: str
    tracking_uri: str
    log_file: Path
    home: Path
    cwd: Path
    tmp: Path

    def call(self, method: str, path: str, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        body = RIDE if method == "POST" else None
        return requests.request(method, self.url + path, json=body, headers=headers, timeout=10)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")


def with_credentials(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{USERNAME}:{PASSWORD}@{parts.netloc}").geturl()


@contextlib.contextmanager
def guarded_service(root: Path, tracking_url: str, workers: int = 2) -> Iterator[Guarded]:
    """gunicorn with the token, credentials in the URI and the environment, and a HOME, working
    folder and TMPDIR of its own. No PREDICT_HOST: the default must be loopback."""
    home, cwd, tmp = (root / name for name in ("home", "cwd", "tmp"))
    cache = root / "model-cache"
    for folder in (home, cwd, tmp):
        folder.mkdir(parents=True)
    port = free_port()
    name = f"predict-sec-{uuid.uuid4().hex[:8]}"
    env = {
        "MLFLOW_TRACKING_URI": with_credentials(tracking_url),
        "MLFLOW_TRACKING_USERNAME": USERNAME,
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "MODEL_NAME": name,
        "MODEL_ALIAS": "champion",
        "PREDICT_API_TOKEN": TOKEN,
        "PREDICT_PORT": str(port),
        "PREDICT_WORKERS": str(workers),
        "PREDICT_RELOAD_INTERVAL_SECONDS": "1",
        "PREDICT_RETRY_INTERVAL_SECONDS": "1",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "PREDICTION_LOG_DIR": str(root / "prediction-log"),
        # Besides the temp dir, it writes only to its model cache (a volume in Docker).
        "PREDICT_MODEL_CACHE_DIR": str(cache),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",  # as in the image, whose code folders are read-only
        "NO_PROXY": "127.0.0.1,localhost",
    }
    args = [
        str(VENV_BIN / "gunicorn"),
        "--config",
        str(REPO_ROOT / "services" / "predict" / "gunicorn_conf.py"),
        "services.predict.app:create_app()",
    ]
    log_file = root / "predict.log"
    with pytest.MonkeyPatch.context() as environ:
        # The service inherits the test's environment: these must be unset, not empty. MLflow
        # turns its telemetry (which writes to HOME) off by itself under pytest or CI: the
        # service must do it on its own, as in production.
        for variable in (
            "PREDICT_HOST",
            "NYCTAXI_HOME",
            "PROMETHEUS_MULTIPROC_DIR",
            "PYTEST_CURRENT_TEST",
            "CI",
            "GITHUB_ACTIONS",
        ):
            environ.delenv(variable, raising=False)
        with running_process(args, log_file=log_file, env=env, cwd=cwd):
            url = f"http://127.0.0.1:{port}"
            wait_until(
                lambda: http_ok(f"{url}/health"), timeout=120, what="service", log_file=log_file
            )
            yield Guarded(url, name, tracking_url, log_file, home, cwd, tmp)


@pytest.fixture(scope="module")
def trips(data_dir: Path) -> pd.DataFrame:
    return clean_month(data_dir, "2023-01")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, mlflow_url: str) -> Iterator[Guarded]:
    with guarded_service(tmp_path_factory.mktemp("predict-security"), mlflow_url) as service:
        yield service


def assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, TOKEN):
        assert secret not in text


def test_only_probes_and_the_api_document_are_open(guarded: Guarded) -> None:
    for path in ("/health", "/ready", "/openapi.json"):
        assert guarded.call("GET", path, token=None).status_code in {200, 503}, path
    for method, path in (("POST", "/predict"), ("GET", "/model"), ("GET", "/metrics")):
        missing = guarded.call(method, path, token=None)
        assert missing.status_code == 401, (path, missing.text)
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="nyctaxi-predict"'
        assert missing.json()["details"][0]["field"] == "Authorization"
        wrong = guarded.call(method, path, token="not-the-token")
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        assert guarded.call(method, path).status_code != 401, path


def test_not_ready_says_what_is_missing_without_the_registry_address(guarded: Guarded) -> None:
    # The service's model has no version yet: every worker has looked the alias up by now.
    wait_until(
        lambda: "no model served" in guarded.log_text(),
        timeout=120,
        what="a failed look-up",
        log_file=guarded.log_file,
    )
    for response in (guarded.call("GET", "/ready", token=None), guarded.call("POST", "/predict")):
        assert response.status_code == 503
        problem = response.json()["details"][0]["problem"]
        assert guarded.model_name in problem and "champion" in problem, problem
        host = urlsplit(guarded.tracking_uri).netloc
        assert host not in response.text and USERNAME not in response.text
        assert_no_secret(response.text)


def series(service: Guarded) -> set[str]:
    text = service.call("GET", "/metrics").text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


def test_made_up_methods_and_paths_add_no_metric_series(guarded: Guarded) -> None:
    rng = random.Random(11)

    def path() -> str:
        return "/" + "".join(rng.choices(string.ascii_lowercase, k=10))

    for _ in range(4):  # a few of each kind, to reach both workers
        guarded.call("GET", path())
        guarded.call("PROPFIND", path())
        guarded.call("PROPFIND", "/predict")
        guarded.call("GET", "/metrics")
    before = series(guarded)
    for method in ("FOO", "PROPFIND", "BREW", "M-SEARCH", "".join(rng.choices("XYZ", k=9))):
        for target in ("/predict", "/model", path(), path()):
            guarded.call(method, target)
    after = series(guarded)
    assert after == before, sorted(after - before)


def test_serves_a_model_writing_only_to_the_temp_dir(guarded: Guarded, trips: pd.DataFrame) -> None:
    booster = train_booster(trips, num_boost_round=5, max_depth=3, nthread=1)
    version = register_version(guarded.tracking_uri, guarded.model_name, booster, trips)
    MlflowClient(guarded.tracking_uri).set_registered_model_alias(
        guarded.model_name, "champion", version
    )
    wait_until(
        lambda: "predict_model_ready 1.0" in guarded.call("GET", "/metrics").text,
        timeout=READY_TIMEOUT,
        what="the model served by every worker",
        log_file=guarded.log_file,
    )
    answer = guarded.call("POST", "/predict")
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["version"] == version
    # Nothing in HOME (no ~/.cache, ~/.mlflow) nor in the working folder (no ./mlruns).
    assert not any(guarded.home.rglob("*")), list(guarded.home.rglob("*"))
    assert not any(guarded.cwd.rglob("*")), list(guarded.cwd.rglob("*"))
    assert list((guarded.home.parent / "model-cache").rglob("pointers/champion.json"))
    # The temp dir holds the metrics folder; model downloads are gone once loaded.
    assert [p.name.startswith("predict-metrics-") for p in guarded.tmp.iterdir()] == [True]


def test_the_log_holds_no_credentials(guarded: Guarded) -> None:
    text = guarded.log_text()
    assert "Booting worker" in text  # the log is the service's
    assert_no_secret(text)
    assert f"{USERNAME}:" not in text


def test_an_unreachable_registry_is_logged_masked_and_answered_generically(
    tmp_path: Path,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with guarded_service(tmp_path, closed, workers=1) as service:
        wait_until(
            lambda: "cannot ask the model registry" in service.log_text(),
            timeout=120,
            what="the failed look-up in the log",
            log_file=service.log_file,
        )
        response = service.call("GET", "/ready", token=None)
        assert response.status_code == 503
        assert "unreachable" in response.json()["details"][0]["problem"]
        assert "127.0.0.1" not in response.text
        text = service.log_text()
        assert "http://***@127.0.0.1" in text
        assert_no_secret(text)
