"""Fakes shared by the prediction service's unit tests: a model source over a dict of versions,
predictors whose answers name their version, and the JSON error shape check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.predict.loaded import (
    AliasNotFound,
    Downloaded,
    LoadedModel,
    ModelMeta,
    RegistryUnreachable,
    VersionRef,
)

RIDE = {
    "PULocationID": 43,
    "DOLocationID": 151,
    "trip_distance": 1.2,
    "lpep_pickup_datetime": "2023-03-01T08:15:00",
}


class VersionedPredictor:
    """minutes = 10 * version + trip_distance: which version answered is visible in the answer."""

    def __init__(self, version: int) -> None:
        self.version = version

    def predict_rides(
        self, pu: np.ndarray, do: np.ndarray, distance: np.ndarray, pickup: np.ndarray
    ) -> np.ndarray:
        assert pu.shape == do.shape == distance.shape == pickup.shape
        return (10.0 * self.version + distance).astype(np.float32)


class BrokenPredictor:
    def predict_rides(self, *arrays: np.ndarray) -> np.ndarray:
        return np.array([np.nan], dtype=np.float32)


class FakeSource:
    """Our ModelSource protocol over a dict of versions; `alias_version` is where the alias is.

    A download writes a small JSON file (the version, whether it is broken); a load reads it back,
    so the model cache handles real files and a damaged file shows."""

    name = "fake"
    alias = "champion"

    def __init__(self) -> None:
        self.alias_version: str | None = None
        self.unreachable = False  # the registry does not answer
        self.denied = False  # the registry answers, but refuses (an auth error)
        self.broken_versions: set[str] = set()  # they load, then answer NaN (warm-up fails)
        self.unloadable_versions: set[str] = set()  # their load raises
        self.downloads: list[str] = []
        self.loads: list[str] = []
        self.recreated = False  # the registered model deleted and created again

    # Where a real registry URI would be: it must reach the logs (masked), never a response.
    location = "http://reader:s3cret-pw@registry.internal:5000"

    def describe(self) -> str:
        return f"models:/fake@champion at {self.location}"

    def run_id(self, version: str) -> str:
        return f"run-{version}" + ("-recreated" if self.recreated else "")

    def _ask(self) -> None:
        if self.unreachable:
            raise RegistryUnreachable(f"connection refused by {self.location}")
        if self.denied:
            raise PermissionError(f"401 from {self.location}: bad credentials")

    def resolve(self) -> VersionRef:
        self._ask()
        if self.alias_version is None:
            raise AliasNotFound(
                f"no version of model 'fake' has the alias 'champion' at {self.location}"
            )
        return VersionRef(self.alias_version, self.run_id(self.alias_version))

    def download(self, ref: VersionRef, into: Path) -> Downloaded:
        self._ask()
        self.downloads.append(ref.version)
        model_dir = into / "model"
        model_dir.mkdir()
        content = {
            "version": ref.version,
            "broken": ref.version in self.broken_versions,
            "unloadable": ref.version in self.unloadable_versions,
        }
        (model_dir / "model.json").write_text(json.dumps(content))
        (model_dir / "weights.bin").write_bytes(bytes(range(256)) * 4)
        meta = ModelMeta(
            version=ref.version,
            run_id=ref.run_id,
            metrics={"val_rmse": 5.0 + int(ref.version)},
            source=f"models:/fake/{ref.version}",
        )
        return Downloaded(model_dir=model_dir, meta=meta)

    def load_local(self, model_dir: Path, meta: ModelMeta) -> LoadedModel:
        self.loads.append(meta.version)
        content = json.loads((model_dir / "model.json").read_text())
        if content["unloadable"]:
            raise RuntimeError(f"cannot unpickle {model_dir} from {self.location}")
        version = int(content["version"])
        predictor = BrokenPredictor() if content["broken"] else VersionedPredictor(version)
        return LoadedModel(
            name="fake",
            version=meta.version,
            alias="champion",
            predictor=predictor,
            run_id=meta.run_id,
            metrics=meta.metrics,
            source=meta.source,
        )


def assert_error(response, status: int, field: str) -> dict:  # noqa: ANN001
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["details"][0]["field"] == field
    assert body["details"][0]["problem"]
    return body
