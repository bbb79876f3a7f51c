"""The first training run: start one only when no champion exists and none is on its way.

`decide_first_run` is pure (unit-tested); the functions around it read MLflow and Prefect.
A restart (`down && up`, Ctrl-C then `make run`) must not retrain needlessly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlflow.tracking import MlflowClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment
from prefect.states import Crashed

from nyctaxi.names import CHAMPION_ALIAS, TRAINING_FLOW, WORK_POOL
from nyctaxi.registry import version_with_alias

logger = logging.getLogger(__name__)

# A scheduled run counts as "on its way" only if it is due soon: a monthly cron schedule
# keeps runs scheduled weeks ahead, and those must not stop the first training.
DUE_SOON = timedelta(minutes=15)
IN_FLIGHT = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING)


@dataclass(frozen=True)
class TrainingRunInfo:
    name: str
    state: StateType
    expected_start: datetime | None


@dataclass(frozen=True)
class FirstRunDecision:
    start: bool
    reason: str


def decide_first_run(
    champion_version: str | None, runs: list[TrainingRunInfo], now: datetime
) -> FirstRunDecision:
    """Whether the bootstrap should start a training run, and why (logged as is)."""
    if champion_version is not None:
        return FirstRunDecision(False, f"version {champion_version} is already @{CHAMPION_ALIAS}")
    for run in runs:
        if run.state in IN_FLIGHT:
            return FirstRunDecision(False, f"training run {run.name} is {run.state.value}")
        if run.state == StateType.SCHEDULED and (
            run.expected_start is None or run.expected_start <= now + DUE_SOON
        ):
            return FirstRunDecision(False, f"training run {run.name} is scheduled to start now")
    return FirstRunDecision(True, f"no version is @{CHAMPION_ALIAS} and no training run is due")


def champion_version(tracking_uri: str, model_name: str) -> str | None:
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = version_with_alias(client, model_name, CHAMPION_ALIAS)
    return None if version is None else str(version.version)


def pending_training_runs(client: SyncPrefectClient) -> list[TrainingRunInfo]:
    """Training flow runs that are scheduled, pending, running or cancelling."""
    states = [StateType.SCHEDULED, *IN_FLIGHT]
    runs: list[FlowRun] = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[TRAINING_FLOW])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=50,
    )
    return [
        TrainingRunInfo(run.name, run.state.type, run.expected_start_time)
        for run in runs
        if run.state is not None
    ]


def start_training_run(deployment: str) -> FlowRun:
    """Create a run of the deployment and return at once (the worker picks it up)."""
    flow_run = run_deployment(deployment, timeout=0, tags=["bootstrap"], as_subflow=False)
    logger.info("started training run %s (%s) of %s", flow_run.name, flow_run.id, deployment)
    return flow_run


def maybe_start_first_run(
    client: SyncPrefectClient, tracking_uri: str, model_name: str, deployment: str
) -> FlowRun | None:
    decision = decide_first_run(
        champion_version(tracking_uri, model_name),
        pending_training_runs(client),
        datetime.now(UTC),
    )
    logger.info(
        "first training run: %s (%s)", "start" if decision.start else "skip", decision.reason
    )
    return start_training_run(deployment) if decision.start else None


# Orphaned runs. `make run` (stack/supervisor.py) stops the Prefect server and the worker at the
# same moment, so a run that was going when the native stack stopped can stay "Running" for
# ever, and would then block the first training on the next start. The process worker records
# the run's PID; the native bootstrap runs on the workers' machine, so a recorded PID that is no
# Prefect process here means the run is gone. Off by default: a bootstrap on another machine
# than the workers can't tell.
def is_prefect_process(pid: int, proc: Path = Path("/proc")) -> bool:
    try:
        command = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return b"prefect" in command


def orphaned_runs(runs: list[FlowRun], is_alive: Callable[[int], bool]) -> list[FlowRun]:
    """Running runs whose recorded process is not alive (runs without a PID are left alone)."""
    orphans = []
    for run in runs:
        pid = str(run.infrastructure_pid or "").rpartition(":")[2]
        running = run.state is not None and run.state.type == StateType.RUNNING
        if running and pid.isdigit() and not is_alive(int(pid)):
            orphans.append(run)
    return orphans


def crash_orphaned_runs(client: SyncPrefectClient) -> int:
    """Mark this machine's orphaned runs of the work pool Crashed; return how many."""
    running = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
        ),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL])),
        limit=200,
    )
    orphans = orphaned_runs(running, is_prefect_process)
    for run in orphans:
        message = f"process {run.infrastructure_pid} is gone: the stack stopped while it ran"
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        logger.warning("flow run %s (%s): marked Crashed, %s", run.name, run.id, message)
    return len(orphans)
