"""One training run, step by step: the order is defined here once, the steps are injected.

The Prefect flow (flows/training/flow.py) passes tasks that wrap the library functions; the
in-process training CLI passes the library functions themselves. Both get the same run: ingest
both months, prepare them, fit and evaluate; then, holding the model's promotion lock, score the
champion on the same validation rows, log and register, decide and apply the promotion; announce
it, publish the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import xgboost as xgb
from pydantic import BaseModel, ConfigDict

from nyctaxi import evaluation, tracking
from nyctaxi.cleaning import CleanedMonth, PreparedMonth
from nyctaxi.config import PipelineSettings
from nyctaxi.locate import IngestedMonth
from nyctaxi.months import check_training_window, month_range
from nyctaxi.names import ENGINE_IN_PROCESS as IN_PROCESS
from nyctaxi.registry import PromotionDecision, decide_promotion
from nyctaxi.report import MonthSummary, RunReport
from nyctaxi.training import TrainingParams, train_on_trips


@dataclass(frozen=True)
class TrainingRequest:
    """What to train: a window of months (one by default) and a later validation month;
    validated on creation, so a bad window fails before any work."""

    train_from: str
    train_to: str
    val_month: str
    model_name: str
    hyperparams: TrainingParams

    def __post_init__(self) -> None:
        check_training_window(self.train_from, self.train_to, self.val_month)

    @property
    def train_months(self) -> list[str]:
        return [str(month) for month in month_range(self.train_from, self.train_to)]

    @property
    def train_month(self) -> str:
        """The newest training month: the version's `train_month` tag, the month monitoring
        compares drift against."""
        return self.train_to


@dataclass(frozen=True)
class Fit:
    """A booster fitted on the training window and its scores on the validation month."""

    booster: xgb.Booster
    val_rmse: float
    val_mae: float
    train_seconds: float  # features, fit and evaluation
    train_rows: int
    val_rows: int
    engine: str = IN_PROCESS  # where the booster was fitted: "in-process" or "dask"
    workers: int = 1  # processes that fitted it (Dask workers)

    def metrics(self) -> dict[str, float]:
        """The metrics logged to MLflow (names as in the run)."""
        return {
            "val_rmse": self.val_rmse,
            "val_mae": self.val_mae,
            "train_seconds": self.train_seconds,
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
            "workers": self.workers,
        }


@dataclass(frozen=True)
class TrainingWindow:
    """The prepared training months: their cleaning facts, and their rows where the fit step
    finds them (DataFrames in this process, or futures of DataFrames on a Dask cluster)."""

    facts: tuple[CleanedMonth, ...]
    parts: tuple[Any, ...]

    @property
    def rows(self) -> int:
        return sum(month.rows_kept for month in self.facts)

    @classmethod
    def of(cls, prepared: Sequence[PreparedMonth]) -> TrainingWindow:
        """Months prepared in this process: their rows are the DataFrames themselves."""
        return cls(tuple(p.facts for p in prepared), tuple(p.trips for p in prepared))


def fit_and_evaluate(train: pd.DataFrame, val: pd.DataFrame, hyperparams: TrainingParams) -> Fit:
    """Fit on the training rows, score on the validation month; train_seconds times both."""
    started = time.perf_counter()
    booster = train_on_trips(train, hyperparams)
    scores = evaluation.evaluate_on_trips(booster, val)
    seconds = round(time.perf_counter() - started, 3)
    return Fit(booster, scores.rmse, scores.mae, seconds, len(train), len(val))


def prepare_in_process(
    prepare: Callable[[IngestedMonth], PreparedMonth],
    train: Sequence[IngestedMonth],
    val: IngestedMonth,
) -> PreparedMonths:
    """Each month in turn in this process (the Steps.prepare of a run without Prefect)."""
    prepared = [prepare(month) for month in train]
    return TrainingWindow.of(prepared), prepare(val)


def fit_window_in_process(
    window: TrainingWindow, val: pd.DataFrame, hyperparams: TrainingParams
) -> Fit:
    """The window's months as one frame in this process, then fit_and_evaluate."""
    frames = list(window.parts)
    train = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return fit_and_evaluate(train, val, hyperparams)


