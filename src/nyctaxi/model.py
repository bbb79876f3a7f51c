"""The logged model: one self-contained MLflow pyfunc around the XGBoost booster.

Everything prediction needs travels with the model: the booster file (artifact "booster"), the
nyctaxi package (code_paths; it holds the feature code and the zone tables), a signature and an
input example. The package's content digest is the model's code version (MLmodel metadata and a
model-version tag): `nyctaxi.modelcode.load_model` uses it to run a version with its own code in
processes that import nyctaxi; a fresh process (`mlflow models serve`) imports the shipped copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from nyctaxi.features import RAW_COLUMNS, frame_feature_matrix, ride_feature_matrix
from nyctaxi.forest import Forest, compile_forest
from nyctaxi.modelcode import CODE_VERSION_KEY, installed_package_dir, package_digest

BOOSTER_FILE = "booster.ubj"
# Up to this many rides are predicted by the numpy forest (nyctaxi.forest), more by XGBoost:
# measured crossover ~30 rows (1 ride: 0.11 ms vs 0.3-0.5 ms; 64 rides: 0.9 ms vs 0.45 ms).
SMALL_BATCH_ROWS = 16
# The dtypes a raw TLC frame has (zone IDs are int32 from 2023-02 on; MLflow widens int32 to long).
_EXAMPLE_DTYPES = {
    "PULocationID": "int64",
    "DOLocationID": "int64",
    "trip_distance": "float64",
    "lpep_pickup_datetime": "datetime64[ns]",
}


class TripDurationModel(mlflow.pyfunc.PythonModel):
    """Predicts trip duration in minutes from PULocationID, DOLocationID, trip_distance and
    lpep_pickup_datetime (naive NYC time). Extra input columns are ignored."""

    def __init__(self) -> None:
        self._booster: xgb.Booster | None = None
        self._forest: Forest | None = None

    @classmethod
    def from_booster(cls, booster: xgb.Booster) -> TripDurationModel:
        """A ready model around an in-memory booster (tests, benchmarks; no MLflow involved)."""
        model = cls()
        model._use(booster)
        return model

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        booster = xgb.Booster()
        booster.load_model(context.artifacts["booster"])
        self._use(booster)

    def _use(self, booster: xgb.Booster) -> None:
        self._booster = booster
        self._forest = compile_forest(booster)

    @property
    def booster(self) -> xgb.Booster:
        if self._booster is None:
            raise RuntimeError("the model has no booster: load it with mlflow.pyfunc.load_model")
        return self._booster

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Minutes for each row of a DataFrame of raw TLC columns."""
        return self._predict_features(frame_feature_matrix(model_input))

    def predict_rides(
        self,
        pu_location_id: np.ndarray,
        do_location_id: np.ndarray,
        trip_distance: np.ndarray,
        pickup: np.ndarray,
    ) -> np.ndarray:
        """The fast path: minutes for rides given as numpy arrays (pickup: datetime64, naive)."""
        features = ride_feature_matrix(pu_location_id, do_location_id, trip_distance, pickup)
        return self._predict_features(features)

    def _predict_features(self, features: np.ndarray) -> np.ndarray:
        if self._forest is not None and len(features) <= SMALL_BATCH_ROWS:
            return self._forest.predict(features)
        return self.booster.inplace_predict(features)

    def set_nthread(self, n: int) -> None:
        """Threads per prediction; a multi-process server wants 1 (see ENVIRONMENT.md)."""
        if n < 1:
            raise ValueError(f"nthread must be >= 1, got {n}")
        self.booster.set_param({"nthread": n})


def raw_example(trips: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first rows of trips, reduced to the raw input columns with raw TLC dtypes."""
    return trips.loc[:, list(RAW_COLUMNS)].head(rows).astype(_EXAMPLE_DTYPES).reset_index(drop=True)


def _pip_requirements() -> list[str]:
    # Pinned to what trained the model; listing them skips MLflow's slow requirement inference.
    return [
        f"mlflow-skinny=={mlflow.__version__}",  # what loading needs; the full mlflow has it too
        f"xgboost-cpu=={xgb.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


def _copy_package(source: Path, dest: Path) -> Path:
    """A clean copy of the nyctaxi package (no caches) to ship as the model's code."""
    target = dest / "nyctaxi"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    return target


@contextlib.contextmanager
def _without_uv_project_files() -> Iterator[None]:
    """MLflow 3 copies uv.lock and pyproject.toml of the working directory into every model and
    may run `uv export`; the explicit pip requirements already say what the model needs."""
    names = ("MLFLOW_UV_AUTO_DETECT", "MLFLOW_LOG_UV_FILES")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "false"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_model(
    booster: xgb.Booster,
    *,
    input_example: pd.DataFrame,
    name: str = "model",
    registered_model_name: str | None = None,
    package_dir: Path | None = None,
) -> ModelInfo:
    """Log booster as a TripDurationModel pyfunc to the active MLflow run (optionally register,
    tagging the version with its code version).

    input_example: raw TLC trips (extra columns are dropped; a few rows are kept).
    package_dir: the nyctaxi package to ship (default: the installed one; tests ship others).
    """
    example = raw_example(input_example)
    predictions = TripDurationModel.from_booster(booster).predict(None, example)
    with warnings.catch_warnings():
        # MLflow warns that integer columns cannot hold missing values: zone IDs are meant to be
        # integers (TLC files have no missing ones), so that is the schema we want.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(example, predictions)
    with tempfile.TemporaryDirectory(prefix="nyctaxi-model-") as tmp:
        booster_path = Path(tmp) / BOOSTER_FILE
        booster.save_model(booster_path)
        package = _copy_package(package_dir or installed_package_dir(), Path(tmp))
        code_version = package_digest(package)
        with _without_uv_project_files():
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=TripDurationModel(),
                artifacts={"booster": str(booster_path)},
                code_paths=[str(package)],
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(),
                registered_model_name=registered_model_name,
                metadata={CODE_VERSION_KEY: code_version},
            )
    if registered_model_name is not None:
        version = str(info.registered_model_version)
        MlflowClient().set_model_version_tag(
            registered_model_name, version, CODE_VERSION_KEY, code_version
        )
    return info
