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

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.variables import Variable
from prefect.workers.process import ProcessWorker

from nyctaxi.schedule import default_months
from nyctaxi.stack.settings import WORK_POOL

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


@contextlib.contextmanager
def deploying(prefect_file: Path, *, app_dir: Path, api_url: str) -> Iterator[Callable[[], None]]:
    """Start `prefect --no-prompt deploy --all` in the background; yield a function that waits
    for it and raises DeployError with its output if it failed.

    The command upserts by name, so running it again is harmless. NYCTAXI_APP_DIR (the absolute
    folder the deployments' pull step moves into) defaults to the folder holding prefect.yaml.
    """
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "NYCTAXI_APP_DIR": os.environ.get("NYCTAXI_APP_DIR") or str(app_dir),
    }
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    command += ["--prefect-file", str(prefect_file)]
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(
            command, cwd=app_dir, env=env, stdout=output, stderr=subprocess.STDOUT, text=True
        )

        def finish() -> None:
            try:
                returncode = process.wait(timeout=DEPLOY_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                raise DeployError(
                    f"`prefect deploy --all` still running after {DEPLOY_TIMEOUT_SECONDS}s"
                ) from None
            if returncode != 0:
                output.seek(0)
                tail = "\n".join(output.read().strip().splitlines()[-40:])
                raise DeployError(
                    f"`prefect deploy --all` ({prefect_file}) exited {returncode}:\n{tail}"
                )
            logger.info("deployments from %s registered", prefect_file)

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


def sources_digest(prefect_file: Path) -> str:
    """sha256 over prefect.yaml and the flow modules beside it (their signatures are the
    deployments' parameter schemas)."""
    app_dir = prefect_file.parent
    digest = hashlib.sha256()
    for path in [prefect_file, *sorted((app_dir / "flows").glob("*.py"))]:
        digest.update(str(path.relative_to(app_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
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


def months_of(parameters: dict[str, object], today: date) -> list[str]:
    """The (train, validation) months a run with these parameters uses.

    Empty months mean "newest published", as the training flow resolves them.
    """
    default_train, default_val = default_months(today)
    train = parameters.get("train_month") or default_train
    val = parameters.get("val_month") or default_val
    return [str(train), str(val)]


def deployment_months(client: SyncPrefectClient, deployment: str, today: date) -> list[str]:
    return months_of(client.read_deployment_by_name(deployment).parameters, today)
