"""`make train`'s command: parameters, and what a finished run prints and exits with."""

from __future__ import annotations

from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from prefect.states import Completed, Crashed, Failed

from stack.trigger import TriggerError, outcome, parse_parameters, run_link


def test_parameters_are_text_unless_they_are_json() -> None:
    parsed = parse_parameters(["train_month=2023-02", "val_month=null", "rounds=30", "x=a=b"])
    assert parsed == {"train_month": "2023-02", "val_month": None, "rounds": 30, "x": "a=b"}


@pytest.mark.parametrize("item", ["train_month", "=2023-02"])
def test_a_parameter_without_name_or_value_is_refused(item: str) -> None:
    with pytest.raises(TriggerError, match="name=value"):
        parse_parameters([item])


def run_in(state) -> FlowRun:  # noqa: ANN001 - a prefect State
    return FlowRun(id=uuid4(), name="lucky-otter", flow_id=uuid4(), state=state)


def test_a_completed_run_exits_0() -> None:
    assert outcome(run_in(Completed())).exit_code == 0


def test_a_failed_run_exits_1_and_says_why() -> None:
    message = "Flow run encountered an exception: ValueError: month must be 1..12, got 13"
    result = outcome(run_in(Failed(message=message)))
    assert result.exit_code == 1
    assert result.line == f"run 'lucky-otter' Failed: {message}"


def test_a_crashed_run_without_message_points_at_the_logs() -> None:
    result = outcome(run_in(Crashed(message=None)))
    assert result.exit_code == 1
    assert "Crashed" in result.line and "logs" in result.line


def test_the_link_points_at_the_run_in_the_ui() -> None:
    run_id = uuid4()
    with temporary_settings(
        updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}, set_defaults={PREFECT_UI_URL: None}
    ):
        link = run_link(run_id)
    assert link.endswith(f"/runs/flow-run/{run_id}")
    assert link.startswith("http://127.0.0.1:4200")
