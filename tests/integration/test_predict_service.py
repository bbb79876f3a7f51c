"""The prediction service under real gunicorn (2 workers) against a real MLflow server.

The story of one deployment: the service starts before any model exists (503, saying what is
missing), becomes ready by itself once a version gets the alias, and follows the alias to a new
version while a concurrent client keeps it busy, without a single failed request. Models are
trained by the library's own code on a real TLC month.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from mlflow.tracking import MlflowClient
from schemathesis import GenerationMode

from bench.serving_model import clean_month, register_version, train_booster
from tests.servers import RIDE, VENV_BIN, free_port, http_ok, running_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

TRAIN_MONTH = "2023-01"
# Workers import MLflow and XGBoost and download the model: slow on a busy 2-core machine.
READY_TIMEOUT = 240


@dataclass
class Service:
    url: str
    model_name: str
    tracking_uri: str
    log_file: Path
    prediction_log: Path | None = None  # PREDICTION_LOG_DIR
    process: subprocess.Popen[bytes] | None = None  # the gunicorn master

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def predict(self, payload: object) -> requests.Response:
        return requests.post(self.url + "/predict", json=payload, timeout=10)

    def ready_version(self) -> str | None:
        response = self.get("/ready")
        return response.json()["model"]["version"] if response.status_code == 200 else None

    def log_tail(self) -> str:
        return "\n".join(self.log_file.read_text().splitlines()[-60:])


@contextlib.contextmanager
def predict_service(
    tmp: Path, tracking_uri: str, model_name: str, **settings: str
) -> Iterator[Service]:
    """gunicorn with 2 workers on a free port; `settings` add to (or replace) its environment."""
    port = free_port()
    prediction_log = Path(settings.get("PREDICTION_LOG_DIR", tmp / "prediction-log"))
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODEL_NAME": model_name,
        "MODEL_ALIAS": "champion",
        "PREDICT_HOST": "127.0.0.1",
        "PREDICT_PORT": str(port),
        "PREDICT_WORKERS": "2",
        "PREDICT_RELOAD_INTERVAL_SECONDS": "1",
        "PREDICT_RETRY_INTERVAL_SECONDS": "1",
        "PREDICT_MODEL_CACHE_DIR": str(tmp / "model-cache"),
        # The test's own folder, never the NYCTAXI_HOME of whoever runs the tests.
        "PREDICTION_LOG_DIR": str(prediction_log),
        "NO_PROXY": "127.0.0.1,localhost",
        **settings,
    }
    args = [
        str(VENV_BIN / "gunicorn"),
        "--config",
        "services/predict/gunicorn_conf.py",
        "services.predict.app:create_app()",
    ]
    log_file = tmp / "predict.log"
    with running_process(args, log_file=log_file, env=env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_ok(f"{url}/health"), timeout=120, what="predict service", log_file=log_file
        )
        yield Service(url, model_name, tracking_uri, log_file, prediction_log, process)


@pytest.fixture(scope="module")
def trips(data_dir: Path) -> pd.DataFrame:
    return clean_month(data_dir, TRAIN_MONTH)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, mlflow_url: str) -> Iterator[Service]:
    # A model name of its own: the MLflow server is shared with other integration tests.
    name = f"predict-it-{uuid.uuid4().hex[:8]}"
    with predict_service(tmp_path_factory.mktemp("predict"), mlflow_url, name) as running:
        yield running


@dataclass
class LoadClient:
    """Threads posting single rides until stopped, recording every outcome."""

    service: Service
    threads: int = 4
    outcomes: list[tuple[int, str | None, float | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                response = session.post(self.service.url + "/predict", json=RIDE, timeout=10)
                body = response.json()
            except (requests.RequestException, ValueError) as error:
                self.errors.append(repr(error))
                continue
            model = body.get("model") or {}
            self.outcomes.append((response.status_code, model.get("version"), body.get("duration")))

    def __enter__(self) -> LoadClient:
        self._workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)


def metric_lines(service: Service, prefix: str) -> list[str]:
    return [line for line in service.get("/metrics").text.splitlines() if line.startswith(prefix)]


def all_workers_ready(service: Service) -> bool:
    """/ready answers for one worker; the gauge aggregated over workers (livemin) for all."""
    return metric_lines(service, "predict_model_ready ") == ["predict_model_ready 1.0"]


def serving_only(service: Service, new: str, old: str) -> bool:
    """Every live worker serves `new`: the per-version gauge (livemax) is 1 for it, 0 for old."""
    info = metric_lines(service, "predict_model_info{")
    live = {line.endswith(" 1.0") for line in info if f'version="{new}"' in line}
    gone = {line.endswith(" 0.0") for line in info if f'version="{old}"' in line}
    return live == {True} and gone == {True}


def test_starts_without_a_model_then_serves_and_hot_swaps_under_load(
    service: Service, trips: pd.DataFrame
) -> None:
    # 1. No model registered yet: alive, not ready, and the reason is given.
    assert service.get("/health").status_code == 200
    for response in (service.get("/ready"), service.predict(RIDE)):
        assert response.status_code == 503
        problem = response.json()["details"][0]["problem"]
        assert service.model_name in problem and "champion" in problem, problem

    # 2. Register version 1 with the alias: every worker becomes ready without a restart.
    first = register_version(
        service.tracking_uri,
        service.model_name,
        train_booster(trips, num_boost_round=10, max_depth=4, nthread=1),
        trips,
        alias="champion",
    )
    wait_until(
        lambda: all_workers_ready(service) and service.ready_version() == first,
        timeout=READY_TIMEOUT,
        what="version 1 served by every worker",
        log_file=service.log_file,
    )
    single = service.predict(RIDE)
    assert single.status_code == 200, single.text
    assert single.json()["model"] == {
        "name": service.model_name,
        "version": first,
        "alias": "champion",
    }
    assert 1 < single.json()["duration"] < 60
    rides = trips.head(1000)
    batch = [
        {
            "PULocationID": int(row.PULocationID),
            "DOLocationID": int(row.DOLocationID),
            "trip_distance": float(row.trip_distance),
            "lpep_pickup_datetime": row.lpep_pickup_datetime.isoformat(),
        }
        for row in rides.itertuples()
    ]
    answered = service.predict(batch)
    assert answered.status_code == 200
    assert len(answered.json()["predictions"]) == 1000
    described = service.get("/model").json()
    assert described["version"] == first
    assert described["run_id"]
    assert described["metrics"]["train_rows"] == len(trips)

    # 3. Version 2 (a different model) takes the alias while a client keeps both workers busy.
    second = register_version(
        service.tracking_uri,
        service.model_name,
        train_booster(trips, num_boost_round=40, max_depth=6, nthread=1),
        trips,
    )
    with LoadClient(service) as load:
        wait_until(lambda: len(load.outcomes) >= 100, timeout=60, what="load before the swap")
        MlflowClient(service.tracking_uri).set_registered_model_alias(
            service.model_name, "champion", second
        )
        wait_until(
            lambda: serving_only(service, second, first),
            timeout=READY_TIMEOUT,
            what="version 2 served by every worker",
            log_file=service.log_file,
        )
        swapped_at = len(load.outcomes)
        wait_until(lambda: len(load.outcomes) >= swapped_at + 100, timeout=60, what="load after")
    # each client thread may still have had one request in flight on version 1 at swapped_at
    after_swap = {version for _, version, _ in load.outcomes[swapped_at + load.threads :]}
    assert after_swap == {second}, after_swap
    failures = [outcome for outcome in load.outcomes if outcome[0] != 200]
    assert not load.errors, load.errors[:5]
    assert not failures, failures[:5]
    by_version: dict[str | None, set[float | None]] = {}
    for _, version, duration in load.outcomes:
        by_version.setdefault(version, set()).add(duration)
    assert set(by_version) == {first, second}
    assert len(by_version[first]) == len(by_version[second]) == 1  # one answer per model
    assert by_version[first] != by_version[second]


@pytest.fixture(scope="module")
def served(service: Service, trips: pd.DataFrame) -> Service:
    """The service with some version under the alias (registers one if the story did not)."""
    client = MlflowClient(service.tracking_uri)
    try:
        client.get_model_version_by_alias(service.model_name, "champion")
    except Exception:  # noqa: BLE001 - no alias yet: this test runs alone
        booster = train_booster(trips, num_boost_round=10, max_depth=4, nthread=1)
        register_version(service.tracking_uri, service.model_name, booster, trips, alias="champion")
    wait_until(
        lambda: all_workers_ready(service),
        timeout=READY_TIMEOUT,
        what="a served model",
        log_file=service.log_file,
    )
    return service


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_the_real_service_never_gives_a_5xx(served: Service, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case) -> None:  # noqa: ANN001 - a schemathesis Case
        response = case.call(timeout=10)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)

    call()


def served_run_ids(service: Service, answers: int = 12) -> set[str]:
    """run_id of the model answering /model, over enough calls to reach both workers."""
    return {service.get("/model").json()["run_id"] for _ in range(answers)}


def test_a_model_deleted_and_registered_again_is_followed_though_its_version_number_repeats(
    served: Service, trips: pd.DataFrame
) -> None:
    client = MlflowClient(served.tracking_uri)
    before = served_run_ids(served)
    client.delete_registered_model(served.model_name)
    again = register_version(
        served.tracking_uri,
        served.model_name,
        train_booster(trips, num_boost_round=5, max_depth=3, nthread=1),
        trips,
        alias="champion",
    )
    assert again == "1"  # numbering starts over: the number alone no longer names the model
    new_run = client.get_model_version(served.model_name, again).run_id
    assert new_run not in before
    wait_until(
        lambda: served_run_ids(served) == {new_run},
        timeout=READY_TIMEOUT,
        what="the re-registered version 1 served by every worker",
        log_file=served.log_file,
    )
