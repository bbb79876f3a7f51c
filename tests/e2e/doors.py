"""Every door of a running stack, knocked on without a key: both end-to-end tests use it.

Routes are not hand-picked: Prefect's are read from the server's own OpenAPI document (fetched
with the key), MLflow's from the REST handlers of the installed MLflow (the server's version),
plus the basic-auth app's user routes and the UI. Each route is called once without credentials
(path parameters filled with a made-up id): unauthenticated requests are refused before any
handler runs, so nothing changes on the server.
"""

from __future__ import annotations

import re

import requests

# Health endpoints stay open for healthchecks. MLflow's basic-auth app also leaves server-info
# open by design (clients read the server's features before they log in; MLflow keeps secrets
# and addresses out of it): the one exception, written down in the README.
PREFECT_OPEN = {"/api/health", "/api/ready"}
MLFLOW_OPEN = {
    "/health",
    "/version",
    "/api/3.0/mlflow/server-info",
    "/ajax-api/3.0/mlflow/server-info",
}
MADE_UP_ID = "00000000-0000-4000-8000-000000000000"
MLFLOW_AUTH_ROUTES = [
    ("POST", "/api/2.0/mlflow/users/create"),
    ("GET", "/api/2.0/mlflow/users/get"),
    ("PATCH", "/api/2.0/mlflow/users/update-password"),
    ("POST", "/api/2.0/mlflow/experiments/permissions/create"),
    ("POST", "/api/2.0/mlflow/registered-models/permissions/create"),
    ("GET", "/get-artifact"),
    ("GET", "/model-versions/get-artifact"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts"),
    ("GET", "/"),
]


def loopback_session(auth: tuple[str, str] | None = None) -> requests.Session:
    """A session for the stack's loopback ports: never through a proxy from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.auth = auth
    return session


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}|<[^>]+>", MADE_UP_ID, path)


def prefect_routes(api_url: str, auth: tuple[str, str]) -> list[tuple[str, str]]:
    """(method, path) of every route in the Prefect server's OpenAPI document."""
    response = loopback_session(auth).get(
        f"{api_url.removesuffix('/api')}/api/openapi.json", timeout=30
    )
    response.raise_for_status()
    routes = []
    for path, operations in response.json()["paths"].items():
        full = path if path.startswith("/api") else f"/api{path}"
        routes += [(method.upper(), full) for method in operations]
    return routes


def mlflow_routes() -> list[tuple[str, str]]:
    """(method, path) of every REST route of MLflow's server, and the auth app's own."""
    from mlflow.server.handlers import get_endpoints

    routes = {(method, path) for path, _, methods in get_endpoints() for method in methods}
    return sorted(routes) + MLFLOW_AUTH_ROUTES


def open_doors(base_url: str, routes: list[tuple[str, str]], open_paths: set[str]) -> list[str]:
    """Routes that did not answer 401 to a request without credentials (health excluded)."""
    session = loopback_session()
    answered = []
    for method, path in routes:
        if path in open_paths:
            continue
        response = session.request(method, base_url + _fill(path), json={}, timeout=30)
        if response.status_code != 401:
            answered.append(f"{method} {path} -> {response.status_code}")
    return answered


def check_locked(prefect_api: str, prefect_auth: tuple[str, str], mlflow_url: str) -> str:
    """Assert every Prefect and MLflow route but health answers 401 without a key; the summary."""
    prefect_base = prefect_api.removesuffix("/api")
    prefect = prefect_routes(prefect_api, prefect_auth)
    mlflow = mlflow_routes()
    assert len(prefect) > 100 and len(mlflow) > 100, (len(prefect), len(mlflow))
    opened = open_doors(prefect_base, prefect, PREFECT_OPEN)
    opened += open_doors(mlflow_url, mlflow, MLFLOW_OPEN)
    assert not opened, f"answered without credentials: {opened[:20]} ({len(opened)} in all)"
    session = loopback_session()
    health = [
        session.get(url, timeout=10) for url in (prefect_api + "/health", mlflow_url + "/health")
    ]
    assert [r.status_code for r in health] == [200, 200], "health endpoints must stay open"
    return f"{len(prefect)} Prefect and {len(mlflow)} MLflow routes answered 401 without a key"
