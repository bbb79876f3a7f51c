"""Fault drills of the prediction service: real gunicorn, real MLflow, real Prefect.

(a) MLflow killed while the service serves under load; a worker SIGKILLed during the outage
    (gunicorn respawns it) and then the whole service restarted, still during the outage: every
    worker serves the cached version and says so, and no request fails. MLflow restarted on the
    same port and store: the service follows the alias to a new version by itself.
(b) A broken version promoted (its shipped feature code raises): the current version keeps
    serving, the broken one is retried with growing intervals, and the refusal reaches the
    Prefect server as a `nyctaxi.model.refused` event.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench.serving_model import clean_month, register_version, train_booster
from nyctaxi import modelcode, names
from tests.integration.predict_drill import (
    READY_TIMEOUT,
    LoadClient,
    Service,
    mlflow_process,
    predict_service,
    refusal_attempts,
)
from tests.servers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

Measure = Callable[[str], None]


@pytest.fixture(scope="module")
def trips(data_dir: Path) -> pd.DataFrame:
    return clean_month(data_dir, "2023-01")


def small_booster(trips: pd.DataFrame, rounds: int):  # noqa: ANN201 - xgb.Booster
    return train_booster(trips, num_boost_round=rounds, max_depth=4, nthread=1)


# -- (a) MLflow down, workers restarted -----------------------------------------------------


def assert_cached_and_said(service: Service, pid: int, version: str) -> None:
    """Worker `pid` serves `version` from the cache, and /model and /ready say so."""
    model = service.model_from(pid)
    assert (model["version"], model["origin"]) == (version, "cache"), model
    assert model["registry"]["status"] == "unreachable"
    assert len(model["checksum"]) == 64
    ready = service.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["registry"] == "unreachable" and body["degraded"] is True, body


def test_mlflow_down_and_workers_restarted_then_mlflow_back(
    tmp_path: Path, trips: pd.DataFrame, measurement: Measure
) -> None:
    name = f"outage-{uuid.uuid4().hex[:8]}"
    cache = tmp_path / "model-cache"
    log_file = tmp_path / "predict.log"
    with mlflow_process(tmp_path / "mlflow") as mlflow:
        first = register_version(
            mlflow.url, name, small_booster(trips, 10), trips, alias="champion"
        )
        second = register_version(mlflow.url, name, small_booster(trips, 30), trips)
        sent = failed = dropped = 0

        # 1. Serving version 1; MLflow killed; a worker SIGKILLed and respawned meanwhile.
        with predict_service(log_file, mlflow.url, name, PREDICT_MODEL_CACHE_DIR=str(cache)) as svc:
            wait_until(
                lambda: svc.serving_only(first),
                timeout=READY_TIMEOUT,
                what="version 1",
                log_file=log_file,
            )
            pointer = json.loads(next(cache.rglob("pointers/champion.json")).read_text())
            assert pointer["version"] == first and len(pointer["checksum"]) == 64
            with LoadClient(svc.url) as load:
                load.wait_for(50)
                mlflow.kill()
                wait_until(
                    lambda: svc.gauge("predict_registry_up") == 0.0,
                    timeout=30,
                    what="the outage noticed by every worker",
                )
                before = svc.worker_pids()
                victim = min(before)
                os.kill(victim, signal.SIGKILL)
                killed_at = time.monotonic()
                wait_until(
                    lambda: len(svc.worker_pids() - before) == 1,
                    timeout=60,
                    what="the worker respawned",
                    log_file=log_file,
                )
                (respawned,) = svc.worker_pids() - before
                wait_until(
                    lambda: svc.gauge("predict_model_from_cache") == 1.0,
                    timeout=120,
                    what="the respawned worker serving from the cache",
                    log_file=log_file,
                )
                respawn_seconds = time.monotonic() - killed_at
                assert_cached_and_said(svc, respawned, first)
                load.wait_for(100)
            sent += len(load.outcomes) + len(load.errors)
            failed += len(load.failed())
            # The request the killed worker was answering dies with it (a reset connection).
            dropped += len(load.errors)
            assert not load.failed(), load.failed()[:5]
            assert len(load.errors) <= 1, load.errors
            assert {outcome.version for outcome in load.outcomes} == {first}

        # 2. The whole service restarted, MLflow still down: ready at once, from the cache.
        restart_log = tmp_path / "predict-restarted.log"
        restarted_at = time.monotonic()
        with predict_service(
            restart_log, mlflow.url, name, PREDICT_MODEL_CACHE_DIR=str(cache)
        ) as svc:
            # /health answers once one worker is up; each worker takes requests only once it
            # has tried to load a model (PREDICT_STARTUP_WAIT_SECONDS), from the cache here.
            wait_until(
                lambda: svc.gauge("predict_model_ready") == 1.0,
                timeout=READY_TIMEOUT,
                what="every worker serving from the cache",
                log_file=restart_log,
            )
            restart_seconds = time.monotonic() - restarted_at
            for pid in svc.worker_pids():
                assert_cached_and_said(svc, pid, first)
            paths_at_start = svc.per_worker("predict_worker_sys_path_entries")
            with LoadClient(svc.url) as load:
                load.wait_for(50)
                # 3. MLflow back on the same port and store; the alias moves to version 2.
                mlflow.start()
                back_at = time.monotonic()
                MlflowClient(mlflow.url).set_registered_model_alias(name, "champion", second)
                wait_until(
                    lambda: svc.serving_only(second) and svc.gauge("predict_registry_up") == 1.0,
                    timeout=READY_TIMEOUT,
                    what="version 2 served by every worker",
                    log_file=restart_log,
                )
                follow_seconds = time.monotonic() - back_at
                assert svc.gauge("predict_model_from_cache") == 0.0
                for pid in svc.worker_pids():
                    model = svc.model_from(pid)
                    assert (model["version"], model["origin"]) == (second, "registry")
                # two more swaps, for sys.path: it must not grow with each one
                for version in (first, second):
                    MlflowClient(mlflow.url).set_registered_model_alias(name, "champion", version)
                    wait_until(
                        lambda v=version: svc.serving_only(v),
                        timeout=READY_TIMEOUT,
                        what=f"version {version} again",
                        log_file=restart_log,
                    )
                load.wait_for(50)
            assert svc.per_worker("predict_worker_sys_path_entries") == paths_at_start
            sent += len(load.outcomes) + len(load.errors)
            failed += len(load.failed())
            assert not load.failed() and not load.errors, (load.failed()[:5], load.errors[:5])
            assert {outcome.version for outcome in load.outcomes} == {first, second}
    measurement(
        f"predict outage drill: {sent} /predict sent while MLflow was down and back, "
        f"{failed} non-2xx, {dropped} connection(s) dropped by the SIGKILLed worker; "
        f"respawned worker serving from the cache {respawn_seconds:.1f}s after the kill; "
        f"restarted service: every worker serving from the cache {restart_seconds:.1f}s "
        f"after the start; "
        f"version {second} served by every worker {follow_seconds:.1f}s after MLflow was back "
        f"(alias moved right then)"
    )


# -- (b) a broken version promoted ------------------------------------------------------------

BROKEN = """

