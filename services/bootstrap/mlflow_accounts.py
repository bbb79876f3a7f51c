"""MLflow accounts and grants, through the basic-auth app's REST API as the admin (idempotent).

Ensures the users `trainer` and `predictor` exist with the configured passwords (an existing
user whose password differs gets the configured one, so rotating = change .env and bootstrap
again), that the experiment and the registered model exist, and these grants on them:

- trainer: MANAGE on the experiment (runs, logged models, artifacts) and on the registered
  model (versions, aliases, tags);
- predictor: READ on the registered model and READ on the experiment. READ on the registered
  model alone resolves `models:/<name>@champion` but cannot load it: an MLflow 3 model version's
  files are those of a logged model, stored under the experiment's artifact root
  (`<experiment_id>/models/<model_id>/artifacts`), and the artifact proxy authorises those
  paths against the experiment (it requires experiment READ, then the logged-model tier, which
  falls back to the experiment). The prediction service also reads the version's run metrics
  (`get_run`), an experiment READ too. READ lets the predictor see this experiment's runs, metrics
  and artifacts, and change nothing; other experiments stay invisible (NO_PERMISSIONS default).

A grant that exists with another permission is updated in place; grants made by hand on other
resources are left alone. Every call checks before it acts: a second run changes nothing.

MLflow 3.17 replaced the per-resource `experiments/permissions/*` endpoints with per-user grants
(`/api/3.0/mlflow/users/permissions/{grant,list}`) stored on the user's own role
`__user_<id>__`, edited through `/api/3.0/mlflow/roles/permissions/*`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from pydantic import SecretStr

from nyctaxi import names
from services.bootstrap.settings import BootstrapSettings
from services.bootstrap.waiting import mlflow_health_url

logger = logging.getLogger(__name__)

EXPERIMENT = "experiment"
REGISTERED_MODEL = "registered_model"
REQUEST_TIMEOUT_SECONDS = 30.0
# MLflow's password policy (mlflow.utils.validation._validate_password).
MIN_PASSWORD_LENGTH = 12
# What to check when an answer to the admin's request is not the expected one, by status.
ADMIN_HINTS = {
    401: "MLFLOW_ADMIN_USERNAME / MLFLOW_ADMIN_PASSWORD must be those the MLflow server was started"
    " with (`python -m services.mlflow` resets the admin's password to its setting at start)",
    403: "MLFLOW_ADMIN_USERNAME must name an admin account",
    404: "is the server running MLflow's basic-auth app (`python -m services.mlflow`)?",
}


class MlflowAccountsError(RuntimeError):
    """The accounts could not be set up; the message says why (never with a password)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Account:
    username: str
    password: str

    def __repr__(self) -> str:  # keeps the password out of logs and tracebacks
        return f"Account(username={self.username!r})"


@dataclass(frozen=True)
class Grant:
    username: str
    resource_type: str  # EXPERIMENT (id) or REGISTERED_MODEL (name)
    resource_id: str
    permission: str


