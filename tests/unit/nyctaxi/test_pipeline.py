"""The training run's step order, with recording stand-ins for every step."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import xgboost as xgb

from nyctaxi import cleaning, pipeline
from nyctaxi.locate import IngestedMonth
from nyctaxi.months import MonthPairError
from nyctaxi.registry import PromotionDecision
from nyctaxi.report import MonthSummary, RunReport
from nyctaxi.training import TrainingParams

PARAMS = TrainingParams(num_boost_round=5)


def request(train: str = "2023-01", val: str = "2023-02") -> pipeline.TrainingRequest:
    return pipeline.TrainingRequest(train, train, val, "taxi-test", PARAMS)


class Recorder:
    """Every step of a run, recording its name and arguments; the champion is configurable."""

    def __init__(self, champion: pipeline.Champion | None = None, val_rmse: float = 4.5) -> None:
        self.champion = champion
        self.val_rmse = val_rmse
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.trips = {
            month: pd.DataFrame({"duration": [float(n)] * n})
            for n, month in ((3, "2023-01"), (2, "2023-02"))
        }

    def record(self, name: str, *args: object) -> None:
        self.calls.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def args(self, name: str) -> tuple[object, ...]:
        return next(args for called, args in self.calls if called == name)

    def steps(self) -> pipeline.Steps:
        return pipeline.Steps(
            ingest=self.ingest,
            prepare=functools.partial(pipeline.prepare_in_process, self.prepare),
            fit=self.fit_window,
            score_champion=self.score_champion,
            log_and_register=self.log_and_register,
            promote=self.promote,
            promotion_lock=self.promotion_lock,
            run_url=self.run_url,
            announce_promotion=lambda report: self.record("announce", report),
            publish_report=lambda report: self.record("publish", report),
        )

    def ingest(self, months: list[str]) -> list[IngestedMonth]:
        self.record("ingest", months)
        return [IngestedMonth(m, f"/data/{m}", m[-1] * 64, "local", None) for m in months]

    def prepare(self, month: IngestedMonth) -> cleaning.PreparedMonth:
        self.record("prepare", month.month)
        trips = self.trips[month.month]
        facts = cleaning.CleanedMonth(month.month, month.sha256, len(trips) + 1, len(trips))
        return cleaning.PreparedMonth(trips, facts)

    def fit_window(
        self, window: pipeline.TrainingWindow, val: pd.DataFrame, params: TrainingParams
    ) -> pipeline.Fit:
        train = pd.concat(window.parts)
        self.record("fit", len(train), len(val), params)
        return pipeline.Fit(xgb.Booster(), self.val_rmse, 3.0, 0.25, len(train), len(val))

    def score_champion(self, model_name: str, val: pd.DataFrame) -> pipeline.Champion | None:
        self.record("score_champion", model_name, len(val))
        return self.champion

    def log_and_register(
        self,
        fit: pipeline.Fit,
        months: Sequence[MonthSummary],
        params: TrainingParams,
        val: pd.DataFrame,
    ) -> tuple[str, str]:
        self.record("log_and_register", tuple(months), params, len(val))
        return "run-1", "7"

    def promote(
        self,
        model_name: str,
        version: str,
        decision: PromotionDecision,
        val_rmse: float,
        *,
        train_month: str,
        val_month: str,
    ) -> None:
        self.record(
            "promote", model_name, version, decision.alias, val_rmse, train_month, val_month
        )

    @contextmanager
    def promotion_lock(self, model_name: str) -> Iterator[None]:
        self.record("lock", model_name)
        try:
            yield
        finally:
            self.record("unlock", model_name)

    def run_url(self, run_id: str) -> str | None:
        self.record("run_url", run_id)
        return f"http://mlflow/runs/{run_id}"


def test_a_first_model_runs_every_step_in_order_and_is_announced() -> None:
    steps = Recorder()
    result = pipeline.run_training(request(), steps.steps())

    assert steps.names() == [
        "ingest",
        "prepare",
        "prepare",
        "fit",
        "lock",
        "score_champion",
        "log_and_register",
        "promote",
        "unlock",
        "run_url",
        "announce",
        "publish",
    ]
    assert steps.args("ingest") == (["2023-01", "2023-02"],)
    assert steps.args("lock") == ("taxi-test",)
    assert steps.args("fit") == (3, 2, PARAMS)  # train rows, then validation rows
    assert steps.args("score_champion") == ("taxi-test", 2)  # on the validation rows
    assert steps.args("promote") == ("taxi-test", "7", "champion", 4.5, "2023-01", "2023-02")
    assert result.alias == "champion"
    assert result.champion_rmse is None


def test_the_months_are_logged_with_their_roles_and_facts() -> None:
    steps = Recorder()
    pipeline.run_training(request(), steps.steps())

    months, params, val_rows = steps.args("log_and_register")
    assert months == (
        MonthSummary("2023-01", "train", "1" * 64, 4, 3),
        MonthSummary("2023-02", "validation", "2" * 64, 3, 2),
    )
    assert (params, val_rows) == (PARAMS, 2)


def test_a_model_that_does_not_beat_the_champion_is_a_challenger_and_not_announced() -> None:
    steps = Recorder(champion=("3", 4.0), val_rmse=4.5)
    result = pipeline.run_training(request(), steps.steps())

    assert "announce" not in steps.names()
    assert steps.names()[-1] == "publish"
    assert result.alias == "challenger"
    assert result.champion_rmse == 4.0
    assert "does not beat champion v3" in result.reason


def test_the_report_and_the_result_say_the_same() -> None:
    steps = Recorder(champion=("3", 5.0), val_rmse=4.5)
    result = pipeline.run_training(request(), steps.steps())

    [report] = steps.args("publish")
    assert isinstance(report, RunReport)
    assert report == RunReport(
        "taxi-test",
        "7",
        "champion",
        result.reason,
        4.5,
        3.0,
        "3",
        5.0,
        0.25,
        report.months,
        "http://mlflow/runs/run-1",
    )
    assert steps.args("announce") == (report,)
    assert result.model_dump() == {
        "run_id": "run-1",
        "model_name": "taxi-test",
        "model_version": "7",
        "alias": "champion",
        "reason": result.reason,
        "val_rmse": 4.5,
        "val_mae": 3.0,
        "champion_rmse": 5.0,
        "train_rows": 3,
        "val_rows": 2,
        "train_seconds": 0.25,
        "train_month": "2023-01",
        "val_month": "2023-02",
        "train_from": "2023-01",
        "train_to": "2023-01",
        "engine": "in-process",
        "workers": 1,
    }


@pytest.mark.parametrize(("train", "val"), [("2023-02", "2023-02"), ("2023-03", "2023-02")])
def test_a_pair_that_is_not_out_of_sample_is_refused_before_any_step(train: str, val: str) -> None:
    with pytest.raises(MonthPairError):
        request(train, val)


def test_a_malformed_month_is_refused() -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        request("2023-1", "2023-02")


def test_fit_and_evaluate_scores_the_validation_month(
    tlc_month: Callable[[str], Path],
) -> None:
    def clean(month: str) -> pd.DataFrame:
        raw = cleaning.read_trips(tlc_month(month))
        return cleaning.clean_trips(raw, month, min_rows=10).trips

    train, val = clean("2023-01"), clean("2023-02")
    fit = pipeline.fit_and_evaluate(train, val, PARAMS)

    assert (fit.train_rows, fit.val_rows) == (len(train), len(val))
    assert 0 < fit.val_mae <= fit.val_rmse < 60
    assert fit.train_seconds >= 0
    assert fit.metrics() == {
        "val_rmse": fit.val_rmse,
        "val_mae": fit.val_mae,
        "train_seconds": fit.train_seconds,
        "train_rows": len(train),
        "val_rows": len(val),
        "workers": 1,
    }


def test_a_failed_registration_releases_the_promotion_lock() -> None:
    steps = Recorder()

    def refuse(*args: object) -> tuple[str, str]:
        steps.record("log_and_register", *args)
        raise RuntimeError("registry refused")

    with pytest.raises(RuntimeError, match="registry refused"):
        pipeline.run_training(
            request(), dataclasses.replace(steps.steps(), log_and_register=refuse)
        )

    assert steps.names()[-3:] == ["score_champion", "log_and_register", "unlock"]


def test_a_window_prepares_every_month_and_fits_on_all_their_rows() -> None:
    steps = Recorder()
    steps.trips["2022-12"] = pd.DataFrame({"duration": [1.0] * 4})
    window = pipeline.TrainingRequest("2022-12", "2023-01", "2023-02", "taxi-test", PARAMS)

    result = pipeline.run_training(window, steps.steps())

    assert steps.args("ingest") == (["2022-12", "2023-01", "2023-02"],)
    assert [args for name, args in steps.calls if name == "prepare"] == [
        ("2022-12",),
        ("2023-01",),
        ("2023-02",),
    ]
    assert steps.args("fit") == (4 + 3, 2, PARAMS)
    months, _, _ = steps.args("log_and_register")
    assert [(m.month, m.role) for m in months] == [
        ("2022-12", "train"),
        ("2023-01", "train"),
        ("2023-02", "validation"),
    ]
    # The version's train_month is the newest training month (monitoring's drift reference).
    assert steps.args("promote")[-2:] == ("2023-01", "2023-02")
    assert (result.train_from, result.train_to, result.train_month) == (
        "2022-12",
        "2023-01",
        "2023-01",
    )


@pytest.mark.parametrize(
    ("first", "last", "val"),
    [
        ("2023-02", "2023-01", "2023-03"),
        ("2023-01", "2023-02", "2023-02"),
        ("2020-01", "2023-01", "2023-02"),
    ],
)
def test_a_bad_window_fails_before_any_step(first: str, last: str, val: str) -> None:
    with pytest.raises(MonthPairError):
        pipeline.TrainingRequest(first, last, val, "taxi-test", PARAMS)
