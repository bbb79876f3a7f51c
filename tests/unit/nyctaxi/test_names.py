"""The files that cannot import nyctaxi.names (YAML, the Procfile, .env.example) spell its names
the same way, and the flows are named as the bootstrap and the automations expect."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from nyctaxi import names

ROOT = Path(__file__).resolve().parents[3]
# Compose variables whose default is a shared name.
COMPOSE_DEFAULTS = {
    "RAW_BUCKET": names.RAW_BUCKET,
    "MLFLOW_ARTIFACTS_BUCKET": names.MLFLOW_ARTIFACTS_BUCKET,
    "MODEL_NAME": names.MODEL_NAME,
    "MODEL_ALIAS": names.CHAMPION_ALIAS,
    "MLFLOW_ADMIN_USERNAME": names.MLFLOW_ADMIN_USER,
}


def prefect_deployments() -> dict[str, dict]:
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    return {deployment["name"]: deployment for deployment in declared}


def flow_name(entrypoint: str) -> str:
    """The `name=` of the @flow decorating an entrypoint `package.module:function`, read from
    source: a literal, or an attribute of nyctaxi.names."""
    module, function = entrypoint.split(":")
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "flow":
                    for keyword in decorator.keywords:
                        if keyword.arg == "name":
                            return _value(keyword.value)
    raise AssertionError(f"no @flow(name=...) on {entrypoint}")


def _value(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "names":
        return str(getattr(names, node.attr))
    raise AssertionError(f"flow name is neither a literal nor names.X: {ast.dump(node)}")


def test_prefect_yaml_declares_the_named_deployments_of_the_named_flows() -> None:
    deployments = prefect_deployments()
    for name, deployment in deployments.items():
        # Module paths, not file paths: a file entrypoint loads as a script module (`flow`) the
        # Dask workers cannot import, so its tasks and context could not be sent to them.
        assert ".py:" not in deployment["entrypoint"], name
    assert set(deployments) == set(names.DEPLOYMENTS)
    for name, deployment in deployments.items():
        assert deployment["work_pool"]["name"] == names.WORK_POOL, name
        assert flow_name(deployment["entrypoint"]) == names.DEPLOYMENTS[name], name


def test_the_deployments_that_read_the_bucket_carry_the_s3_tag() -> None:
    deployments = prefect_deployments()
    assert names.S3_TAG in deployments[names.TRAIN_S3_DEPLOYMENT]["tags"]
    assert names.S3_TAG in deployments[names.INGEST_DEPLOYMENT]["tags"]
    assert names.S3_TAG not in deployments[names.TRAIN_LOCAL_DEPLOYMENT]["tags"]


def test_compose_and_procfile_workers_poll_the_named_pool() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["worker"]["command"]
    assert command[command.index("--pool") + 1] == names.WORK_POOL
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line
    )
    assert f"--pool {names.WORK_POOL} " in procfile["worker"]


@pytest.mark.parametrize("variable", sorted(COMPOSE_DEFAULTS))
def test_compose_defaults_are_the_shared_names(variable: str) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    defaults = set(re.findall(rf"\$\{{{variable}:-([^}}]*)\}}", text))
    assert defaults == {COMPOSE_DEFAULTS[variable]}


@pytest.mark.parametrize("variable", ["RAW_BUCKET", "MLFLOW_ARTIFACTS_BUCKET", "MODEL_NAME"])
def test_env_example_spells_the_shared_names(variable: str) -> None:
    text = (ROOT / ".env.example").read_text()
    values = re.findall(rf"^#?{variable}=(.*)$", text, flags=re.MULTILINE)
    assert values and set(values) == {COMPOSE_DEFAULTS[variable]}


def test_each_mlflow_client_in_compose_uses_its_named_account() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    users = {
        name: service.get("environment", {}).get("MLFLOW_TRACKING_USERNAME")
        for name, service in compose["services"].items()
    }
    assert users["bootstrap"] == users["worker"] == names.MLFLOW_TRAINER_USER
    assert users["predict"] == names.MLFLOW_PREDICTOR_USER
    makefile = (ROOT / "Makefile").read_text()
    assert f"MLFLOW_TRACKING_USERNAME={names.MLFLOW_PREDICTOR_USER} " in makefile
