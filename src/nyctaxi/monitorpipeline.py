"""One monitoring assessment: score the champion on a month (or on logged traffic), compare with
its training month, and decide. The flows (flows/monitoring.py) run these steps as tasks.

`predict` is injected (the champion loaded with the code it was trained with, in the flow), so
this module needs neither MLflow nor Prefect.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nyctaxi import evaluation
from nyctaxi.cleaning import target
from nyctaxi.drift import DriftResult, build_report
from nyctaxi.monitoring import (
    ChampionFacts,
    MonitoringRecord,
    Thresholds,
    Verdict,
    assess,
    errors_by_borough,
    errors_by_hour,
    monitoring_frame,
    retraining_months,
)

Predict = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Assessment:
    """The figures, tables and verdict of one monitored month or window."""

    subject: str  # "2021-02" or "live 2026-11-29T12:00Z .. 2026-11-30T12:00Z"
    champion: ChampionFacts
    rows: int
    reference_rows: int
    drift: DriftResult
    verdict: Verdict
    rmse: float | None = None
    mae: float | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def rmse_ratio(self) -> float | None:
        if self.rmse is None or not self.champion.val_rmse:
            return None
        return self.rmse / self.champion.val_rmse

    def figures(self) -> dict[str, float]:
        """The metrics logged to MLflow and sent with the event (None figures left out)."""
        values: dict[str, float | None] = {
            "rows": float(self.rows),
            "reference_rows": float(self.reference_rows),
            "rmse": self.rmse,
            "mae": self.mae,
            "val_rmse": self.champion.val_rmse,
            "rmse_ratio": self.rmse_ratio,
            "drift_share": self.drift.drift_share,
            "drifted_columns": float(len(self.drift.drifted_inputs)),
            "prediction_drift": self.drift.prediction_drift,
            "degraded": float(self.verdict.degraded),
        }
        values.update({f"drift_{column}": value for column, value in self.drift.distances.items()})
        return {key: round(value, 6) for key, value in values.items() if value is not None}


def reference_frame(trips: pd.DataFrame, predict: Predict) -> pd.DataFrame:
    """The champion's training month, scored by the champion: what "no drift" looks like."""
    return monitoring_frame(trips, predict(trips), target(trips))


def assess_month(
    month: str,
    champion: ChampionFacts,
    reference: pd.DataFrame,
    trips: pd.DataFrame,
    predict: Predict,
    thresholds: Thresholds,
) -> Assessment:
    """Score the champion on a labelled month: drift, RMSE/MAE, errors by borough and hour."""
    current = monitoring_frame(trips, predict(trips), target(trips))
    drift = build_report(current, reference)
    rmse = evaluation.rmse(current["duration"].to_numpy(), current["prediction"].to_numpy())
    mae = evaluation.mae(current["duration"].to_numpy(), current["prediction"].to_numpy())
    verdict = assess(
        val_rmse=champion.val_rmse,
        rmse=rmse,
        drift_share=drift.drift_share,
        drifted=drift.drifted_inputs,
        thresholds=thresholds,
    )
    tables = {"by_borough": errors_by_borough(current), "by_hour": errors_by_hour(current)}
    return Assessment(
        month, champion, len(current), len(reference), drift, verdict, rmse, mae, tables
    )


def assess_traffic(
    subject: str,
    champion: ChampionFacts,
    reference: pd.DataFrame,
    rides: pd.DataFrame,
    thresholds: Thresholds,
) -> Assessment:
    """Drift of logged rides (raw inputs and the prediction served) against the reference."""
    current = monitoring_frame(rides, rides["prediction"].to_numpy())
    drift = build_report(current, reference.drop(columns=["duration"]))
    verdict = assess(
        val_rmse=None,
        rmse=None,
        drift_share=drift.drift_share,
        drifted=drift.drifted_inputs,
        thresholds=thresholds,
    )
    return Assessment(subject, champion, len(current), len(reference), drift, verdict)


def month_step(month: str) -> int:
    year, number = (int(part) for part in month.split("-"))
    return year * 12 + number - 1


def month_record(assessment: Assessment) -> MonitoringRecord:
    """What the MLflow run of a monitored month holds."""
    champion = assessment.champion
    return MonitoringRecord(
        subject=f"month:{assessment.subject}",
        run_name=f"month {assessment.subject}",
        step=month_step(assessment.subject),
        params={"month": assessment.subject, "reference_month": champion.train_month},
        tags=_tags(assessment),
        metrics=assessment.figures(),
        tables=assessment.tables,
    )


def traffic_record(assessment: Assessment, since_step: int) -> MonitoringRecord:
    champion = assessment.champion
    return MonitoringRecord(
        subject=f"live:{assessment.subject}",
        run_name=f"live {assessment.subject}",
        step=since_step,
        params={"window": assessment.subject, "reference_month": champion.train_month},
        tags=_tags(assessment),
        metrics=assessment.figures(),
        tables={},
    )


def _tags(assessment: Assessment) -> dict[str, str]:
    champion = assessment.champion
    return {
        "model_name": champion.name,
        "model_version": champion.version,
        "verdict": "degraded" if assessment.verdict.degraded else "ok",
        "reason": assessment.verdict.summary,
    }


def degraded_payload(assessment: Assessment) -> dict[str, Any]:
    """The nyctaxi.model.degraded event's payload: the figures, and the months a retraining
    should use (the bootstrap's automation passes them to the training deployment)."""
    train_month, val_month = retraining_months(assessment.subject)
    figures = assessment.figures()
    return {
        "model": assessment.champion.name,
        "version": assessment.champion.version,
        "month": assessment.subject,
        "train_month": train_month,
        "val_month": val_month,
        "reason": f"monitoring {assessment.subject}: {assessment.verdict.summary}",
        "rmse": figures.get("rmse"),
        "val_rmse": figures.get("val_rmse"),
        "rmse_ratio": figures.get("rmse_ratio"),
        "drift_share": figures["drift_share"],
        "drifted": list(assessment.drift.drifted_inputs),
    }


def save_report(assessment: Assessment, folder: Path | None = None) -> Path:
    """Write the Evidently report's HTML into `folder` (a new temp folder by default)."""
    folder = folder or Path(tempfile.mkdtemp(prefix="nyctaxi-monitoring-"))
    name = assessment.subject.replace(" ", "_").replace(":", "")
    return assessment.drift.save_html(folder / f"evidently-{name}.html")