# Broken on purpose by tests/integration/test_predict_outages.py: the version loads, and
# fails its warm-up (every prediction raises).
def ride_feature_matrix(*args, **kwargs):
    raise ValueError("broken on purpose")
"""


@pytest.fixture(scope="module")
def broken_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    package = tmp_path_factory.mktemp("broken") / "nyctaxi"
    shutil.copytree(
        modelcode.installed_package_dir(), package, ignore=shutil.ignore_patterns("__pycache__")
    )
    features = package / "features.py"
    features.write_text(features.read_text() + BROKEN)
    return package


def refused_events(api_url: str, model_name: str) -> list[dict]:
    """The nyctaxi.model.refused events of the model, read back from the Prefect server."""
    from prefect.client.orchestration import get_client

    body = {
        "filter": {
            "event": {"name": [names.REFUSED_EVENT]},
            "resource": {"id": [names.model_resource_id(model_name)]},
        },
        "limit": 50,
    }
    with get_client(sync_client=True) as client:
        response = client._client.post("/events/filter", json=body)
    response.raise_for_status()
    return response.json()["events"]


def test_a_broken_version_is_refused_with_backoff_and_announced(
    tmp_path: Path,
    trips: pd.DataFrame,
    broken_package: Path,
    mlflow_url: str,
    prefect_api: str,
    measurement: Measure,
) -> None:
    name = f"refused-{uuid.uuid4().hex[:8]}"
    log_file = tmp_path / "predict.log"
    good = register_version(mlflow_url, name, small_booster(trips, 10), trips, alias="champion")
    settings = {
        "PREDICT_MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
        "PREDICT_RELOAD_INTERVAL_SECONDS": "0.5",
        "PREDICT_REFUSED_RETRY_SECONDS": "1",
        "PREDICT_REFUSED_RETRY_MAX_SECONDS": "8",
        "PREFECT_API_URL": prefect_api,  # PREFECT_API_AUTH_STRING: from the fixture's env
    }
    with predict_service(log_file, mlflow_url, name, **settings) as svc:
        wait_until(
            lambda: svc.serving_only(good),
            timeout=READY_TIMEOUT,
            what="the good version",
            log_file=log_file,
        )
        paths_before = svc.per_worker("predict_worker_sys_path_entries")
        broken = register_version(
            mlflow_url, name, small_booster(trips, 10), trips, package_dir=broken_package
        )
        with LoadClient(svc.url) as load:
            load.wait_for(50)
            MlflowClient(mlflow_url).set_registered_model_alias(name, "champion", broken)
            promoted_at = time.time()

            def four_attempts_each() -> bool:
                attempts = refusal_attempts(svc.log_text(), broken)
                return len(attempts) == 2 and all(len(t) >= 4 for t in attempts.values())

            wait_until(
                four_attempts_each, timeout=120, what="4 attempts per worker", log_file=log_file
            )
            load.wait_for(50)
        assert not load.failed() and not load.errors, (load.failed()[:5], load.errors[:5])
        assert {outcome.version for outcome in load.outcomes} == {good}

        attempts = refusal_attempts(svc.log_text(), broken)
        intervals = {
            pid: [b - a for a, b in itertools.pairwise(t)][:3] for pid, t in attempts.items()
        }
        for pid, gaps in intervals.items():
            # 1 s, 2 s, 4 s (+ up to one 0.5 s poll each): growing, never the poll interval
            assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 3.9, (pid, gaps)
            assert gaps[0] < gaps[1] < gaps[2], (pid, gaps)
        model = svc.get("/model").json()
        assert model["version"] == good
        (refused,) = model["refused"]
        assert refused["version"] == broken and refused["attempts"] >= 4
        assert refused["reason"] == "warm-up failed (ValueError)"
        ready = svc.get("/ready").json()
        assert ready["degraded"] is True and f"version {broken}" in ready["detail"]
        # the broken version was downloaded once per worker at most, then read from the cache
        log = svc.log_text()
        assert log.count(f"downloading models:/{name}/{broken} ") <= 2
        assert svc.per_worker("predict_worker_sys_path_entries") == paths_before

        wait_until(
            lambda: len(refused_events(prefect_api, name)) >= 2,
            timeout=60,
            what="the refused events in Prefect",
        )
        events = refused_events(prefect_api, name)
        first_event = min(datetime.fromisoformat(e["occurred"]).timestamp() for e in events)
        payload = events[0]["payload"]
        assert payload["version"] == broken and payload["run_id"]
        assert payload["reason"].startswith("warm-up: ValueError: broken on purpose")
        assert payload["next_retry_seconds"] >= 1 and payload["worker"]["pid"] in attempts
        assert "://" not in payload["reason"]
        sent_per_worker = {e["payload"]["worker"]["pid"] for e in events}
    measurement(
        f"predict refused-version drill: {len(load.outcomes)} /predict sent, "
        f"{len(load.failed()) + len(load.errors)} failed; attempt intervals per worker (s): "
        + "; ".join(f"{[round(g, 1) for g in gaps]}" for gaps in intervals.values())
        + f"; {len(events)} refused events from {len(sent_per_worker)} workers, the first "
        f"{first_event - promoted_at:.1f}s after the alias moved"
    )
