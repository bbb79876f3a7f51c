"""MLflow with authentication, as both stacks start it (`python -m services.mlflow`), for real.

Without credentials every API answers 401 (health stays open); the bootstrap's accounts step
is idempotent; the trainer can track, register and promote; the predictor can resolve and load
the champion (the prediction service's calls) and nothing more, and READ on the registered model
alone would not let it load the files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from nyctaxi import names
from services.bootstrap import mlflow_accounts
from services.bootstrap.mlflow_accounts import Account, AuthApi, Grant, ensure_accounts
from services.bootstrap.settings import BootstrapSettings
from tests.servers import MlflowAuth, mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MODEL_NAME = "auth-test-model"
TRAINER = Account(names.MLFLOW_TRAINER_USER, "trainer-password-1")
PREDICTOR = Account(names.MLFLOW_PREDICTOR_USER, "predictor-password-1")
# (method, path, JSON body): reads, writes, user admin and the artifact proxy.
PROTECTED_ROUTES = [
    ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1}),
    ("GET", "/api/2.0/mlflow/registered-models/search", None),
    ("GET", f"/api/2.0/mlflow/registered-models/get?name={MODEL_NAME}", None),
    ("POST", "/api/2.0/mlflow/model-versions/create", {"name": MODEL_NAME, "source": "x"}),
    ("POST", "/api/2.0/mlflow/registered-models/alias", {"name": MODEL_NAME, "alias": "a"}),
    ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "0"}),
    ("POST", "/api/2.0/mlflow/users/create", {"username": "x", "password": "y" * 12}),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts", None),
    ("POST", "/ajax-api/2.0/mlflow/experiments/search", {"max_results": 1}),
]


class PlusOne(PythonModel):
    """The smallest model worth loading: proves the files came through the artifact proxy."""

    def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> object:
        return model_input + 1


@dataclass(frozen=True)
class AuthServer:
    url: str
    auth: MlflowAuth

    @property
    def admin_api(self) -> AuthApi:
        return AuthApi(self.url, Account(self.auth.admin_username, self.auth.admin_password))


@contextlib.contextmanager
def as_user(url: str, account: Account) -> Iterator[MlflowClient]:
    """MLflow's client (fluent API included) talking to `url` as `account`, restored after."""
    # Through the environment, not mlflow.set_tracking_uri: "restoring" the URI it returned
    # when none was set would pin MLflow's default (./mlflow.db) for every later test.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", account.username)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", account.password)
        patch.setenv("MLFLOW_TRACKING_URI", url)
        patch.setenv("MLFLOW_REGISTRY_URI", url)
        yield MlflowClient(tracking_uri=url, registry_uri=url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    auth = MlflowAuth()
    with mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), auth=auth) as url:
        yield AuthServer(url, auth)


@pytest.fixture(scope="module")
def first_changes(server: AuthServer) -> list[str]:
    """The bootstrap's accounts step, run once on the fresh server."""
    return ensure_accounts(server.admin_api, TRAINER.password, PREDICTOR.password, MODEL_NAME)


@pytest.fixture(scope="module")
def champion(server: AuthServer, first_changes: list[str]) -> str:
    """As the trainer: a run with a logged model, registered and promoted; returns the version."""
    with as_user(server.url, TRAINER) as client:
        mlflow.set_experiment(names.EXPERIMENT)
        with mlflow.start_run():
            mlflow.log_metric("val_rmse", 1.5)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=PlusOne(),
                registered_model_name=MODEL_NAME,
                pip_requirements=[],
            )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(MODEL_NAME, names.CHAMPION_ALIAS, version)
    return version


def permission_status(error: MlflowException) -> int:
    return error.get_http_status_code()


def test_every_route_needs_credentials_but_health(server: AuthServer) -> None:
    answers = {
        f"{method} {path}": requests.request(
            method, server.url + path, json=body, timeout=30
        ).status_code
        for method, path, body in PROTECTED_ROUTES
    }
    assert answers == {route: 401 for route in answers}
    assert requests.get(f"{server.url}/health", timeout=30).status_code == 200


