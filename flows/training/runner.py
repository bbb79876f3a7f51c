"""Where the training flow's tasks run: on the Dask cluster at DASK_SCHEDULER_ADDRESS, else here.

The address is read when the flow module is imported: a deployment's flow run is a process of its
own (the process worker starts one per run), so the worker's environment decides each run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, wait
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from nyctaxi import cluster
from nyctaxi.cleaning import CleanedMonth, PreparedMonth
from nyctaxi.pipeline import TrainingWindow


def task_runner() -> TaskRunner[Any]:
    """A DaskTaskRunner on the configured scheduler, or threads in this process."""
    address = cluster.scheduler_address()
    if address is None:
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner  # imports distributed: only with a cluster

    cluster.check_can_connect(address)
    return DaskTaskRunner(address=address)  # Dask's connect timeout (cluster.connect)


def dask_client() -> Any | None:
    """The running flow's Dask client (None when its tasks run in this process); fails clearly
    when the scheduler has no worker instead of waiting for one forever."""
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    client = getattr(runner, "client", None)
    if client is None:
        return None
    timeout = cluster.connect_timeout_seconds()
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError as error:
        raise cluster.no_worker_error(client.scheduler.address, timeout) from error
    return client


def _completed(futures: Sequence[PrefectFuture[PreparedMonth]]) -> None:
    wait(list(futures))
    failed = [future for future in futures if not future.state.is_completed()]
    if failed:
        # The failed task's own exception, with its message.
        failed[0].result(raise_on_failure=True)
        raise RuntimeError(f"preparing a month ended {failed[0].state.name}")


def _state_trips(state: State) -> Any:
    return state.result().trips


def _state_facts(state: State) -> CleanedMonth:
    return state.result().facts


def window_from(futures: Sequence[PrefectFuture[PreparedMonth]]) -> TrainingWindow:
    """The prepared months as a training window. On Dask their rows stay on the workers that
    prepared them (the futures' results are task states there): only the facts come here."""
    _completed(futures)
    client = dask_client()
    if client is None:
        return TrainingWindow.of([future.result() for future in futures])
    from nyctaxi import daskfit

    wrapped = [future.wrapped_future for future in futures]  # type: ignore[attr-defined]
    return daskfit.window_of(client, wrapped, _state_trips, _state_facts)
