"""Postgres down in the middle of a training run, drilled for real.

One throwaway Postgres cluster holds the Prefect server's database and the MLflow server's
(tracking store and basic-auth user store, as in the compose stack). The training flow runs in
this process against both servers. Postgres is stopped the way a crash stops it (`pg_ctl stop -m
immediate`: no checkpoint, crash recovery on start) while the model is being fitted, and kept
down until the run has hit the outage (a request of the run failed on the Prefect server), then
started again. Neither server is touched: they must reconnect by themselves, the run must end
Completed or Failed (never stuck Running), and the next run must complete.

The clients run as both stacks must run them: with PREFECT_CLIENT_RETRY_EXTRA_CODES=500. The
Prefect server answers 500, not 503, while Postgres refuses connections (asyncpg's
ConnectionRefusedError is not one of the errors it maps to a retryable 503), and without that
setting the run's first API call in the outage fails the run, and then its final state cannot be
written either.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_CLIENT_RETRY_EXTRA_CODES,
    temporary_settings,
)
from prefect.states import State

from flows.training.flow import training_flow
from nyctaxi import names, pipeline
from tests.servers import (
    MlflowAuth,
    PostgresCluster,
    mlflow_server,
    postgres_cluster,
    prefect_server,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

Measure = Callable[[str], None]
AUTH = MlflowAuth()


@dataclass(frozen=True)
class Servers:
    prefect_api: str
    mlflow_url: str
    prefect_log: Path


def http_status(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def prefect_answers(api: str) -> bool:
    """A request that needs the database, not just the process (/health does not)."""
    filter_runs = http_status(
        f"{api}/flow_runs/filter",
        {"Content-Type": "application/json"},
        b'{"limit": 1}',
    )
    return http_status(f"{api}/ready") == 200 and filter_runs == 200


def mlflow_answers(url: str) -> bool:
    token = base64.b64encode(f"{AUTH.admin_username}:{AUTH.admin_password}".encode()).decode()
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    return http_status(search, {"Authorization": f"Basic {token}"}) == 200


@contextlib.contextmanager
def servers_on(pg: PostgresCluster, root: Path) -> Iterator[Servers]:
    """Prefect and MLflow on the cluster, started side by side (MLflow's migrations take ~1 min)."""
    urls = {name: pg.create_database(name) for name in ("prefect", "mlflow", "mlflow_auth")}
    prefect = prefect_server(
        root / "prefect", database_url=f"postgresql+asyncpg://{urls['prefect']}"
    )
    mlflow = mlflow_server(
        root / "mlflow",
        backend_uri=f"postgresql+psycopg2://{urls['mlflow']}",
        auth=AUTH,
        env={"MLFLOW_AUTH_DATABASE_URI": f"postgresql+psycopg2://{urls['mlflow_auth']}"},
    )
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        futures = {server: pool.submit(server.__enter__) for server in (prefect, mlflow)}
        for server, future in futures.items():
            if future.exception() is None:  # waits; a server that started is stopped on exit
                stack.push(server.__exit__)
        api, url = futures[prefect].result(), futures[mlflow].result()
        yield Servers(api, url, root / "prefect" / "prefect-server.log")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[PostgresCluster, Servers]]:
    with postgres_cluster() as pg, servers_on(pg, tmp_path) as running:
        yield pg, running


