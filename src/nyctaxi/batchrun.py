"""Scoring a month: chunk by chunk, in this process or as tasks on a Dask cluster.

Either way the same chunks (batch.plan_chunks) are scored by the same function and land in the
same part files, so both engines write the same predictions. On a cluster each worker reads its
rows, featurises, predicts and writes its part itself (workers share the run's folders: the raw
months, NYCTAXI_HOME, the output root); only a ChunkSummary comes back. The month is published
only when every chunk is accounted for (batch.check_complete): a worker lost mid-run has its
chunk rescheduled by Dask, or the run fails saying so, never a month silently short.

The model is the registered version, run with the code it was logged with (modelcode); workers
load it from a copy staged once under NYCTAXI_HOME, so they need no MLflow credentials.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nyctaxi import batchio, cluster, modelcode
from nyctaxi.batch import (
    BatchSettings,
    ChunkSummary,
    IncompleteMonthError,
    ModelRef,
    MonthSummary,
    Predict,
    RowRange,
    check_complete,
    combine,
    plan_chunks,
    score_rows,
)
from nyctaxi.features import INPUT_COLUMNS
from nyctaxi.registry import CHAMPION, version_with_alias

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """The model to score with does not exist."""


def configure(settings: BatchSettings) -> None:
    """Point MLflow at the configured store: the registry the model is looked up in."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri())
    if settings.mlflow_tracking_uri is None:
        settings.local_mlflow_dir.mkdir(parents=True, exist_ok=True)


def configured_settings(model_name: str | None = None) -> BatchSettings:
    """The settings from the environment (a model name given wins), MLflow pointed at them."""
    settings = BatchSettings()
    if model_name:
        settings = settings.model_copy(update={"model_name": model_name})
    configure(settings)
    return settings


def resolve_model(model_name: str, version: str | None = None) -> ModelRef:
    """The version given, else the one under the champion alias (MLflow's current store)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if version is None:
        found = version_with_alias(client, model_name, CHAMPION)
        if found is None:
            raise NoModelError(f"model {model_name!r} has no @{CHAMPION} version: train one first")
        return ModelRef(model_name, str(found.version))
    try:
        client.get_model_version(model_name, str(version))
    except MlflowException as error:
        raise NoModelError(f"{model_name} v{version} not found: {error.message}") from error
    return ModelRef(model_name, str(version))


def predictor(model: modelcode.LoadedModel, nthread: int | None = None) -> Predict:
    """The model's predict function (its own code), without MLflow's per-call schema checks:
    batch.model_input already gives the logged dtypes."""
    python_model = model.python_model()
    if nthread is not None and hasattr(python_model, "set_nthread"):
        python_model.set_nthread(nthread)
    return lambda inputs: python_model.predict(None, inputs[INPUT_COLUMNS])


def stage_model(model: ModelRef, folder: Path) -> Path:
    """A local copy of the version's files under folder/<name>/<version> (a version's files
    never change: a copy already there is reused). Downloaded under a temporary name and then
    renamed, so a worker never loads half a copy."""
    import mlflow

    target = folder / model.name / model.version
    if (target / "MLmodel").is_file():
        return target
    temp = target.with_name(f".{model.version}.{uuid.uuid4().hex[:8]}")
    temp.mkdir(parents=True)
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=model.uri, dst_path=str(temp))
        try:
            os.rename(temp, target)
        except OSError:  # another run staged it first
            if not (target / "MLmodel").is_file():
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=4)
def _staged_predictor(model_dir: str) -> Predict:
    # One thread per prediction: the cluster's parallelism is its workers' tasks.
    return predictor(modelcode.load_model(model_dir), nthread=1)


def warm_up(model_dir: str) -> None:
    """Load the staged model into this worker process's cache."""
    _staged_predictor(model_dir)


@dataclass(frozen=True)
class ChunkJob:
    """One chunk of a month, as a cluster task gets it (plain values: cheap to send)."""

    source: str  # the raw month file
    month: str
    index: int
    rows: RowRange
    staging: str  # the run's staging folder
    model_dir: str  # the staged model
    model: ModelRef


def score_chunk(job: ChunkJob, predict: Predict | None = None) -> ChunkSummary:
    """Read, featurise, predict and write one chunk (a cluster task: `predict` is loaded from
    the staged model, once per worker process)."""
    started = time.perf_counter()
    predict = predict or _staged_predictor(job.model_dir)
    raw = batchio.read_rows(job.source, job.rows)
    table, summary = score_rows(raw, job.month, job.rows.start, predict, job.model)
    batchio.write_part(Path(job.staging), job.index, table)
    return replace(summary, index=job.index, seconds=time.perf_counter() - started)


ChunkFunction = Callable[[ChunkJob], ChunkSummary]


