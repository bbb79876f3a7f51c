"""Run a deployment on the running stack and wait for it: what `make train` runs.

    python -m stack.trigger training/train-local \
        --param train_month=2023-02 --param val_month=2023-03

Prints the run's link and each state it enters. Exit status: 0 when the run completes; 1 when it
ends in any other final state, with the state's message (the reason is then on the terminal,
not only in the worker's log); 2 when the deployment is not registered or a parameter is
malformed; 130 on Ctrl-C (the run itself goes on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from nyctaxi.names import S3_TAG, WORK_POOL
from services.bootstrap.deployments import registered_names

NOT_STARTED = (StateType.SCHEDULED, StateType.PENDING)


class TriggerError(RuntimeError):
    """The run could not be started; the message says why and what to do."""


def parse_parameters(items: list[str]) -> dict[str, object]:
    """`name=value` pairs; a value that is JSON (null, 3, [..]) is decoded, else kept as text."""
    parameters: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise TriggerError(f"--param takes name=value, got {item!r}")
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value
    return parameters


def run_link(run_id: UUID | str) -> str:
    """The run's page in the Prefect UI."""
    ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}"


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    line: str


def outcome(flow_run: FlowRun) -> Outcome:
    """How a finished run ends the command: its final state, and why when it did not complete."""
    state = flow_run.state
    if state is None:
        return Outcome(1, f"run '{flow_run.name}' has no state")
    if state.is_completed():
        return Outcome(0, f"run '{flow_run.name}' {state.name}")
    reason = (state.message or "no message: see the run's logs").strip()
    return Outcome(1, f"run '{flow_run.name}' {state.name}: {reason}")


def unknown_deployment(client: SyncPrefectClient, name: str) -> TriggerError:
    registered = sorted(registered_names(client))
    hint = (
        f" Deployments tagged '{S3_TAG}' in prefect.yaml need the S3 store: they are registered"
        " only on a stack with S3_ENDPOINT_URL set (the Docker stack)."
    )
    return TriggerError(
        f"deployment {name!r} is not registered on {PREFECT_API_URL.value()}; registered: "
        f"{', '.join(registered) or 'none (has the bootstrap run?)'}.{hint}"
    )


def wait_for_final_state(
    client: SyncPrefectClient,
    run_id: UUID,
    *,
    interval: float,
    hint_after: float,
    say: Callable[[str], None],
) -> FlowRun:
    """Poll the run until it is final; say each new state, and once if no worker takes it."""
    started = time.monotonic()
    seen: str | None = None
    hinted = False
    while True:
        flow_run = client.read_flow_run(run_id)
        state = flow_run.state
        if state is not None and state.name != seen:
            seen = state.name
            say(f"  {state.name}")
        if state is not None and state.is_final():
            return flow_run
        waiting = time.monotonic() - started
        if not hinted and state is not None and state.type in NOT_STARTED and waiting > hint_after:
            hinted = True
            say(
                f"  still {state.name} after {waiting:.0f}s: is a worker running on the pool "
                f"'{WORK_POOL}'? (make run starts one; `make ps` shows the Docker stack's)"
            )
        time.sleep(interval)


def trigger(deployment: str, parameters: dict[str, object], say: Callable[[str], None]) -> Outcome:
    with get_client(sync_client=True) as client:
        try:
            flow_run = run_deployment(
                deployment, parameters=parameters, timeout=0, as_subflow=False
            )
        except ObjectNotFound:
            raise unknown_deployment(client, deployment) from None
        shown = " ".join(f"{key}={value}" for key, value in parameters.items())
        say(f"started {deployment} run '{flow_run.name}' {shown}".rstrip())
        say(f"  {run_link(flow_run.id)}")
        try:
            finished = wait_for_final_state(
                client, flow_run.id, interval=2.0, hint_after=60.0, say=say
            )
        except KeyboardInterrupt:
            return Outcome(130, f"stopped waiting; the run goes on: {run_link(flow_run.id)}")
    return outcome(finished)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a deployment and wait for its result.")
    parser.add_argument("deployment", help="flow/deployment, e.g. training/train-local")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    args = parser.parse_args(argv)

    return run_cli(lambda say: trigger(args.deployment, parse_parameters(args.param), say))


def say_line(line: str) -> None:
    print(line, flush=True)  # noqa: T201 - the CLI's own output


def run_cli(
    work: Callable[[Callable[[str], None]], Outcome],
    refused: tuple[type[Exception], ...] = (TriggerError,),
) -> int:
    """Run `work` with a printer; exit 2 on a refused request, else the outcome's code, its
    last line on stdout (success) or stderr."""
    try:
        result = work(say_line)
    except refused as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    print(result.line, file=sys.stdout if result.exit_code == 0 else sys.stderr)  # noqa: T201
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