class AuthApi:
    """The REST calls of MLflow's basic-auth app the accounts step needs, as the admin.

    Plain HTTP with explicit credentials: MLflow's own clients take theirs from
    MLFLOW_TRACKING_USERNAME / _PASSWORD, which in the bootstrap are the trainer's.
    """

    def __init__(
        self, tracking_uri: str, admin: Account, session: requests.Session | None = None
    ) -> None:
        self.base = tracking_uri.rstrip("/")
        self.admin = admin
        self.session = session or requests.Session()

    def call(
        self,
        method: str,
        path: str,
        *,
        as_account: Account | None = None,
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """JSON of a 2xx answer; None for a 404 when `missing_ok`; MlflowAccountsError else."""
        account = as_account or self.admin
        try:
            response = self.session.request(
                method,
                f"{self.base}{path}",
                auth=(account.username, account.password),
                timeout=REQUEST_TIMEOUT_SECONDS,
                **kwargs,
            )
        except requests.RequestException as error:
            raise MlflowAccountsError(f"{method} {path} failed: {error}") from error
        code = error_code(response)
        # A missing object, not a missing route (a server without the auth app answers 404 too).
        if missing_ok and response.status_code == 404 and code == "RESOURCE_DOES_NOT_EXIST":
            return None
        if not response.ok:
            text = f"{method} {path} answered {response.status_code} {code}".rstrip()
            hint = ADMIN_HINTS.get(response.status_code) if account is self.admin else None
            if response.status_code == 401:
                text += f": the server refused the password of user {account.username}"
            raise MlflowAccountsError(f"{text} ({hint})" if hint else text, response.status_code)
        return response.json() if response.content else {}

    def get_user(self, username: str) -> dict[str, Any] | None:
        params = {"username": username}
        found = self.call("GET", "/api/2.0/mlflow/users/get", params=params, missing_ok=True)
        return None if found is None else found["user"]

    def create_user(self, account: Account) -> None:
        body = {"username": account.username, "password": account.password}
        self.call("POST", "/api/2.0/mlflow/users/create", json=body)

    def password_works(self, account: Account) -> bool:
        """Whether the server accepts these credentials (asks as that user who it is)."""
        try:
            self.call("GET", "/api/2.0/mlflow/users/current", as_account=account)
        except MlflowAccountsError as error:
            if error.status == 401:
                return False
            raise
        return True

    def update_password(self, account: Account) -> None:
        body = {"username": account.username, "password": account.password}
        self.call("PATCH", "/api/2.0/mlflow/users/update-password", json=body)

    def experiment_id(self, name: str) -> str | None:
        path, params = "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name}
        found = self.call("GET", path, params=params, missing_ok=True)
        return None if found is None else str(found["experiment"]["experiment_id"])

    def create_experiment(self, name: str) -> str:
        created = self.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
        return str((created or {})["experiment_id"])

    def registered_model_exists(self, name: str) -> bool:
        path, params = "/api/2.0/mlflow/registered-models/get", {"name": name}
        found = self.call("GET", path, params=params, missing_ok=True)
        return found is not None

    def create_registered_model(self, name: str) -> None:
        self.call("POST", "/api/2.0/mlflow/registered-models/create", json={"name": name})

    def direct_grants(self, username: str, user_id: int) -> dict[tuple[str, str], dict[str, Any]]:
        """The user's own grants (on role `__user_<id>__`, not those of shared roles), by
        (resource type, resource id)."""
        path, params = "/api/3.0/mlflow/users/permissions/list", {"username": username}
        listed = self.call("GET", path, params=params) or {}
        own_role = f"__user_{user_id}__"
        return {
            (row["resource_type"], row["resource_pattern"]): row
            for row in listed.get("permissions", [])
            if row["role_name"] == own_role
        }

    def grant(self, grant: Grant) -> None:
        body = {
            "username": grant.username,
            "resource_type": grant.resource_type,
            "resource_id": grant.resource_id,
            "permission": grant.permission,
        }
        self.call("POST", "/api/3.0/mlflow/users/permissions/grant", json=body)

    def change_grant(self, role_id: int, grant: Grant) -> None:
        """Set the permission of an existing grant in place (no moment without access, unlike
        revoke + grant)."""
        path, params = "/api/3.0/mlflow/roles/permissions/list", {"role_id": str(role_id)}
        listed = self.call("GET", path, params=params) or {}
        row = next(
            row
            for row in listed.get("role_permissions", [])
            if (row["resource_type"], row["resource_pattern"])
            == (grant.resource_type, grant.resource_id)
        )
        body = {"role_permission_id": row["id"], "permission": grant.permission}
        self.call("PATCH", "/api/3.0/mlflow/roles/permissions/update", json=body)


def error_code(response: requests.Response) -> str:
    """MLflow's error code of a failed answer, the only part of its body our errors quote: the
    message can quote request data (a duplicate user's quotes its password hash)."""
    if response.ok or not response.content:
        return ""
    try:
        body = response.json()
    except ValueError:  # e.g. the plain-text "Permission denied"
        return ""
    return str(body.get("error_code", "")) if isinstance(body, dict) else ""


def ensure_user(api: AuthApi, account: Account) -> tuple[int, str | None]:
    """Create the user or give it the configured password; (user id, change made or None)."""
    user = api.get_user(account.username)
    if user is None:
        api.create_user(account)
        user = api.get_user(account.username) or {}
        return int(user["id"]), f"created user {account.username}"
    if api.password_works(account):
        return int(user["id"]), None
    api.update_password(account)
    return int(user["id"]), f"set the configured password of user {account.username}"


def ensure_experiment(api: AuthApi, name: str) -> tuple[str, str | None]:
    experiment_id = api.experiment_id(name)
    if experiment_id is not None:
        return experiment_id, None
    experiment_id = api.create_experiment(name)
    return experiment_id, f"created experiment {name} ({experiment_id})"


def ensure_registered_model(api: AuthApi, name: str) -> str | None:
    if api.registered_model_exists(name):
        return None
    api.create_registered_model(name)
    return f"created registered model {name}"


def desired_grants(experiment_id: str, model_name: str) -> list[Grant]:
    """Who may do what (why: see the module docstring)."""
    trainer, predictor = names.MLFLOW_TRAINER_USER, names.MLFLOW_PREDICTOR_USER
    return [
        Grant(trainer, EXPERIMENT, experiment_id, "MANAGE"),
        Grant(trainer, REGISTERED_MODEL, model_name, "MANAGE"),
        Grant(predictor, REGISTERED_MODEL, model_name, "READ"),
        # Loading the model's files and reading its run's metrics need it (module docstring).
        Grant(predictor, EXPERIMENT, experiment_id, "READ"),
    ]


def ensure_grant(api: AuthApi, grant: Grant, user_id: int) -> str | None:
    current = api.direct_grants(grant.username, user_id).get(
        (grant.resource_type, grant.resource_id)
    )
    what = f"{grant.username} {grant.permission} on {grant.resource_type} {grant.resource_id}"
    if current is None:
        api.grant(grant)
        return f"granted {what}"
    was = current["permission"]
    if was != grant.permission:
        api.change_grant(int(current["role_id"]), grant)
        return f"changed to {what} (was {was})"
    return None


def ensure_accounts(
    api: AuthApi, trainer_password: str, predictor_password: str, model_name: str
) -> list[str]:
    """Users, experiment, registered model and grants as configured; returns the changes made
    (empty when everything was already right)."""
    accounts = [
        Account(names.MLFLOW_TRAINER_USER, trainer_password),
        Account(names.MLFLOW_PREDICTOR_USER, predictor_password),
    ]
    changes: list[str | None] = []
    user_ids: dict[str, int] = {}
    for account in accounts:
        user_ids[account.username], change = ensure_user(api, account)
        changes.append(change)
    experiment_id, change = ensure_experiment(api, names.EXPERIMENT)
    changes += [change, ensure_registered_model(api, model_name)]
    for grant in desired_grants(experiment_id, model_name):
        changes.append(ensure_grant(api, grant, user_ids[grant.username]))
    made = [change for change in changes if change is not None]
    for change in made:
        logger.info("MLflow accounts: %s", change)
    if not made:
        logger.info("MLflow accounts: users, experiment, model and grants already as configured")
    return made


def required_password(variable: str, value: SecretStr | None) -> str:
    """The password, or MlflowAccountsError naming the variable (never quoting the value)."""
    if value is None:
        raise MlflowAccountsError(f"{variable} is not set (required with MLFLOW_ADMIN_PASSWORD)")
    password = value.get_secret_value()
    if len(password) < MIN_PASSWORD_LENGTH:
        raise MlflowAccountsError(f"{variable} is shorter than {MIN_PASSWORD_LENGTH} characters")
    return password


def configure(settings: BootstrapSettings) -> list[str]:
    """The bootstrap's step: accounts and grants when the server runs MLflow's basic-auth app
    (MLFLOW_ADMIN_PASSWORD set); returns the changes made."""
    if settings.mlflow_admin_password is None:
        logger.info("MLFLOW_ADMIN_PASSWORD unset: MLflow without authentication, no accounts")
        return []
    if mlflow_health_url(settings.mlflow_tracking_uri) is None:
        logger.info("MLFLOW_TRACKING_URI is a local store: no MLflow accounts to set up")
        return []
    trainer = required_password("MLFLOW_TRAINER_PASSWORD", settings.mlflow_trainer_password)
    predictor = required_password("MLFLOW_PREDICTOR_PASSWORD", settings.mlflow_predictor_password)
    admin = Account(
        settings.mlflow_admin_username, settings.mlflow_admin_password.get_secret_value()
    )
    with requests.Session() as session:
        api = AuthApi(settings.mlflow_tracking_uri, admin, session)
        return ensure_accounts(api, trainer, predictor, settings.model_name)