@pytest.fixture
def training_env(
    servers: tuple[PostgresCluster, Servers],
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """The pipeline's environment against these servers; yields a fresh model name."""
    _, running = servers
    monkeypatch.setenv("NYCTAXI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TAXI_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TLC_ALLOW_DOWNLOAD", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", running.mlflow_url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", AUTH.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", AUTH.admin_password)
    monkeypatch.delenv("MODEL_NAME", raising=False)
    settings = {PREFECT_API_URL: running.prefect_api, PREFECT_CLIENT_RETRY_EXTRA_CODES: {500}}
    with temporary_settings(updates=settings):
        yield f"nyc-taxi-duration-{uuid.uuid4().hex[:8]}"


def training_run() -> FlowRun | None:
    """The newest training flow run (its ingest subflow is a flow run of its own)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[names.TRAINING_FLOW])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=1,
        )
    return runs[0] if runs else None


def task_runs(flow_run_id: uuid.UUID) -> list[TaskRun]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


# A route of the API in a traceback of the server's log: each request it could not answer
# (the log shipper's POST /logs left out: the run's own calls are what must ride the outage).
_NOT_A_ROUTE = r"(?!(?:logs|server|middleware|dependencies)\.py)"
_FAILED_ROUTE = re.compile(rf'prefect/server/api/{_NOT_A_ROUTE}\w+\.py", line \d+, in (\w+)')


def failed_requests(log: Path) -> list[str]:
    """The API routes the Prefect server failed to answer so far, one entry per traceback line."""
    return _FAILED_ROUTE.findall(log.read_text(errors="replace"))


@dataclass
class FitSignals:
    """Set by the fit step of the run under test: when it starts and when it has returned."""

    started: threading.Event = field(default_factory=threading.Event)
    returned: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def fit_signals(monkeypatch: pytest.MonkeyPatch) -> FitSignals:
    signals = FitSignals()
    fit = pipeline.fit_and_evaluate

    def signalling_fit(*args: Any, **kwargs: Any) -> pipeline.Fit:
        signals.started.set()
        try:
            return fit(*args, **kwargs)
        finally:
            signals.returned.set()

    monkeypatch.setattr(pipeline, "fit_and_evaluate", signalling_fit)
    return signals


def test_postgres_crash_mid_training_servers_reconnect_and_the_next_run_completes(
    servers: tuple[PostgresCluster, Servers],
    training_env: str,
    fit_signals: FitSignals,
    measurement: Measure,
) -> None:
    pg, running = servers
    model_name = training_env
    outcome: list[State | BaseException] = []

    def train() -> None:
        try:
            outcome.append(
                training_flow(
                    train_month="2023-01",
                    val_month="2023-02",
                    model_name=model_name,
                    return_state=True,
                )
            )
        except BaseException as error:  # noqa: BLE001 - reported by the assertions below
            outcome.append(error)

    started = time.monotonic()
    # A copy of this context: the thread's Prefect client points at these servers.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(train,))
    thread.start()
    assert fit_signals.started.wait(timeout=300), "the run never reached the fit"
    into_run = time.monotonic() - started
    errors_before = len(failed_requests(running.prefect_log))
    pg.stop("immediate")  # as a crash: no checkpoint, connections cut, crash recovery on start
    down_at = time.monotonic()
    assert fit_signals.returned.wait(timeout=300), "the fit never returned"
    # Down until the run has hit the outage: one of its requests failed on the Prefect server.
    wait_until(
        lambda: len(failed_requests(running.prefect_log)) > errors_before,
        timeout=60,
        what="a request of the run failing on the Prefect server",
    )
    hit = sorted(set(failed_requests(running.prefect_log)[errors_before:]))
    pg.start()  # same port, socket folder and address
    back = time.monotonic()
    down = back - down_at
    wait_until(lambda: prefect_answers(running.prefect_api), timeout=60, what="Prefect again")
    prefect_after = time.monotonic() - back
    wait_until(lambda: mlflow_answers(running.mlflow_url), timeout=60, what="MLflow again")
    mlflow_after = time.monotonic() - back

    thread.join(timeout=300)
    assert not thread.is_alive(), "the training run did not end"
    [state] = outcome
    assert isinstance(state, State), repr(state)
    # What the API says, once the final state is recorded: never left Running.
    wait_until(
        lambda: (r := training_run()) is not None and r.state is not None and r.state.is_final(),
        timeout=60,
        what="the run's final state in the API",
    )
    recorded = training_run()
    assert recorded is not None and recorded.state is not None
    assert recorded.state.type == state.type
    assert state.is_completed(), f"{state.type.value}: {state.message}"
    tasks = task_runs(recorded.id)
    stuck = [t.name for t in tasks if t.state is not None and t.state.is_running()]
    retried = {t.name: t.run_count for t in tasks if t.run_count > 1}
    ended_after = time.monotonic() - back

    next_run = training_flow(train_month="2023-01", val_month="2023-02", model_name=model_name)
    assert next_run.model_version == "2"
    total = time.monotonic() - started

    measurement(
        f"Postgres crashed {into_run:.0f}s into a training run (during the fit), down {down:.1f}s "
        f"(until the run's requests failed: {', '.join(hit)}); Prefect answered again "
        f"{prefect_after:.1f}s and "
        f"MLflow {mlflow_after:.1f}s after it was back, neither restarted"
    )
    measurement(
        f"  the run ended {state.type.value} {ended_after:.0f}s after Postgres was back; "
        f"task retries {retried or 'none'}; task runs left Running in the API: "
        f"{stuck or 'none'}; the next run completed (v{next_run.model_version}, "
        f"{next_run.alias}); drill {total:.0f}s"
    )
