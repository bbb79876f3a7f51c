"""Whether the bootstrap starts the first training run, and which runs count as orphaned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun, State, StateType

from services.bootstrap.first_run import (
    DUE_SOON,
    TrainingRunInfo,
    decide_first_run,
    is_prefect_process,
    orphaned_runs,
)

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def run(state: StateType, starts_in: timedelta | None = timedelta(0)) -> TrainingRunInfo:
    start = None if starts_in is None else NOW + starts_in
    return TrainingRunInfo(name=f"run-{state.value.lower()}", state=state, expected_start=start)


def test_no_champion_and_no_run_starts_training() -> None:
    decision = decide_first_run(None, [], NOW)
    assert decision.start
    assert "no version is @champion" in decision.reason


def test_existing_champion_never_retrains() -> None:
    decision = decide_first_run("3", [], NOW)
    assert not decision.start
    assert "version 3" in decision.reason


@pytest.mark.parametrize("state", [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING])
def test_run_in_flight_blocks_a_second_one(state: StateType) -> None:
    decision = decide_first_run(None, [run(state)], NOW)
    assert not decision.start
    assert state.value in decision.reason


@pytest.mark.parametrize("starts_in", [timedelta(0), -timedelta(hours=1), DUE_SOON, None])
def test_run_scheduled_now_blocks_a_second_one(starts_in: timedelta | None) -> None:
    assert not decide_first_run(None, [run(StateType.SCHEDULED, starts_in)], NOW).start


def test_monthly_schedule_weeks_ahead_does_not_block_the_first_run() -> None:
    later = run(StateType.SCHEDULED, timedelta(days=12))
    assert decide_first_run(None, [later], NOW).start


def flow_run(state: StateType, pid: str | None) -> FlowRun:
    return FlowRun(
        id=uuid4(),
        name=f"r-{pid}",
        flow_id=uuid4(),
        infrastructure_pid=pid,
        state=State(type=state),
    )


def test_orphans_are_running_runs_whose_process_is_gone() -> None:
    alive = {101}
    runs = [
        flow_run(StateType.RUNNING, "101"),  # still going
        flow_run(StateType.RUNNING, "202"),  # gone: orphan
        flow_run(StateType.RUNNING, "host:303"),  # "host:pid" form, gone: orphan
        flow_run(StateType.RUNNING, None),  # no PID recorded yet: can't tell, left alone
        flow_run(StateType.COMPLETED, "404"),  # finished runs are never touched
    ]
    orphans = orphaned_runs(runs, lambda pid: pid in alive)
    assert [r.infrastructure_pid for r in orphans] == ["202", "host:303"]


def test_is_prefect_process_reads_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cmdline").write_bytes(b"/venv/bin/python\0-m\0prefect.engine\0")
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "cmdline").write_bytes(b"/usr/bin/vim\0notes.txt\0")  # PID reused
    assert is_prefect_process(7, proc=tmp_path)
    assert not is_prefect_process(8, proc=tmp_path)
    assert not is_prefect_process(9, proc=tmp_path)  # no such process
