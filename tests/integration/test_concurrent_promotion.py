"""One champion at a time: two training runs promoting at once, and a crashed lock holder.

Real Prefect server (its global concurrency limit is the lock), real MLflow server, real months.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect import get_client

from nyctaxi import names
from tests.servers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# One training flow run in its own process, as two workers would run them.
TRAIN = textwrap.dedent(
    """
    import json, sys
    from flows.training.flow import training_flow
    from nyctaxi.training import TrainingParams
    params = TrainingParams(**json.loads(sys.argv[2]))
    result = training_flow(
        train_month="2023-01", val_month="2023-02", model_name=sys.argv[1], hyperparams=params
    )
    print("RESULT " + result.model_dump_json(), flush=True)
    """
)

# Holds the promotion slot until killed.
HOLD = textwrap.dedent(
    """
    import time
    from prefect import flow
    from prefect.concurrency.sync import concurrency
    from flows.training.promotion_lock import ensure_limit
    from nyctaxi import names

    @flow
    def hold() -> None:
        ensure_limit()
        with concurrency(names.PROMOTION_LIMIT, occupy=1, lease_duration=60, strict=True):
            print("held", flush=True)
            time.sleep(600)

    hold()
    """
)


def start(code: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_env(prefect_api: str, mlflow_url: str, data_dir: Path, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "TAXI_DATA_DIR": str(data_dir),
        "TLC_ALLOW_DOWNLOAD": "false",
        "NYCTAXI_HOME": str(home),
        # Each run its own result store: this test is about the alias, not the month cache.
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect-results"),
    }


def result_of(log: Path) -> dict:
    lines = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result in {log}:\n{log.read_text()[-3000:]}"
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_two_runs_promoting_at_once_end_with_the_better_one_as_champion(
    prefect_api: str,
    mlflow_url: str,
    data_dir: Path,
    tmp_path: Path,
    measurement: Callable[[str], None],
) -> None:
    model_name = f"race-{uuid.uuid4().hex[:8]}"
    # Same months, same validation rows; 3 shallow rounds are far worse than the defaults.
    candidates = {"good": {}, "poor": {"num_boost_round": 3, "max_depth": 2}}
    runs = {}
    for label, params in candidates.items():
        env = run_env(prefect_api, mlflow_url, data_dir, tmp_path / label)
        log = tmp_path / f"{label}.log"
        runs[label] = (start(TRAIN, [model_name, json.dumps(params)], env, log), log)
    for process, log in runs.values():
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]

    results = {label: result_of(log) for label, (_, log) in runs.items()}
    first, second = sorted(results.values(), key=lambda r: int(r["model_version"]))
    # The lock serialised the gates: the second one scored the first one's champion, so it
    # did not also decide against "no champion" (which is what racing runs both do).
    assert first["champion_rmse"] is None
    assert second["champion_rmse"] == pytest.approx(first["val_rmse"], rel=1e-4)
    assert results["good"]["val_rmse"] < results["poor"]["val_rmse"]
    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    champion = client.get_model_version_by_alias(model_name, names.CHAMPION_ALIAS)
    assert str(champion.version) == results["good"]["model_version"]
    poor = client.get_model_version(model_name, results["poor"]["model_version"])
    if first is results["poor"]:  # the poor run promoted first, then lost the alias
        assert poor.tags["replaced"].startswith(f"by v{champion.version}: ")
    else:
        assert names.CHALLENGER_ALIAS in poor.aliases
        assert "does not beat" in poor.tags["promotion"]
    for _, log in runs.values():
        assert "holding the promotion lock" in log.read_text()
    order = "poor then good" if first is results["poor"] else "good then poor"
    measurement(
        f"concurrent training: gates ran {order}; champion v{champion.version} "
        f"(RMSE {results['good']['val_rmse']:.3f} vs {results['poor']['val_rmse']:.3f})"
    )


def test_a_crashed_holder_frees_the_promotion_slot_when_its_lease_runs_out(
    prefect_api: str, tmp_path: Path, measurement: Callable[[str], None]
) -> None:
    log = tmp_path / "holder.log"
    holder = start(HOLD, [], {**os.environ, "PREFECT_API_URL": prefect_api}, log)
    try:
        wait_until(lambda: "held" in log.read_text(), timeout=120, what="the holder's slot")
        with get_client(sync_client=True) as client:
            assert (
                client.read_global_concurrency_limit_by_name(names.PROMOTION_LIMIT).active_slots
                == 1
            )
        os.killpg(holder.pid, signal.SIGKILL)  # no release, no lease renewal any more
        killed = time.monotonic()

        def slot_free() -> bool:
            with get_client(sync_client=True) as client:
                limit = client.read_global_concurrency_limit_by_name(names.PROMOTION_LIMIT)
            return limit.active_slots == 0

        wait_until(slot_free, timeout=150, interval=2, what="the slot to be freed")
        seconds = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert seconds <= 60 + 15 + 10  # lease, the server's lease check interval, slack
    measurement(f"promotion lock: slot freed {seconds:.0f}s after its holder was SIGKILLed")
