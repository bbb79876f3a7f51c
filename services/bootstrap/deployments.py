"""Work pool, deployments (from prefect.yaml) and the months the first run needs."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.variables import Variable
from prefect.workers.process import ProcessWorker

from nyctaxi.months import month_range
from nyctaxi.names import S3_TAG, WORK_POOL
from nyctaxi.schedule import resolve_window

logger = logging.getLogger(__name__)

DEPLOY_TIMEOUT_SECONDS = 300


class DeployError(RuntimeError):
    """`prefect deploy --all` failed; the message carries its output."""


def ensure_work_pool(client: SyncPrefectClient, name: str = WORK_POOL) -> None:
    """Create the process work pool unless it exists (a worker may have created it first)."""
    try:
        client.read_work_pool(name)
        logger.info("work pool %s exists", name)
        return
    except ObjectNotFound:
        pass
    try:
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(
            WorkPoolCreate(name=name, type="process", base_job_template=template)
        )
        logger.info("created work pool %s", name)
    except ObjectAlreadyExists:
        logger.info("work pool %s was created concurrently", name)


def declared_deployments(prefect_file: Path) -> list[dict[str, Any]]:
    """The `deployments:` entries of prefect.yaml."""
    return list(yaml.safe_load(prefect_file.read_text())["deployments"])


def runnable_deployments(declared: list[dict[str, Any]], *, s3_enabled: bool) -> list[str]:
    """Names of the deployments this stack can run: all of them with an S3 store, else those
    without the `s3` tag."""
    return [d["name"] for d in declared if s3_enabled or S3_TAG not in d.get("tags", [])]


def app_dir_for(prefect_file: Path) -> str:
    """The folder the deployments' pull step moves into: NYCTAXI_APP_DIR, else prefect.yaml's."""
    return os.environ.get("NYCTAXI_APP_DIR") or str(prefect_file.parent)


@contextlib.contextmanager
def deploying(
    prefect_file: Path, names: list[str], *, api_url: str
) -> Iterator[Callable[[], None]]:
    """Start `prefect --no-prompt deploy --name ...` in the background; yield a function that
    waits for it and raises DeployError with its output if it failed.

    The command upserts by name, so running it again is harmless.
    """
    env = {**os.environ, "PREFECT_API_URL": api_url, "NYCTAXI_APP_DIR": app_dir_for(prefect_file)}
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
    for name in names:
        command += ["--name", name]
    command += ["--prefect-file", str(prefect_file)]
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(
            command,
            cwd=prefect_file.parent,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def finish() -> None:
            try:
                returncode = process.wait(timeout=DEPLOY_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                raise DeployError(
                    f"`prefect deploy` still running after {DEPLOY_TIMEOUT_SECONDS}s"
                ) from None
            if returncode != 0:
                output.seek(0)
                tail = "\n".join(output.read().strip().splitlines()[-40:])
                raise DeployError(f"`prefect deploy` ({prefect_file}) exited {returncode}:\n{tail}")
            logger.info("deployments %s from %s registered", ", ".join(names), prefect_file)

        try:
            yield finish
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


# The digest of what the deployments are made from, kept on the Prefect server itself: a restart
# with unchanged sources skips `prefect deploy` (slow, and it would also undo a schedule switched
# on in the UI); a wiped server has no digest, so it gets the deployments again.
DEPLOYED_DIGEST_VARIABLE = "nyctaxi_deployed_sources_sha256"


def sources_digest(prefect_file: Path, names: list[str]) -> str:
    """sha256 over everything the registered deployments are made of: prefect.yaml, the flow
    modules beside it (their signatures are the parameter schemas), which deployments are
    registered and the folder their pull step moves into (a moved checkout must re-register)."""
    app_dir = prefect_file.parent
    digest = hashlib.sha256()
    for path in [prefect_file, *sorted((app_dir / "flows").glob("*.py"))]:
        digest.update(str(path.relative_to(app_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(",".join(sorted(names)).encode() + b"\0")
    digest.update(app_dir_for(prefect_file).encode() + b"\0")
    return digest.hexdigest()


def deployments_current(client: SyncPrefectClient, digest: str, deployment: str) -> bool:
    """True when the recorded digest matches and the first-run deployment exists."""
    if Variable.get(DEPLOYED_DIGEST_VARIABLE, default=None) != digest:
        return False
    try:
        client.read_deployment_by_name(deployment)
    except ObjectNotFound:
        return False
    return True


def record_deployed(digest: str) -> None:
    Variable.set(DEPLOYED_DIGEST_VARIABLE, digest, overwrite=True)


def registered_names(client: SyncPrefectClient) -> set[str]:
    """'flow/deployment' names of every deployment on the server."""
    return {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}


def remove_unrunnable(client: SyncPrefectClient, declared: list[str], runnable: list[str]) -> None:
    """Delete our deployments this stack can't run (registered when it had an S3 store): a
    deployment in the UI that fails on every run is worse than none."""
    stale = sorted(set(declared) - set(runnable))
    if not stale:
        return
    found = client.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=stale)),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL])),
    )
    for deployment in found:
        client.delete_deployment(deployment.id)
        logger.info(
            "removed deployment %s: it needs an S3 store (S3_ENDPOINT_URL)", deployment.name
        )


def months_of(parameters: dict[str, object], today: date) -> list[str]:
    """The training months then the validation month a run with these parameters uses,
    resolved as the training flow resolves them (empty months mean "newest published")."""

    def given(name: str) -> str | None:
        value = parameters.get(name)
        return str(value) if value else None

    first, last, val = resolve_window(
        given("train_month"), given("train_from"), given("train_to"), given("val_month"), today
    )
    return [*(str(month) for month in month_range(first, last)), val]


def deployment_months(client: SyncPrefectClient, deployment: str, today: date) -> list[str]:
    return months_of(client.read_deployment_by_name(deployment).parameters, today)
