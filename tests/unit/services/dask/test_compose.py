"""docker-compose.yml's Dask cluster: behind the profile `dask`, mutual TLS with the variables
nyctaxi.dasktls names, no published scheduler port, a dashboard bound apart, and workers that
give tasks what the Prefect worker gives its flow runs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from nyctaxi import dasktls
from tests.servers import REPO_ROOT

TLS_DIR = "/run/dask-tls"
DASK_SERVICES = ("dask-certs", "dask-scheduler", "dask-worker")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]


def test_the_cluster_is_only_in_the_dask_profile(services: dict[str, Any]) -> None:
    for name in DASK_SERVICES:
        assert services[name]["profiles"] == ["dask"], name
    others = set(services) - set(DASK_SERVICES)
    assert all("profiles" not in services[name] for name in others)
    for name in others:  # the default stack never waits for a service it does not start
        assert not set(services[name].get("depends_on", {})) & set(DASK_SERVICES), name


def test_every_member_gets_its_role_from_the_tls_folder(services: dict[str, Any]) -> None:
    roles = {
        "dask-scheduler": ["scheduler"],
        "dask-worker": ["worker", "client"],
        "worker": ["client"],
    }
    for name, wanted in roles.items():
        env = services[name]["environment"]
        expected = dasktls.roles_environment(TLS_DIR, wanted)  # type: ignore[arg-type]
        assert {key: env.get(key) for key in expected} == expected, name
        assert f"dask-tls:{TLS_DIR}:ro" in services[name]["volumes"], name
    assert "dask-tls:/home/app/.local/share/nyctaxi" in services["dask-certs"]["volumes"]
    assert services["dask-certs"]["network_mode"] == "none"
    # The TLS variables are the only Dask setting of the Prefect worker; its address is opt-in.
    assert services["worker"]["environment"]["DASK_SCHEDULER_ADDRESS"] == (
        "${DASK_SCHEDULER_ADDRESS:-}"
    )


def test_the_scheduler_port_is_never_published_and_the_dashboard_is_bound_apart(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert not str(port).endswith(":8786"), name
    assert services["dask-scheduler"]["ports"] == [
        "${DASK_DASHBOARD_BIND:-127.0.0.1}:${DASK_DASHBOARD_PORT:-8787}:8787"
    ]
    assert "ports" not in services["dask-worker"]  # so `--scale dask-worker=N` works


def test_the_dashboard_serves_only_read_routes(services: dict[str, Any]) -> None:
    env = services["dask-scheduler"]["environment"]
    expected = dasktls.dashboard_environment([])
    routes, origins = (env[key] for key in expected)
    assert routes == expected["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"]
    assert "*" not in origins and "${DASK_DASHBOARD_PORT:-8787}" in origins


def test_health_checks_and_start_order(services: dict[str, Any]) -> None:
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    assert "8787/health" in " ".join(scheduler["healthcheck"]["test"])
    assert "8788/health" in " ".join(worker["healthcheck"]["test"])
    assert "--dashboard-address=127.0.0.1:8788" in worker["command"]
    assert scheduler["depends_on"]["dask-certs"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    assert "tls://dask-scheduler:8786" in worker["command"]
    assert "--protocol" in scheduler["command"] and "tls" in scheduler["command"]
    for name in DASK_SERVICES:
        assert services[name].get("mem_limit"), name
        assert services[name]["cap_drop"] == ["ALL"], name


def test_dask_workers_get_what_their_tasks_read_and_no_mlflow_account(
    services: dict[str, Any],
) -> None:
    prefect_worker, dask_worker = services["worker"], services["dask-worker"]
    assert dask_worker["image"] == prefect_worker["image"]
    shared = {
        "worker-cache:/home/app/.local/share/nyctaxi",
        "${TAXI_DATA_HOST_DIR:-./data/tlc}:/data/tlc:ro",
    }
    assert shared <= set(prefect_worker["volumes"]) & set(dask_worker["volumes"])
    for key in (
        "PREFECT_API_URL",
        "PREFECT_API_AUTH_STRING",
        "TAXI_DATA_DIR",
        "TLC_ALLOW_DOWNLOAD",
        "PREFECT_LOCAL_STORAGE_PATH",
        "OMP_WAIT_POLICY",
    ):
        assert dask_worker["environment"][key] == prefect_worker["environment"][key], key
    # Each account only its job: MLflow is the flow run's business, the prediction log too.
    assert not {k for k in dask_worker["environment"] if k.startswith("MLFLOW_")}
    assert not any("prediction-log" in volume for volume in dask_worker["volumes"])
