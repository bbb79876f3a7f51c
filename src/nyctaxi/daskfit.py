"""Fitting on a Dask cluster: the training window stays on the workers, one partition per month.

The months are prepared on the workers (as futures of cleaned frames); each worker turns its
months into feature frames, xgboost.dask builds a DaskQuantileDMatrix from those partitions and
trains with every worker holding its own share of the rows. Only the booster comes back. The
validation month is scored here, where the champion is scored on the same rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xgboost as xgb

from nyctaxi import evaluation
from nyctaxi.cleaning import PreparedMonth, target
from nyctaxi.cluster import DASK, worker_count
from nyctaxi.features import FEATURE_NAMES, frame_feature_matrix
from nyctaxi.locate import IngestedMonth
from nyctaxi.pipeline import Fit, TrainingWindow
from nyctaxi.training import TrainingParams

if TYPE_CHECKING:
    from distributed import Client, Future

logger = logging.getLogger(__name__)

LABEL = "duration"


def feature_frame(trips: pd.DataFrame) -> pd.DataFrame:
    """One partition of the training matrix: the feature columns and the label."""
    frame = pd.DataFrame(frame_feature_matrix(trips), columns=list(FEATURE_NAMES))
    frame[LABEL] = np.asarray(target(trips), dtype=np.float32)
    return frame


def _trips(prepared: PreparedMonth) -> pd.DataFrame:
    return prepared.trips


def _facts(prepared: PreparedMonth) -> object:
    return prepared.facts


def prepare_window(
    client: Client,
    ingested: Sequence[IngestedMonth],
    prepare: Callable[[IngestedMonth], PreparedMonth],
) -> TrainingWindow:
    """Prepare the months concurrently on the workers; only their facts come back here."""
    prepared = client.map(prepare, list(ingested), pure=False)
    return window_of(client, prepared, _trips, _facts)


def window_of(
    client: Client,
    prepared: Sequence[Future],
    trips_of: Callable[[object], pd.DataFrame],
    facts_of: Callable[[object], object],
) -> TrainingWindow:
    """A window of months already prepared on the cluster (`prepared`: one future per month;
    `trips_of` / `facts_of` take a month's result apart on the worker that holds it)."""
    parts = client.map(trips_of, list(prepared))
    facts = client.gather(client.map(facts_of, list(prepared)))
    return TrainingWindow(tuple(facts), tuple(parts))  # type: ignore[arg-type]


def _dask_params(hyperparams: TrainingParams) -> dict[str, object]:
    # Each worker uses its own threads (dask worker --nthreads), not this process's core count.
    params = hyperparams.booster_params()
    params.pop("nthread", None)
    return params


def fit_window(
    client: Client, window: TrainingWindow, val: pd.DataFrame, hyperparams: TrainingParams
) -> Fit:
    """Fit with xgboost.dask on the window's partitions (never gathered here); score `val`."""
    import dask.dataframe as dd
    from xgboost import dask as dxgb

    started = time.perf_counter()
    partitions = client.map(feature_frame, list(window.parts))
    meta = feature_frame(val.head(0))
    frame = dd.from_delayed(partitions, meta=meta, verify_meta=False)
    # xgboost.dask looks up the current client even when given one: make ours current.
    with client.as_current():
        matrix = dxgb.DaskQuantileDMatrix(
            client,
            frame[list(FEATURE_NAMES)],
            frame[LABEL],
            max_bin=hyperparams.max_bin,
            feature_names=list(FEATURE_NAMES),
        )
        output = dxgb.train(
            client, _dask_params(hyperparams), matrix, num_boost_round=hyperparams.num_boost_round
        )
    booster: xgb.Booster = output["booster"]
    workers = worker_count(client)
    scores = evaluation.evaluate_on_trips(booster, val)
    seconds = round(time.perf_counter() - started, 3)
    logger.info(
        "fitted on Dask (%d workers, %d months, %d rows) in %.1fs",
        workers,
        len(window.parts),
        window.rows,
        seconds,
    )
    return Fit(booster, scores.rmse, scores.mae, seconds, window.rows, len(val), DASK, workers)
