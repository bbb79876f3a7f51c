"""What the holder works with: a loaded model, a version reference, and the source protocol.

A source (the MLflow registry in production, see mlflow_source.py) resolves the alias, downloads
a version's files into a folder and loads a model from such a folder. Splitting download from
load lets the holder keep the files in the local model cache (model_cache.py) and load the
same version again from there when the registry is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

# Who chose the served version: the registry (the alias points at it, checked) or the local
# cache (the version last served here, loaded while the registry could not be asked).
Origin = Literal["registry", "cache"]


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
    origin: Origin = "registry"
    # sha256 over the version's files as kept in the local cache (None: loaded without it).
    checksum: str | None = None

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
            "origin": self.origin,
            "checksum": self.checksum,
        }


@dataclass(frozen=True)
class VersionRef:
    """What the alias points at. The run id is part of the identity: a registered model that is
    deleted and created again numbers its versions from 1 again, with other models behind them."""

    version: str
    run_id: str | None = None

    def key(self) -> tuple[str, str | None]:
        return (self.version, self.run_id)


@dataclass(frozen=True)
class ModelMeta:
    """What the registry says about a version, kept beside its files in the cache so that a
    version loaded from there describes itself as fully as one loaded from the registry."""

    version: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    source: str | None = None

    def ref(self) -> VersionRef:
        return VersionRef(self.version, self.run_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "metrics": self.metrics,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMeta:
        metrics = {str(k): float(v) for k, v in dict(data.get("metrics") or {}).items()}
        run_id = data.get("run_id")
        source = data.get("source")
        return cls(
            version=str(data["version"]),
            run_id=str(run_id) if run_id is not None else None,
            metrics=metrics,
            source=str(source) if source is not None else None,
        )


@dataclass(frozen=True)
class Downloaded:
    """A version's files, downloaded under the folder the holder gave the source."""

    model_dir: Path
    meta: ModelMeta


class AliasNotFound(LookupError):
    """No version of the model carries the alias (or the model does not exist)."""


class RegistryUnreachable(ConnectionError):
    """The registry did not answer: connection refused, timed out, or kept answering "try
    later". Unlike an auth error or a missing alias, this is when the cache may stand in."""


class ModelSource(Protocol):
    """Where models come from: the MLflow registry in production (see mlflow_source.py)."""

    name: str
    alias: str

    def describe(self) -> str:
        """Where from, for the logs (the registry location included)."""
        ...

    def resolve(self) -> VersionRef:
        """The version the alias points at now; AliasNotFound when there is none,
        RegistryUnreachable when the registry does not answer."""
        ...

    def download(self, ref: VersionRef, into: Path) -> Downloaded:
        """The version's files, written under `into` (an empty folder)."""
        ...

    def load_local(self, model_dir: Path, meta: ModelMeta) -> LoadedModel:
        """A model from files `download` wrote (maybe in an earlier process)."""
        ...


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
