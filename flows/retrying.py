"""Task retries decided by what failed: one place that turns "is this error worth another try?"
into the `retry_condition_fn` Prefect asks after each failed attempt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

RetryCondition = Callable[[Task[..., Any], TaskRun, State], bool]


def retry_when(worth_retrying: Callable[[Exception], bool]) -> RetryCondition:
    """A retry condition that retries a failed attempt when `worth_retrying(its error)`."""

    def condition(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
        try:
            state.result()
        except Exception as error:  # noqa: BLE001 - classified, not handled
            return worth_retrying(error)
        return False

    return condition
