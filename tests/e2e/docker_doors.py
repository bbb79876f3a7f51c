"""Security checks of the Docker stack (docker-compose.yml), used by test_docker_stack.py:
the compose file's hardening, the refusal of placeholder secrets, and, on the running stack,
every door locked, the predictor's limits, where the S3 root password may be, the bearer token.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nyctaxi import names
from tests.e2e.doors import check_locked, loopback_session

if TYPE_CHECKING:
    from tests.e2e.test_docker_stack import Stack

# The services allowed to hold the S3 root password in their environment.
S3_ROOT_HOLDERS = {"minio", "buckets", "mlflow", "bootstrap"}
# Capabilities a service may add back, all of them written down in docker-compose.yml.
ALLOWED_CAPABILITIES = {
    "postgres": {"CHOWN", "DAC_READ_SEARCH", "FOWNER", "SETGID", "SETUID"},
    "preflight": {"DAC_READ_SEARCH"},
}
PLACEHOLDER_SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "PREFECT_API_AUTH_STRING")


def check_compose_hardening(services: dict[str, dict[str, Any]]) -> None:
    """Static: no-new-privileges and no capabilities beyond the documented ones, everywhere."""
    for name, service in services.items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("cap_drop") == ["ALL"], name
        assert set(service.get("cap_add", [])) <= ALLOWED_CAPABILITIES.get(name, set()), name
        image = str(service.get("image", ""))
        assert not image.endswith((":latest", ":15")), f"{name}: pin a minor version ({image})"
    assert services["predict"].get("read_only") is True
    minio_ports = " ".join(map(str, services["minio"].get("ports", [])))
    assert "9001" not in minio_ports, "the MinIO console is off unless asked for"
    assert services["minio"]["environment"]["MINIO_BROWSER"] == "off"


def check_placeholders_refused(stack_class: type[Stack], env_file: Path) -> str:
    """A .env holding change-me values: compose refuses to start, naming the variables."""
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    env_file.write_text(example + f"NYCTAXI_ENV_FILE={env_file}\n")
    stack = stack_class(env_file, {})
    try:
        stack.compose("up", "-d", "postgres", timeout=300, check=False)
        states = stack.container_states("preflight")
        assert [state["ExitCode"] for state in states] == [1], states
        logs = stack.compose("logs", "preflight", check=False)
        missing = [name for name in PLACEHOLDER_SECRETS if name not in logs]
        assert not missing, f"preflight did not name {missing}:\n{logs}"
        postgres = stack.container_states("postgres")
        assert not any(state.get("Running") for state in postgres), "postgres started anyway"
    finally:
        stack.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
    return "preflight exited 1 naming the placeholder variables; postgres never ran"


def check_doors(stack: Stack, champion_version: str) -> str:
    """On the running stack: locks, accounts, secrets in environments, hardening at run time."""
    prefect_api = stack.url("PREFECT_PORT", "/api")
    mlflow_url = stack.url("MLFLOW_PORT", "")
    summary = [check_locked(prefect_api, stack.http.auth, mlflow_url)]
    summary.append(check_predictor(stack, champion_version))
    summary.append(check_predict_token(stack))
    summary.append(check_containers(stack))
    return "; ".join(summary)


def check_predictor(stack: Stack, champion_version: str) -> str:
    """The predictor reads the registered model but may not move an alias or add a version;
    the trainer may move the alias (to where it already is: nothing changes)."""
    predictor = (names.MLFLOW_PREDICTOR_USER, stack.secrets["MLFLOW_PREDICTOR_PASSWORD"])
    api = stack.url("MLFLOW_PORT", "/api/2.0/mlflow")
    alias = {"name": names.MODEL_NAME, "alias": names.CHAMPION_ALIAS, "version": champion_version}
    read = stack.mlflow.get(f"{api}/registered-models/alias", params=alias, auth=predictor)
    assert read.status_code == 200, read.text
    moved = stack.mlflow.post(f"{api}/registered-models/alias", json=alias, auth=predictor)
    assert moved.status_code == 403, (moved.status_code, moved.text)
    source = read.json()["model_version"]["source"]
    version = {"name": names.MODEL_NAME, "source": source}
    created = stack.mlflow.post(f"{api}/model-versions/create", json=version, auth=predictor)
    assert created.status_code == 403, (created.status_code, created.text)
    trainer = stack.mlflow.post(f"{api}/registered-models/alias", json=alias)
    assert trainer.status_code == 200, (trainer.status_code, trainer.text)
    return "predictor: read 200, alias move 403, new version 403; trainer: alias move 200"


def check_predict_token(stack: Stack) -> str:
    url = stack.url("PREDICT_PORT", "/predict")
    stranger = loopback_session()
    anonymous = stranger.post(url, json={})
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers.get("WWW-Authenticate", "").startswith("Bearer"), anonymous.headers
    assert anonymous.headers["Content-Type"].startswith("application/json")
    health = stranger.get(stack.url("PREDICT_PORT", "/health"))
    assert health.status_code == 200
    return "predict: 401 + WWW-Authenticate without the token, /health open"


def check_containers(stack: Stack) -> str:
    """docker inspect: who holds the S3 root password; hardening as the compose file says."""
    ids = stack.compose("ps", "-a", "-q").split()
    containers = json.loads(
        subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, check=True
        ).stdout
    )
    password = stack.secrets["MINIO_ROOT_PASSWORD"]
    holders = set()
    for container in containers:
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        if any(password in item for item in container["Config"]["Env"] or []):
            holders.add(service)
        host = container["HostConfig"]
        assert "no-new-privileges:true" in (host.get("SecurityOpt") or []), service
        assert host.get("CapDrop") == ["ALL"], (service, host.get("CapDrop"))
        if service == "predict":
            assert host.get("ReadonlyRootfs") is True
    assert holders <= S3_ROOT_HOLDERS, f"S3 root password in {holders - S3_ROOT_HOLDERS}"
    assert {"worker", "predict"} & holders == set()
    return f"S3 root password only in {sorted(holders)}; every container hardened"
