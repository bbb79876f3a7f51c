"""`make monitor-backfill`'s command: the months, the arguments it refuses, and that it runs the
months in order and stops at the first run that fails."""

from __future__ import annotations

import pytest

from stack import backfill as backfill_module
from stack.backfill import DEPLOYMENT, BackfillError, backfill, main, month_range
from stack.trigger import Outcome, TriggerError


def test_the_range_holds_every_month_in_order_across_years() -> None:
    assert month_range("2022-11", "2023-02") == ["2022-11", "2022-12", "2023-01", "2023-02"]
    assert month_range("2021-02", "2021-02") == ["2021-02"]


def test_from_after_to_is_refused() -> None:
    with pytest.raises(BackfillError, match=r"FROM \(2023-03\) is after TO \(2023-01\)"):
        month_range("2023-03", "2023-01")


@pytest.mark.parametrize("bad", ["2023-1", "2023/01", "2023-13", "", " ", "jan"])
def test_a_malformed_month_is_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(BackfillError, match="2023-01"):
        month_range(bad, "2023-06")
    with pytest.raises(BackfillError):
        month_range("2023-01", bad)


class Runs:
    """A stand-in for stack.trigger.trigger: records the calls, fails the months it is told."""

    def __init__(self, failing: set[str] = frozenset()) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.failing = failing

    def __call__(self, deployment: str, parameters: dict[str, object], say) -> Outcome:  # noqa: ANN001
        self.calls.append((deployment, parameters))
        if parameters["month"] in self.failing:
            return Outcome(1, "run 'lucky-otter' Failed: month not found")
        return Outcome(0, "run 'lucky-otter' Completed")


def test_each_month_is_monitored_in_order() -> None:
    runs, said = Runs(), []
    result = backfill(["2023-01", "2023-02", "2023-03"], said.append, runs)
    assert result.exit_code == 0
    assert runs.calls == [(DEPLOYMENT, {"month": m}) for m in ("2023-01", "2023-02", "2023-03")]
    assert DEPLOYMENT == "monitoring/monitor-month"
    assert "3 month(s), 2023-01 to 2023-03" in result.line


def test_the_first_failure_stops_the_backfill_and_names_the_months_left() -> None:
    runs = Runs(failing={"2023-02"})
    result = backfill(["2023-01", "2023-02", "2023-03", "2023-04"], [].append, runs)
    assert result.exit_code == 1
    assert [params["month"] for _, params in runs.calls] == ["2023-01", "2023-02"]
    assert result.line.startswith("stopped at 2023-02: run 'lucky-otter' Failed: month not found")
    assert result.line.endswith("not monitored: 2023-03, 2023-04")


def test_a_ctrl_c_while_waiting_stops_with_its_own_status() -> None:
    def interrupted(deployment: str, parameters: dict[str, object], say) -> Outcome:  # noqa: ANN001
        return Outcome(130, "stopped waiting; the run goes on")

    assert backfill(["2023-01", "2023-02"], [].append, interrupted).exit_code == 130


def test_bad_arguments_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--from", "2023-05", "--to", "2023-01"]) == 2
    assert "is after TO" in capsys.readouterr().err
    assert main(["--from", "2023-5", "--to", "2023-06"]) == 2
    assert "YYYY-MM" in capsys.readouterr().err
    with pytest.raises(SystemExit) as missing:
        main(["--from", "2023-01"])
    assert missing.value.code == 2


def test_an_unregistered_deployment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unregistered(deployment: str, parameters: dict[str, object], say) -> Outcome:  # noqa: ANN001
        raise TriggerError(f"deployment {deployment!r} is not registered")

    monkeypatch.setattr(backfill_module, "trigger", unregistered)
    assert main(["--from", "2023-01", "--to", "2023-02"]) == 2
    assert "monitoring/monitor-month" in capsys.readouterr().err
