"""The bootstrap's MLflow accounts step against an in-memory stand-in of the basic-auth REST API.

The stand-in answers the routes the step uses the way MLflow 3.17 does (checked against a real
server in tests/integration/test_mlflow_auth.py) and records every write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from nyctaxi import names
from services.bootstrap import mlflow_accounts
from services.bootstrap.mlflow_accounts import (
    Account,
    AuthApi,
    MlflowAccountsError,
    ensure_accounts,
)
from services.bootstrap.settings import BootstrapSettings

ADMIN = Account("admin", "admin-password-1")
TRAINER_PASSWORD = "trainer-password-1"
PREDICTOR_PASSWORD = "predictor-password-1"
MODEL = "test-model"


@dataclass
class Response:
    status_code: int
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def content(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()

    def json(self) -> Any:
        if self.body is None:
            raise ValueError("no JSON")
        return self.body


@dataclass
class FakeAuthServer:
    """Users (with the admin), experiments, registered models and per-user role grants."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: dict[str, str] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)
    grants: list[dict[str, Any]] = field(default_factory=list)  # role_id, role_name, type, ...
    writes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.add_user(ADMIN.username, ADMIN.password, is_admin=True)

    def add_user(self, username: str, password: str, is_admin: bool = False) -> None:
        self.users[username] = {
            "id": len(self.users) + 1,
            "password": password,
            "is_admin": is_admin,
        }

    def add_grant(self, username: str, resource: tuple[str, str], permission: str) -> None:
        user_id = self.users[username]["id"]
        self.grants.append(
            {
                "id": len(self.grants) + 1,
                "role_id": user_id,
                "role_name": f"__user_{user_id}__",
                "username": username,
                "resource_type": resource[0],
                "resource_pattern": resource[1],
                "permission": permission,
            }
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        auth: tuple[str, str],
        timeout: float,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Response:
        path = urlsplit(url).path
        user = self.users.get(auth[0])
        if user is None or user["password"] != auth[1]:
            return Response(401)
        if path == "/api/2.0/mlflow/users/current":
            return Response(200, {"user": {"username": auth[0]}})
        if not user["is_admin"]:
            return Response(403)
        if method != "GET":
            self.writes.append(f"{method} {path}")
        return self.route(method, path, params or {}, json or {})

    def route(
        self, method: str, path: str, params: dict[str, str], body: dict[str, Any]
    ) -> Response:
        handler = getattr(
            self, "on_" + path.rsplit("/mlflow/", 1)[1].replace("/", "_").replace("-", "_")
        )
        return handler(params, body)

    def on_users_get(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        user = self.users.get(params["username"])
        if user is None:
            return Response(404, {"error_code": "RESOURCE_DOES_NOT_EXIST"})
        return Response(200, {"user": {"id": user["id"], "username": params["username"]}})

    def on_users_create(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        if body["username"] in self.users:  # MLflow's message quotes the password hash
            return Response(400, {"error_code": "RESOURCE_ALREADY_EXISTS", "message": "hash"})
        self.add_user(body["username"], body["password"])
        return Response(200, {"user": {}})

    def on_users_update_password(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        self.users[body["username"]]["password"] = body["password"]
        return Response(200)

    def on_experiments_get_by_name(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        found = self.experiments.get(params["experiment_name"])
        if found is None:
            return Response(404, {"error_code": "RESOURCE_DOES_NOT_EXIST"})
        return Response(200, {"experiment": {"experiment_id": found}})

    def on_experiments_create(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        self.experiments[body["name"]] = str(len(self.experiments) + 1)
        return Response(200, {"experiment_id": self.experiments[body["name"]]})

    def on_registered_models_get(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        if params["name"] not in self.models:
            return Response(404, {"error_code": "RESOURCE_DOES_NOT_EXIST"})
        return Response(200, {"registered_model": {"name": params["name"]}})

    def on_registered_models_create(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        self.models.add(body["name"])
        return Response(200, {"registered_model": {"name": body["name"]}})

    def on_users_permissions_list(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        rows = [g for g in self.grants if g["username"] == params["username"]]
        return Response(200, {"is_admin": False, "permissions": rows})

    def on_users_permissions_grant(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        resource = (body["resource_type"], body["resource_id"])
        self.add_grant(body["username"], resource, body["permission"])
        return Response(200, {})

    def on_roles_permissions_list(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        rows = [g for g in self.grants if str(g["role_id"]) == params["role_id"]]
        return Response(200, {"role_permissions": rows})

    def on_roles_permissions_update(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        row = next(g for g in self.grants if g["id"] == body["role_permission_id"])
        row["permission"] = body["permission"]
        return Response(200, {"role_permission": row})

    def permissions(self, username: str) -> set[tuple[str, str, str]]:
        return {
            (g["resource_type"], g["resource_pattern"], g["permission"])
            for g in self.grants
            if g["username"] == username and g["role_name"].startswith("__user_")
        }


def api_for(server: FakeAuthServer, admin: Account = ADMIN) -> AuthApi:
    return AuthApi("http://mlflow:5000/", admin, session=server)  # type: ignore[arg-type]


def run_step(server: FakeAuthServer) -> list[str]:
    return ensure_accounts(api_for(server), TRAINER_PASSWORD, PREDICTOR_PASSWORD, MODEL)


def test_a_fresh_server_gets_users_experiment_model_and_grants() -> None:
    server = FakeAuthServer()
    changes = run_step(server)
    assert "created user trainer" in changes
    assert "created user predictor" in changes
    experiment_id = server.experiments[names.EXPERIMENT]
    assert MODEL in server.models
    assert server.permissions(names.MLFLOW_TRAINER_USER) == {
        ("experiment", experiment_id, "MANAGE"),
        ("registered_model", MODEL, "MANAGE"),
    }
    # READ on the experiment as well: the model's files live under it (see mlflow_accounts).
    assert server.permissions(names.MLFLOW_PREDICTOR_USER) == {
        ("experiment", experiment_id, "READ"),
        ("registered_model", MODEL, "READ"),
    }


def test_a_second_run_changes_nothing() -> None:
    server = FakeAuthServer()
    run_step(server)
    server.writes.clear()
    assert run_step(server) == []
    assert server.writes == []


def test_an_existing_user_gets_the_configured_password() -> None:
    server = FakeAuthServer()
    server.add_user(names.MLFLOW_TRAINER_USER, "an-old-password-1")
    changes = run_step(server)
    assert "set the configured password of user trainer" in changes
    assert server.users[names.MLFLOW_TRAINER_USER]["password"] == TRAINER_PASSWORD
    assert "POST /api/2.0/mlflow/users/create" in server.writes  # the predictor only
    assert server.writes.count("POST /api/2.0/mlflow/users/create") == 1


def test_existing_experiment_and_model_are_reused() -> None:
    server = FakeAuthServer(experiments={names.EXPERIMENT: "7"}, models={MODEL})
    run_step(server)
    assert server.experiments == {names.EXPERIMENT: "7"}
    assert not any("experiments/create" in w or "models/create" in w for w in server.writes)
    assert ("experiment", "7", "MANAGE") in server.permissions(names.MLFLOW_TRAINER_USER)


def test_a_grant_with_another_permission_is_changed_in_place() -> None:
    server = FakeAuthServer(experiments={names.EXPERIMENT: "1"}, models={MODEL})
    server.add_user(names.MLFLOW_PREDICTOR_USER, PREDICTOR_PASSWORD)
    server.add_grant(names.MLFLOW_PREDICTOR_USER, ("registered_model", MODEL), "MANAGE")
    changes = run_step(server)
    assert "changed to predictor READ on registered_model test-model (was MANAGE)" in changes
    assert "PATCH /api/3.0/mlflow/roles/permissions/update" in server.writes
    rows = [g for g in server.grants if g["resource_type"] == "registered_model"]
    assert [(g["username"], g["permission"]) for g in rows if g["username"] == "predictor"] == [
        ("predictor", "READ")
    ]


def test_grants_from_shared_roles_do_not_count_as_the_users_own() -> None:
    server = FakeAuthServer(experiments={names.EXPERIMENT: "1"}, models={MODEL})
    server.add_user(names.MLFLOW_TRAINER_USER, TRAINER_PASSWORD)
    server.add_grant(names.MLFLOW_TRAINER_USER, ("experiment", "1"), "MANAGE")
    server.grants[-1].update(role_id=99, role_name="ml-team")  # shared, revocable by others
    run_step(server)
    own = [g for g in server.grants if g["role_name"].startswith("__user_")]
    assert ("experiment", "1", "MANAGE") in {
        (g["resource_type"], g["resource_pattern"], g["permission"])
        for g in own
        if g["username"] == names.MLFLOW_TRAINER_USER
    }


def test_wrong_admin_password_names_the_settings_not_the_password() -> None:
    server = FakeAuthServer()
    wrong = Account("admin", "not-the-password")
    with pytest.raises(MlflowAccountsError) as error:
        ensure_accounts(api_for(server, wrong), TRAINER_PASSWORD, PREDICTOR_PASSWORD, MODEL)
    assert error.value.status == 401
    assert "MLFLOW_ADMIN_PASSWORD" in str(error.value)
    assert "not-the-password" not in str(error.value)


def test_a_server_without_the_auth_app_is_not_mistaken_for_missing_users() -> None:
    class NoAuthApp(FakeAuthServer):
        def request(self, method: str, url: str, **kwargs: Any) -> Response:
            return Response(404)  # Flask's page for an unknown route, no MLflow error code

    with pytest.raises(MlflowAccountsError, match="basic-auth app") as error:
        run_step(NoAuthApp())
    assert error.value.status == 404


def test_error_messages_never_quote_the_servers_error_text() -> None:
    server = FakeAuthServer()
    with pytest.raises(MlflowAccountsError) as error:
        api_for(server).create_user(ADMIN)
    assert (
        str(error.value) == "POST /api/2.0/mlflow/users/create answered 400 RESOURCE_ALREADY_EXISTS"
    )


def test_accounts_do_not_show_their_passwords() -> None:
    assert "admin-password-1" not in repr(ADMIN)


def settings(**values: object) -> BootstrapSettings:
    defaults: dict[str, object] = {
        "mlflow_tracking_uri": "http://mlflow:5000",
        "mlflow_admin_password": "admin-password-1",
        "mlflow_trainer_password": TRAINER_PASSWORD,
        "mlflow_predictor_password": PREDICTOR_PASSWORD,
    }
    return BootstrapSettings(_env_file=None, **{**defaults, **values})


def test_without_an_admin_password_the_step_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    assert mlflow_accounts.configure(settings(mlflow_admin_password=None)) == []
    assert "MLFLOW_ADMIN_PASSWORD unset" in caplog.text


def test_a_local_store_has_no_accounts() -> None:
    assert mlflow_accounts.configure(settings(mlflow_tracking_uri="sqlite:///m.db")) == []


@pytest.mark.parametrize("variable", ["MLFLOW_TRAINER_PASSWORD", "MLFLOW_PREDICTOR_PASSWORD"])
def test_account_passwords_are_required_and_long_enough(variable: str) -> None:
    field_name = variable.lower()
    with pytest.raises(MlflowAccountsError, match=f"{variable} is not set"):
        mlflow_accounts.configure(settings(**{field_name: None}))
    with pytest.raises(MlflowAccountsError, match=f"{variable} is shorter") as error:
        mlflow_accounts.configure(settings(**{field_name: SecretStr("tiny-pw")}))
    assert "tiny-pw" not in str(error.value)