class TrainingResult(BaseModel):
    """What a run returns (the flow's result, the CLI's JSON)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    model_name: str
    model_version: str
    alias: str
    reason: str
    val_rmse: float
    val_mae: float
    champion_rmse: float | None
    train_rows: int
    val_rows: int
    train_seconds: float
    train_month: str  # the newest training month (train_to)
    val_month: str
    train_from: str
    train_to: str
    engine: str  # where the booster was fitted: "in-process" or "dask"
    workers: int


def log_and_register(
    settings: PipelineSettings,
    fit: Fit,
    months: Sequence[MonthSummary],
    hyperparams: TrainingParams,
    val: pd.DataFrame,
) -> tuple[str, str]:
    """Log the run (with the engine that fitted it) and the model to MLflow and register it;
    returns (run id, version)."""
    return tracking.log_run(
        settings, fit.booster, fit.metrics(), months, hyperparams, val, {"engine": fit.engine}
    )


PreparedMonths = tuple[TrainingWindow, PreparedMonth]  # (the window, the validation month)
Champion = tuple[str, float]  # (version, RMSE on this run's validation rows)


class Promote(Protocol):
    """Tag the new version and move the decided alias onto it (tracking.promote)."""

    def __call__(
        self,
        model_name: str,
        version: str,
        decision: PromotionDecision,
        val_rmse: float,
        *,
        train_month: str,
        val_month: str,
    ) -> None: ...


@dataclass(frozen=True)
class Steps:
    """How each step is carried out (see the module docstring)."""

    ingest: Callable[[list[str]], Sequence[IngestedMonth]]
    # (training months, validation month) -> (the training window, the validation month here,
    # where the champion is scored): the months are prepared concurrently, on a cluster if any.
    prepare: Callable[[Sequence[IngestedMonth], IngestedMonth], PreparedMonths]
    fit: Callable[[TrainingWindow, pd.DataFrame, TrainingParams], Fit]
    score_champion: Callable[[str, pd.DataFrame], Champion | None]
    # (fit, months, hyperparams, validation rows) -> (run id, registered version)
    log_and_register: Callable[
        [Fit, Sequence[MonthSummary], TrainingParams, pd.DataFrame], tuple[str, str]
    ]
    promote: Promote
    # Held while the champion is scored, the version registered and the alias moved, so two
    # runs of one model never both decide against the same champion (last writer wins).
    promotion_lock: Callable[[str], AbstractContextManager[object]]
    run_url: Callable[[str], str | None]
    announce_promotion: Callable[[RunReport], None]
    publish_report: Callable[[RunReport], None]


def build_report(
    request: TrainingRequest,
    fit: Fit,
    decision: PromotionDecision,
    version: str,
    months: Sequence[MonthSummary],
    run_url: str | None,
) -> RunReport:
    return RunReport(
        request.model_name,
        version,
        decision.alias,
        decision.reason,
        fit.val_rmse,
        fit.val_mae,
        decision.champion_version,
        decision.champion_rmse,
        fit.train_seconds,
        tuple(months),
        run_url,
        fit.engine,
        fit.workers,
    )


def build_result(
    request: TrainingRequest, report: RunReport, fit: Fit, run_id: str
) -> TrainingResult:
    return TrainingResult(
        run_id=run_id,
        model_name=report.model_name,
        model_version=report.model_version,
        alias=report.alias,
        reason=report.reason,
        val_rmse=report.val_rmse,
        val_mae=report.val_mae,
        champion_rmse=report.champion_rmse,
        train_rows=fit.train_rows,
        val_rows=fit.val_rows,
        train_seconds=report.train_seconds,
        train_month=request.train_month,
        val_month=request.val_month,
        train_from=request.train_from,
        train_to=request.train_to,
        engine=fit.engine,
        workers=fit.workers,
    )


def run_training(request: TrainingRequest, steps: Steps) -> TrainingResult:
    """Train on a window of months, validate on a later one, register, and promote only a
    better model."""
    train_months, val_month = request.train_months, request.val_month
    *ingested_train, ingested_val = steps.ingest([*train_months, val_month])
    window, val = steps.prepare(ingested_train, ingested_val)
    months = (
        *(MonthSummary.of(facts, "train") for facts in window.facts),
        MonthSummary.of(val.facts, "validation"),
    )
    fit = steps.fit(window, val.trips, request.hyperparams)
    with steps.promotion_lock(request.model_name):
        # Inside the lock: the champion read here is the one the alias move replaces.
        champion = steps.score_champion(request.model_name, val.trips)
        run_id, version = steps.log_and_register(fit, months, request.hyperparams, val.trips)
        decision = decide_promotion(
            fit.val_rmse,
            val_month=val_month,
            champion_version=champion[0] if champion else None,
            champion_rmse=champion[1] if champion else None,
        )
        steps.promote(
            request.model_name,
            version,
            decision,
            fit.val_rmse,
            train_month=request.train_month,
            val_month=val_month,
        )
    report = build_report(request, fit, decision, version, months, steps.run_url(run_id))
    if decision.promoted:
        steps.announce_promotion(report)
    steps.publish_report(report)
    return build_result(request, report, fit, run_id)