def test_accounts_step_is_idempotent(server: AuthServer, first_changes: list[str]) -> None:
    api = server.admin_api
    assert f"created user {TRAINER.username}" in first_changes
    before = {
        user: api.call("GET", "/api/3.0/mlflow/users/permissions/list", params={"username": user})
        for user in (TRAINER.username, PREDICTOR.username)
    }
    assert ensure_accounts(api, TRAINER.password, PREDICTOR.password, MODEL_NAME) == []
    # The same through the bootstrap's settings, as `python -m services.bootstrap` runs it.
    settings = BootstrapSettings(
        _env_file=None,
        mlflow_tracking_uri=server.url,
        model_name=MODEL_NAME,
        mlflow_admin_username=server.auth.admin_username,
        mlflow_admin_password=server.auth.admin_password,
        mlflow_trainer_password=TRAINER.password,
        mlflow_predictor_password=PREDICTOR.password,
    )
    assert mlflow_accounts.configure(settings) == []
    after = {
        user: api.call("GET", "/api/3.0/mlflow/users/permissions/list", params={"username": user})
        for user in (TRAINER.username, PREDICTOR.username)
    }
    assert after == before
    granted = {
        (row["resource_type"], row["permission"])
        for row in before[PREDICTOR.username]["permissions"]
    }
    assert granted == {("registered_model", "READ"), ("experiment", "READ")}


def test_trainer_tracks_registers_and_promotes(server: AuthServer, champion: str) -> None:
    with as_user(server.url, TRAINER) as client:
        found = client.get_model_version_by_alias(MODEL_NAME, names.CHAMPION_ALIAS)
    assert found.version == champion


def test_predictor_loads_the_champion_but_cannot_change_the_registry(
    server: AuthServer, champion: str
) -> None:
    with as_user(server.url, PREDICTOR) as client:
        version = client.get_model_version_by_alias(MODEL_NAME, names.CHAMPION_ALIAS)
        assert version.version == champion
        # What the prediction service does: load the files, read the run's metrics.
        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{names.CHAMPION_ALIAS}")
        assert model.predict(pd.DataFrame({"x": [1.0]}))["x"].tolist() == [2.0]
        assert client.get_run(version.run_id).data.metrics["val_rmse"] == 1.5
        with pytest.raises(MlflowException) as alias_error:
            client.set_registered_model_alias(MODEL_NAME, names.CHAMPION_ALIAS, "1")
        with pytest.raises(MlflowException) as version_error:
            client.create_model_version(MODEL_NAME, version.source, run_id=version.run_id)
        with pytest.raises(MlflowException) as run_error:
            client.create_run(client.get_experiment_by_name(names.EXPERIMENT).experiment_id)
    assert permission_status(alias_error.value) == 403
    assert permission_status(version_error.value) == 403
    assert permission_status(run_error.value) == 403


def test_predictor_sees_no_other_experiment(server: AuthServer, first_changes: list[str]) -> None:
    api = server.admin_api
    other_id = api.experiment_id("not-for-the-predictor") or api.create_experiment(
        "not-for-the-predictor"
    )
    api.call("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": other_id})
    with as_user(server.url, PREDICTOR) as client:
        with pytest.raises(MlflowException) as error:
            client.get_experiment(other_id)
        visible = {experiment.name for experiment in client.search_experiments()}
        runs = client.search_runs([other_id])
    assert permission_status(error.value) == 403
    assert visible == {names.EXPERIMENT}
    assert list(runs) == []


def test_registered_model_read_alone_cannot_load_the_model(
    server: AuthServer, champion: str
) -> None:
    """Why the predictor also reads the experiment: the version's files sit under it."""
    api = server.admin_api
    reader = Account("model-reader-only", "reader-password-1")
    if api.get_user(reader.username) is None:
        api.create_user(reader)
        api.grant(Grant(reader.username, "registered_model", MODEL_NAME, "READ"))
    with as_user(server.url, reader) as client:
        assert (
            client.get_model_version_by_alias(MODEL_NAME, names.CHAMPION_ALIAS).version == champion
        )
        with pytest.raises(Exception, match="403") as error:
            mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{names.CHAMPION_ALIAS}")
    assert "mlflow-artifacts/artifacts" in str(error.value)  # the artifact proxy said no