def _in_process(source: str, jobs: Sequence[ChunkJob], predict: Predict) -> list[ChunkSummary]:
    """The month read once, then each chunk scored and written from it."""
    raw = batchio.read_rows(source)
    summaries = []
    for job in jobs:
        rows = raw.iloc[job.rows.start : job.rows.stop]
        table, summary = score_rows(rows, job.month, job.rows.start, predict, job.model)
        batchio.write_part(Path(job.staging), job.index, table)
        summaries.append(replace(summary, index=job.index))
    return summaries


def _on_cluster(client: Client, jobs: Sequence[ChunkJob], chunk: ChunkFunction) -> list[Any]:
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    token = uuid.uuid4().hex[:8]
    keys = [f"batch-{job.month}-{job.index:05d}-{token}" for job in jobs]
    futures = client.map(chunk, jobs, key=keys, pure=False)
    try:
        return client.gather(futures)
    except (KilledWorker, FutureCancelledError) as error:
        raise IncompleteMonthError(
            f"{jobs[0].month}: a chunk was lost with its Dask workers ({error}); the month is "
            "not published: rerun it"
        ) from error
    finally:
        client.cancel(futures)


@dataclass(frozen=True)
class ScoredMonth:
    """A published month: its figures and where its partition is."""

    summary: MonthSummary
    output: Path
    model: ModelRef
    engine: str
    workers: int = 1


def score_month(
    source: str | os.PathLike[str],
    month: str,
    model: ModelRef,
    root: Path,
    *,
    chunk_rows: int,
    predict: Predict | None = None,
    client: Client | None = None,
    model_dir: Path | None = None,
    chunk: ChunkFunction = score_chunk,
) -> ScoredMonth:
    """Score one raw month file and publish its partition under root.

    In this process with `predict`, or on a cluster with `client` (workers load the model from
    `model_dir`, see stage_model; `chunk` is the task function, tests wrap it)."""
    if (predict is None) == (client is None):
        raise ValueError("give either predict (in-process) or client (a Dask cluster)")
    if client is not None and model_dir is None:
        raise ValueError("scoring on a cluster needs the staged model's folder (stage_model)")
    source = os.fspath(source)
    total = batchio.raw_row_count(source)
    plan = plan_chunks(total, chunk_rows)
    if not plan:
        raise IncompleteMonthError(f"{month}: {source} holds no rows")
    staging = batchio.new_staging(root, month)
    jobs = [
        ChunkJob(source, month, i, rows, str(staging), str(model_dir or ""), model)
        for i, rows in enumerate(plan)
    ]
    started = time.perf_counter()
    try:
        if client is not None:
            summaries = _on_cluster(client, jobs, chunk)
        else:
            assert predict is not None
            summaries = _in_process(source, jobs, predict)
        check_complete(month, plan, summaries, total)
        written = batchio.staged_rows(staging, len(plan))
        for summary in summaries:
            if written[summary.index] != summary.rows:
                raise IncompleteMonthError(
                    f"{month}: part {summary.index} holds {written[summary.index]} rows, "
                    f"{summary.rows} were scored: not published"
                )
        output = batchio.publish(root, month, staging)
    except BaseException:
        batchio.discard(staging)
        raise
    figures = combine(month, summaries, time.perf_counter() - started)
    engine = cluster.DASK if client is not None else cluster.IN_PROCESS
    logger.info(
        "%s: %d of %d rows scored by %s v%s (%s), %.0f rows/s, RMSE %s -> %s",
        month,
        figures.rows,
        figures.rows_read,
        model.name,
        model.version,
        engine,
        figures.rows_per_second,
        figures.rmse,
        output,
    )
    workers = cluster.worker_count(client) if client is not None else 1
    return ScoredMonth(figures, output, model, engine, workers)


MonthScorer = Callable[[str | os.PathLike[str], str], ScoredMonth]


@contextlib.contextmanager
def month_scorer(
    model: ModelRef, settings: BatchSettings, *, address: str | None = None
) -> Iterator[MonthScorer]:
    """Score months with the model, loaded once for all of them: on the Dask scheduler at
    `address` (see nyctaxi.cluster), else in this process with all its cores."""
    root = settings.output_dir()
    chunk_rows = settings.batch_chunk_rows
    if address is None:
        predict = predictor(modelcode.load_model(model.uri))
        yield lambda source, month: score_month(
            source, month, model, root, chunk_rows=chunk_rows, predict=predict
        )
        return
    model_dir = stage_model(model, settings.model_stage_dir())
    with cluster.connect(address) as client:
        # Each worker loads the model before the clock starts (a worker that joins later loads
        # it with its first chunk).
        client.run(warm_up, str(model_dir))
        yield lambda source, month: score_month(
            source, month, model, root, chunk_rows=chunk_rows, client=client, model_dir=model_dir
        )


def run_month(
    source: str | os.PathLike[str],
    month: str,
    model: ModelRef,
    settings: BatchSettings,
    *,
    address: str | None = None,
) -> ScoredMonth:
    """Score one month with the model (see month_scorer)."""
    with month_scorer(model, settings, address=address) as score:
        return score(source, month)
