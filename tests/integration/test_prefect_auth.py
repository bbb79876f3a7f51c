"""Prefect as both stacks run it: basic auth, CSRF protection, CORS for its own UI only and the
Fernet key of the block secrets from the environment (tests/servers.py `prefect_server`).

Without the auth string every API route answers 401, writes included (services.prefect answers
before Prefect's CSRF check); health and readiness stay open. With it, clients, workers and flow
runs work as before, and the UI asks for it before it shows anything.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from prefect import flow
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_URL,
    PREFECT_CLIENT_CSRF_SUPPORT_ENABLED,
    temporary_settings,
)
from prefect.workers.process import ProcessWorker
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.chromium import Page, headless_page
from tests.servers import PULL_FROM_REPO, VENV_BIN, prefect_server, running_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SECRET_NAME = "auth-test-secret"
POOL = "auth-test-pool"
FLOW_NAME = "auth-check"
PASSWORD_INPUT = "input[type=password]"
UNAUTHORIZED = {"exception_message": "Unauthorized"}


@dataclass(frozen=True)
class SecuredPrefect:
    api_url: str
    auth_string: str
    encryption_key: str
    home: Path

    @property
    def origin(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def database(self) -> Path:
        return self.home / "prefect.db"  # Prefect's default SQLite file in PREFECT_HOME

    def basic_auth(self) -> httpx.BasicAuth:
        user, password = self.auth_string.split(":", 1)
        return httpx.BasicAuth(user, password)

    def csrf_headers(self) -> dict[str, str]:
        """A valid CSRF token, fetched with the credentials: a request carrying it passes the
        CSRF check, so what answers it is the auth check."""
        client_id = str(uuid.uuid4())
        response = httpx.get(
            f"{self.api_url}/csrf-token", params={"client": client_id}, auth=self.basic_auth()
        )
        response.raise_for_status()
        return {"Prefect-Csrf-Token": response.json()["token"], "Prefect-Csrf-Client": client_id}


@dataclass(frozen=True)
class Seeded:
    secret_value: str
    block_id: uuid.UUID
    deployment_id: uuid.UUID


@flow(name=FLOW_NAME)
def auth_check(secret_name: str, sha256: str) -> None:
    """Run by the worker: the flow-run process reads a secret block through the secured API."""
    value = Secret.load(secret_name).get()
    if hashlib.sha256(value.encode()).hexdigest() != sha256:
        raise ValueError("the secret block read back differs from the one saved")


@contextlib.contextmanager
def client_settings(api_url: str, auth_string: str) -> Iterator[None]:
    with temporary_settings(
        updates={PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth_string}
    ):
        yield


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredPrefect]:
    home = tmp_path_factory.mktemp("prefect-auth")
    auth_string = f"admin:{secrets.token_urlsafe(18)}"
    key = Fernet.generate_key().decode()
    with prefect_server(home, auth_string=auth_string, encryption_key=key, ui=True) as api_url:
        yield SecuredPrefect(api_url, auth_string, key, home)


@pytest.fixture(scope="module")
def seeded(secured: SecuredPrefect) -> Seeded:
    """A secret block and a deployment on the process pool, made by a client with the auth
    string (its writes need CSRF tokens too)."""
    value = secrets.token_urlsafe(24)
    with (
        client_settings(secured.api_url, secured.auth_string),
        get_client(sync_client=True) as client,
    ):
        block_id = Secret(value=value).save(SECRET_NAME, overwrite=True)
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(
            WorkPoolCreate(name=POOL, type="process", base_job_template=template)
        )
        deployment_id = client.create_deployment(
            client.create_flow(auth_check),
            "auth-check",
            work_pool_name=POOL,
            entrypoint="tests/integration/test_prefect_auth.py:auth_check",
            pull_steps=PULL_FROM_REPO,
        )
    return Seeded(value, block_id, deployment_id)


def representative_routes(seeded: Seeded) -> list[tuple[str, str, dict[str, object] | None]]:
    """(method, path under /api, JSON body): reads, secrets, admin, runs, events and UI routes."""
    return [
        ("POST", "/flows/filter", {}),
        ("POST", "/deployments/filter", {}),
        ("POST", "/block_documents/filter", {"include_secrets": True}),
        ("GET", f"/block_documents/{seeded.block_id}?include_secrets=true", None),
        ("POST", "/work_pools/filter", {}),
        ("GET", "/admin/settings", None),
        ("GET", "/admin/version", None),
        ("POST", f"/deployments/{seeded.deployment_id}/create_flow_run", {}),
        ("POST", "/flow_runs/filter", {}),
        ("POST", "/events/filter", {}),
        ("GET", "/csrf-token?client=anyone", None),
        ("POST", "/variables/", {"name": "planted", "value": "x"}),
        ("POST", "/ui/flows/count-deployments", {"flow_ids": []}),
        ("POST", "/ui/flow_runs/history", {"history_start": "2024-01-01T00:00:00Z"}),
        ("GET", "/openapi.json", None),
        ("GET", "/docs", None),
    ]


def test_without_the_auth_string_representative_routes_answer_401(
    secured: SecuredPrefect, seeded: Seeded
) -> None:
    csrf = secured.csrf_headers()
    with httpx.Client(base_url=secured.api_url, headers=csrf) as http:
        for method, path, body in representative_routes(seeded):
            response = http.request(method, path, json=body)
            assert (response.status_code, response.json()) == (401, UNAUTHORIZED), (method, path)


def test_without_credentials_changes_get_401_before_the_csrf_check(
    secured: SecuredPrefect, seeded: Seeded
) -> None:
    # Prefect's CSRF middleware wraps its API app and would answer 403 "Missing CSRF token";
    # services.prefect checks the auth string first, so the answer says what is missing.
    for method, path, body in representative_routes(seeded):
        if method != "GET":
            response = httpx.request(method, f"{secured.api_url}{path}", json=body)
            assert (response.status_code, response.json()) == (401, UNAUTHORIZED), (method, path)


def test_every_api_route_needs_the_auth_string(secured: SecuredPrefect) -> None:
    """All HTTP routes Prefect mounts under /api (ids made up: auth answers before routing)."""
    from fastapi.routing import APIRoute
    from prefect.server.api.server import API_ROUTERS

    open_routes = {("GET", "/ready")}
    checked = 0
    with httpx.Client(base_url=secured.api_url, headers=secured.csrf_headers()) as http:
        for route in (r for router in API_ROUTERS for r in router.routes):
            if not isinstance(route, APIRoute):
                continue  # websockets authenticate by message: see the websocket test
            path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
            for method in sorted(set(route.methods) - {"HEAD"}):
                if (method, route.path) in open_routes:
                    continue
                response = http.request(method, path, json={} if method != "GET" else None)
                assert response.status_code == 401, (method, route.path, response.text[:200])
                checked += 1
    assert checked > 150  # the sweep did see Prefect's routes


def test_health_and_ready_stay_open(secured: SecuredPrefect) -> None:
    assert httpx.get(f"{secured.api_url}/health").json() is True
    ready = httpx.get(f"{secured.api_url}/ready")
    assert (ready.status_code, ready.json()) == (200, {"message": "OK"})


@pytest.mark.parametrize(
    "authorization",
    ["wrong-password", "no-password", "bearer", "garbage"],
)
def test_wrong_credentials_answer_401(secured: SecuredPrefect, authorization: str) -> None:
    user, password = secured.auth_string.split(":", 1)
    header = {
        "wrong-password": "Basic " + _b64(f"{user}:{password}x"),
        "no-password": "Basic " + _b64(f"{user}:"),
        "bearer": f"Bearer {password}",
        "garbage": "Basic !!!",
    }[authorization]
    headers = {**secured.csrf_headers(), "Authorization": header}
    for method, path in [("GET", "/admin/settings"), ("POST", "/flows/filter")]:
        response = httpx.request(method, f"{secured.api_url}{path}", headers=headers, json=None)
        assert response.status_code == 401, (method, path)


def test_websockets_need_the_auth_string_in_their_first_message(secured: SecuredPrefect) -> None:
    url = secured.api_url.replace("http://", "ws://") + "/events/out"
    with connect(url, subprotocols=["prefect"], proxy=None) as socket:
        socket.send(json.dumps({"type": "auth", "token": "admin:wrong"}))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with connect(url, subprotocols=["prefect"], proxy=None) as socket:
        socket.send(json.dumps({"type": "auth", "token": secured.auth_string}))
        assert json.loads(socket.recv(timeout=10)) == {"type": "auth_success"}


def test_a_client_with_the_auth_string_writes_through_the_csrf_check(
    secured: SecuredPrefect, seeded: Seeded
) -> None:
    assert PREFECT_CLIENT_CSRF_SUPPORT_ENABLED.value() is True  # Prefect's default
    with_auth_only = httpx.post(
        f"{secured.api_url}/flows/", json={"name": "no-token"}, auth=secured.basic_auth()
    )
    assert with_auth_only.status_code == 403  # so the client below must send CSRF tokens

    with (
        client_settings(secured.api_url, secured.auth_string),
        get_client(sync_client=True) as client,
    ):
        assert Secret.load(SECRET_NAME).get() == seeded.secret_value
        run = client.create_flow_run_from_deployment(seeded.deployment_id, tags=["auth-test"])
        assert client.read_flow_run(run.id).state_type == StateType.SCHEDULED
        client.delete_flow_run(run.id)
    with sqlite3.connect(secured.database) as db:
        assert db.execute("SELECT count(*) FROM csrf_token").fetchone()[0] >= 1


def test_a_worker_runs_a_deployment_whose_flow_reads_the_secret(
    secured: SecuredPrefect, seeded: Seeded, tmp_path: Path
) -> None:
    digest = hashlib.sha256(seeded.secret_value.encode()).hexdigest()
    env = {"PREFECT_API_URL": secured.api_url, "PREFECT_API_AUTH_STRING": secured.auth_string}
    worker = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
    log_file = tmp_path / "worker.log"
    with (
        client_settings(secured.api_url, secured.auth_string),
        get_client(sync_client=True) as client,
    ):
        run = client.create_flow_run_from_deployment(
            seeded.deployment_id, parameters={"secret_name": SECRET_NAME, "sha256": digest}
        )
        with running_process(worker, log_file=log_file, env=env):
            wait_until(
                lambda: client.read_flow_run(run.id).state.is_final(),
                timeout=180,
                interval=1,
                what="flow run via the worker",
                log_file=log_file,
            )
        state = client.read_flow_run(run.id).state
    assert state.type == StateType.COMPLETED, f"{state}\n{log_file.read_text()[-3000:]}"


def test_cors_preflight_allows_only_the_ui_origin(secured: SecuredPrefect) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{secured.api_url}/flows/filter",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    allowed = preflight(secured.origin)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == secured.origin
    refused = preflight("http://evil.example")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    simple = httpx.get(f"{secured.api_url}/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_block_secrets_are_encrypted_with_the_key_from_the_environment(
    secured: SecuredPrefect, seeded: Seeded, tmp_path: Path
) -> None:
    with sqlite3.connect(secured.database) as db:
        keys = [row[0] for row in db.execute("SELECT key FROM configuration")]
        [stored] = db.execute(
            "SELECT data FROM block_document WHERE id = ?", (str(seeded.block_id),)
        ).fetchone()
    assert "ENCRYPTION_KEY" not in keys  # a key from the env is never written to the database
    assert seeded.secret_value not in stored
    token = json.loads(stored)  # a JSON string holding the Fernet token
    decrypted = json.loads(Fernet(secured.encryption_key).decrypt(token.encode()))
    assert decrypted == {"value": seeded.secret_value}

    # A second server (a replica, or the same one after a restart) with the same key reads it.
    copy = tmp_path / "copy.db"
    with sqlite3.connect(secured.database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with (
        prefect_server(
            tmp_path / "replica",
            database_url=f"sqlite+aiosqlite:///{copy}",
            auth_string=secured.auth_string,
            encryption_key=secured.encryption_key,
        ) as replica,
        client_settings(replica, secured.auth_string),
    ):
        assert Secret.load(SECRET_NAME).get() == seeded.secret_value


@dataclass(frozen=True)
class UiCase:
    flows_page: str  # a data page, opened before the login
    rejection: str | None  # what the login form says to a wrong auth string, if it says it


UI_CASES = {
    "ui-v2": UiCase("/v2/flows", "Invalid credentials"),  # the default one: / redirects to it
    "ui-v1": UiCase("/flows", None),
}


@pytest.mark.parametrize("case", UI_CASES.values(), ids=UI_CASES.keys())
def test_the_ui_shows_data_only_after_the_login(
    secured: SecuredPrefect, seeded: Seeded, case: UiCase, tmp_path: Path
) -> None:
    navigation = "document.querySelector('a[href$=\"/deployments\"]')"
    shows_flow = f"document.body.innerText.includes({json.dumps(FLOW_NAME)})"
    with headless_page(tmp_path) as page:
        page.navigate(secured.origin + case.flows_page)
        page.wait_for(f"document.querySelector({json.dumps(PASSWORD_INPUT)})", what="login form")
        assert "/login" in page.evaluate("location.pathname")
        assert not page.evaluate(f"!!{navigation} || {shows_flow}")
        if case.rejection:
            login(page, "admin:wrong")
            page.wait_for(
                f"document.body.innerText.includes({json.dumps(case.rejection)})", what="rejection"
            )
            assert page.evaluate("localStorage.getItem('prefect-password')") is None

        login(page, secured.auth_string)
        page.wait_for(f"!document.querySelector({json.dumps(PASSWORD_INPUT)})", what="the app")
        page.navigate(secured.origin + case.flows_page)
        page.wait_for(f"{navigation} && {shows_flow}", what="the flow list with the navigation")
        # What the UI keeps: the auth string, base64-encoded, in the page's local storage.
        stored = page.evaluate("localStorage.getItem('prefect-password')")
        assert stored == _b64(secured.auth_string)


def login(page: Page, auth_string: str) -> None:
    page.fill(PASSWORD_INPUT, auth_string)
    page.click("form button[type=submit]")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
