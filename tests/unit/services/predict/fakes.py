"""Fakes shared by the prediction service's unit tests: a model source over a dict of versions,
predictors whose answers name their version, and the JSON error shape check."""

from __future__ import annotations

import numpy as np

from services.predict.holder import AliasNotFound, LoadedModel, VersionRef

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
    """Our ModelSource protocol over a dict of versions; `alias_version` is where the alias is."""

    name = "fake"
    alias = "champion"

    def __init__(self) -> None:
        self.alias_version: str | None = None
        self.unreachable = False
        self.broken_versions: set[str] = set()
        self.loads: list[str] = []
        self.recreated = False  # the registered model deleted and created again

    # Where a real registry URI would be: it must reach the logs (masked), never a response.
    location = "http://reader:s3cret-pw@registry.internal:5000"

    def describe(self) -> str:
        return f"models:/fake@champion at {self.location}"

    def run_id(self, version: str) -> str:
        return f"run-{version}" + ("-recreated" if self.recreated else "")

    def resolve(self) -> VersionRef:
        if self.unreachable:
            raise ConnectionError(f"connection refused by {self.location}")
        if self.alias_version is None:
            raise AliasNotFound(
                f"no version of model 'fake' has the alias 'champion' at {self.location}"
            )
        return VersionRef(self.alias_version, self.run_id(self.alias_version))

    def load(self, version: str) -> LoadedModel:
        self.loads.append(version)
        predictor = BrokenPredictor() if version in self.broken_versions else None
        return LoadedModel(
            name="fake",
            version=version,
            alias="champion",
            predictor=predictor or VersionedPredictor(int(version)),
            run_id=self.run_id(version),
            metrics={"val_rmse": 5.0 + int(version)},
        )


def assert_error(response, status: int, field: str) -> dict:  # noqa: ANN001
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["details"][0]["field"] == field
    assert body["details"][0]["problem"]
    return body
