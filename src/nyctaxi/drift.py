"""The Evidently report of a monitored month or window: drift of every input column and of the
prediction against the champion's training month, plus regression quality when labelled.

Evidently 0.7 API (Report, Dataset, DataDefinition, presets). Drift is measured with distances,
not p-values, so a verdict does not flip with the number of rides: normed Wasserstein distance
for numerical columns, Jensen-Shannon distance for categorical ones (zone, borough, weekday);
a column drifted when its distance reaches DISTANCE_THRESHOLD (Evidently's default for both).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pandas.core.dtypes.common as pandas_dtypes

from nyctaxi.monitoring import (
    CATEGORICAL_COLUMNS,
    DRIFT_INPUTS,
    NUMERICAL_COLUMNS,
    PREDICTION,
    TARGET,
)

# Evidently 0.7.23 (the newest release) imports a helper that pandas 3 removed, in a legacy
# module it loads at import time and that the presets used here never call. Restore it as
# pandas 2 defined it (the numpy scalar type of a dtype) before the import.
if not hasattr(pandas_dtypes, "infer_dtype_from_object"):
    pandas_dtypes.infer_dtype_from_object = lambda dtype: pd.api.types.pandas_dtype(dtype).type

from evidently import DataDefinition, Dataset, Regression, Report  # noqa: E402
from evidently.presets import DataDriftPreset, RegressionPreset  # noqa: E402

logger = logging.getLogger(__name__)

DISTANCE_THRESHOLD = 0.1


@dataclass(frozen=True)
class DriftResult:
    """Per-column drift distances, the drifted share of the inputs and the report itself."""

    distances: dict[str, float]  # column -> distance (inputs and the prediction)
    drifted_inputs: list[str]
    regression: dict[str, float]  # Evidently's regression figures (labelled data only)
    snapshot: Any  # evidently Snapshot: save_html(path)

    @property
    def drift_share(self) -> float:
        return len(self.drifted_inputs) / len(DRIFT_INPUTS)

    @property
    def prediction_drift(self) -> float:
        return self.distances[PREDICTION]

    def save_html(self, path: Path) -> Path:
        self.snapshot.save_html(str(path))
        return path


def _definition(labelled: bool) -> DataDefinition:
    return DataDefinition(
        numerical_columns=list(NUMERICAL_COLUMNS),
        categorical_columns=list(CATEGORICAL_COLUMNS),
        regression=[Regression(target=TARGET, prediction=PREDICTION)] if labelled else None,
    )


def _value(value: Any) -> float:
    if isinstance(value, dict):  # {"mean": .., "std": ..} for MAE and the like
        value = value.get("mean")
    return float(value)


def _regression_name(metric_name: str) -> str:
    # "RMSE(regression_name=default,...)" -> "rmse"; "MeanError(...)" -> "meanerror"
    return metric_name.split("(", 1)[0].lower()


def build_report(current: pd.DataFrame, reference: pd.DataFrame) -> DriftResult:
    """Compare `current` with `reference` (both from nyctaxi.monitoring.monitoring_frame).
    Regression quality is computed when both carry the actual duration."""
    labelled = TARGET in current.columns and TARGET in reference.columns
    columns = [*DRIFT_INPUTS, PREDICTION]
    keep = [*columns, TARGET] if labelled else columns
    definition = _definition(labelled)
    presets: list[Any] = [
        DataDriftPreset(
            columns=columns,
            num_method="wasserstein",
            cat_method="jensenshannon",
            num_threshold=DISTANCE_THRESHOLD,
            cat_threshold=DISTANCE_THRESHOLD,
        )
    ]
    if labelled:
        presets.append(RegressionPreset())
    snapshot = Report(presets).run(
        Dataset.from_pandas(current[keep], data_definition=definition),
        Dataset.from_pandas(reference[keep], data_definition=definition),
    )
    distances: dict[str, float] = {}
    regression: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            distances[str(config["column"])] = float(metric["value"])
        elif labelled and "regression_name" in config:
            regression[_regression_name(metric["metric_name"])] = _value(metric["value"])
    drifted = [column for column in DRIFT_INPUTS if distances[column] >= DISTANCE_THRESHOLD]
    return DriftResult(distances, drifted, regression, snapshot)
