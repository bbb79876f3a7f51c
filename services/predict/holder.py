"""The served model: loaded in the background, swapped atomically when the alias moves.

Each process (each gunicorn worker) has one `ModelHolder` with its own poller thread. A request
reads `holder.current` once and uses that `LoadedModel` for the prediction and the response, so
a swap (one reference assignment) never mixes two versions in one response and never fails one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from services.predict.redact import redact

logger = logging.getLogger(__name__)


class RidePredictor(Protocol):
    """What the service needs of nyctaxi.model.TripDurationModel."""

    def predict_rides(
        self,
        pu_location_id: np.ndarray,
        do_location_id: np.ndarray,
        trip_distance: np.ndarray,
        pickup: np.ndarray,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    predictor: RidePredictor
    run_id: str | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metrics: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    # Content digest of the nyctaxi code the version was logged with and runs (nyctaxi.modelcode).
    code_version: str | None = None

    def identity(self) -> dict[str, str]:
        """The model block of every prediction response."""
        return {"name": self.name, "version": self.version, "alias": self.alias}

    def describe(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "run_id": self.run_id,
            "loaded_at": self.loaded_at.isoformat(),
            "metrics": self.metrics,
            "source": self.source,
            "code_version": self.code_version,
        }


SwapListener = Callable[[LoadedModel | None, LoadedModel], None]


@dataclass(frozen=True)
class VersionRef:
    """What the alias points at. The run id is part of the identity: a registered model that is
    deleted and created again numbers its versions from 1 again, with other models behind them."""

    version: str
    run_id: str | None = None


class AliasNotFound(LookupError):
    """No version of the model carries the alias (or the model does not exist)."""


class ModelSource(Protocol):
    """Where models come from: the MLflow registry in production (see mlflow_source.py)."""

    name: str
    alias: str

    def describe(self) -> str:
        """Where from, for the logs (the registry location included)."""
        ...

    def resolve(self) -> VersionRef:
        """The version the alias points at now; AliasNotFound when there is none."""
        ...

    def load(self, version: str) -> LoadedModel: ...


def warm_up(predictor: RidePredictor) -> None:
    """One prediction before a model is swapped in: a broken model never serves a request."""
    pickup = np.array(["2023-03-01T08:15:00"], dtype="datetime64[us]")
    result = predictor.predict_rides(
        np.array([43], dtype=np.int32),
        np.array([151], dtype=np.int32),
        np.array([1.2]),
        pickup,
    )
    if np.shape(result) != (1,) or not np.isfinite(result).all():
        raise ValueError(f"model answered {result!r} for a plain ride")


class ModelHolder:
    """Holds the current model; a daemon thread keeps it in step with the registry alias."""

    def __init__(
        self,
        source: ModelSource,
        *,
        reload_interval: float,
        retry_interval: float,
        poll: bool = True,
    ) -> None:
        """poll=False: no background thread; whoever owns the holder calls refresh()."""
        self._source = source
        self._reload_interval = reload_interval
        self._retry_interval = retry_interval
        self._listeners: list[SwapListener] = []
        self._current: LoadedModel | None = None
        self._problem: str | None = redact(f"model not loaded yet from {source.describe()}")
        self._public_problem: str | None = f"no model loaded yet for {self._public_ref()}"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._poll = poll

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def problem(self) -> str | None:
        """Why no model is served (None once one is), or why the last reload failed: the detail
        for the logs (credentials masked, but registry location and exception text kept)."""
        return self._problem

    @property
    def public_problem(self) -> str | None:
        """`problem` as clients may read it: model name, alias and version, never a registry
        location or an exception text (either may hold hosts, paths or credentials)."""
        return self._public_problem

    def _public_ref(self) -> str:
        return f"model '{self._source.name}' under alias '{self._source.alias}'"

    def add_listener(self, listener: SwapListener) -> None:
        """Call listener(old, new) after each swap (and now, if a model is already served)."""
        self._listeners.append(listener)
        if self._current is not None:
            listener(None, self._current)

    def ensure_started(self) -> None:
        """Start the poller in this process (again after a fork: threads do not survive one)."""
        pid = os.getpid()
        if self._pid == pid or not self._poll:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
            self._pid = pid
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout)

    def refresh(self) -> bool:
        """Ask the registry once; load and swap in a new version. True when a swap happened."""
        try:
            target = self._source.resolve()
        except AliasNotFound as error:
            public = f"the registry has no version of {self._public_ref()}"
            self._note_problem(str(error), public)
            return False
        except Exception as error:  # noqa: BLE001 - any registry failure: keep serving, retry
            detail = f"cannot ask the model registry {self._source.describe()}: {error}"
            public = f"the registry is unreachable or refused the lookup of {self._public_ref()}"
            self._note_problem(detail, public)
            return False
        current = self._current
        version = target.version
        if current is not None and (current.version, current.run_id) == (version, target.run_id):
            self._problem = self._public_problem = None
            return False
        try:
            loaded = self._source.load(version)
            warm_up(loaded.predictor)
        except Exception as error:  # noqa: BLE001 - a bad version must not stop the service
            logger.exception("loading version %s failed", version)
            public = f"version {version} of {self._public_ref()} failed to load"
            self._note_problem(f"version {version} failed to load: {error}", public)
            return False
        self._current = loaded  # the swap: one reference assignment
        self._problem = self._public_problem = None
        logger.info(
            "serving %s version %s (@%s), was %s",
            loaded.name,
            loaded.version,
            loaded.alias,
            current.version if current else "none",
        )
        for listener in self._listeners:
            listener(current, loaded)
        return True

    def _note_problem(self, problem: str, public: str) -> None:
        problem = redact(problem)
        self._public_problem = f"{public}; retrying (details in the service log)"
        if problem != self._problem:
            if self._current is None:
                logger.warning("no model served: %s", problem)
            else:
                logger.warning("keeping version %s: %s", self._current.version, problem)
        self._problem = problem

    def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the poller must outlive any surprise
                logger.exception("model poller iteration failed")
            interval = self._reload_interval if self._current else self._retry_interval
            stop.wait(interval)
