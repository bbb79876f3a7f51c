"""One-shot, idempotent bootstrap of a running stack: `python -m services.bootstrap`.

In order: wait (bounded) for the Prefect API; create the process work pool; register the
deployments of prefect.yaml that this stack can run (`prefect --no-prompt deploy --name ...`, in
the background, skipped when nothing changed since the last registration; without an S3 endpoint
the ones tagged `s3` are left out, and removed if an earlier bootstrap registered them); with an
S3 endpoint, create the buckets and the AwsCredentials / S3Bucket blocks; create the crash
detection automation (runs whose heartbeats stop are marked Crashed) and create (or remove,
when NOTIFY_WEBHOOK_URL is unset) the notification automations; wait (bounded) for MLflow; when
MLflow runs with authentication (MLFLOW_ADMIN_PASSWORD set), ensure its trainer and predictor
accounts, the experiment, the registered model and their grants; once the deployments are
registered, create the automation that answers `nyctaxi.model.degraded` with a run of the
training deployment (removed with RETRAIN_ON_DEGRADED=false); on the native stack, mark
runs whose process died with the stack Crashed; in both stacks, mark Running runs that missed
FLOW_RUN_MISSED_HEARTBEATS heartbeats Crashed; with an S3 endpoint, seed the raw-data bucket
through the ingest flow; start the first training run unless a champion exists or a training
run is already on its way.

Every step checks before it acts, so re-running it changes nothing that is already right.
Concurrent bootstraps of one Prefect API on one machine are serialised by a lock file.
Exit status 0 on success, 1 with the reason in the log otherwise. With --stay-up it idles after
success, for process managers that stop everything when one process exits (honcho); the native
stack's own supervisor (stack/supervisor.py) knows it is a one-shot and needs no such flag.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from services.bootstrap import (
    automations,
    blocks,
    deployments,
    first_run,
    mlflow_accounts,
    retraining,
)
from services.bootstrap.settings import BootstrapSettings
from services.bootstrap.waiting import ServiceNotReady, http_probe, mlflow_health_url, wait_until

logger = logging.getLogger("services.bootstrap")


class BootstrapError(RuntimeError):
    """The stack cannot be bootstrapped; the message says what to fix."""


def prefect_api_url(settings: BootstrapSettings) -> str:
    url = settings.prefect_api_url or PREFECT_API_URL.value()
    if not url:
        raise BootstrapError(
            "PREFECT_API_URL is not set: the bootstrap configures a running Prefect server "
            "(e.g. http://127.0.0.1:4200/api) or Prefect Cloud workspace"
        )
    return url


def prefect_probe() -> str | None:
    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    return None if error is None else f"{type(error).__name__}: {error}"


def wait_for_prefect(settings: BootstrapSettings) -> None:
    what = f"Prefect API {prefect_api_url(settings)}"
    wait_until(prefect_probe, what=what, timeout=settings.bootstrap_timeout_seconds)


def wait_for_mlflow(settings: BootstrapSettings) -> None:
    health = mlflow_health_url(settings.mlflow_tracking_uri)
    if health is not None:
        what = f"MLflow {settings.mlflow_tracking_uri}"
        wait_until(http_probe(health), what=what, timeout=settings.bootstrap_timeout_seconds)


@contextlib.contextmanager
def bootstrap_lock(api_url: str, timeout: float) -> Iterator[None]:
    """Serialise bootstraps of the same Prefect API on this machine (the lock lives in the
    temp folder, writable in any container)."""
    name = hashlib.sha256(api_url.encode()).hexdigest()[:16]
    with (Path(tempfile.gettempdir()) / f"nyctaxi-bootstrap-{name}.lock").open("w") as handle:

        def probe() -> str | None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "another bootstrap holds the lock"
            return None

        wait_until(probe, what="bootstrap lock", timeout=timeout)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def seed_raw_bucket(months: list[str]) -> None:
    """Land the months in the raw-data bucket through the ingest flow (skips keys present)."""
    from flows.ingest import ingest_flow  # the flow package is only needed for this step

    for ingested in ingest_flow(months=months, require_bucket=True):
        logger.info(
            "seeded %s from %s -> %s", ingested.month, ingested.found_in, ingested.bucket_key
        )


def bootstrap(settings: BootstrapSettings) -> None:
    wait_for_prefect(settings)
    with get_client(sync_client=True) as client, contextlib.ExitStack() as stack:
        deployments.ensure_work_pool(client)
        finish_deploy = None
        if settings.bootstrap_deploy:
            finish_deploy = start_deploy(client, settings, stack)
        if settings.s3_enabled:
            blocks.ensure_buckets(settings, [settings.raw_bucket, settings.mlflow_artifacts_bucket])
            blocks.save_storage_blocks(settings)
        configure_crash_detection(client, settings)
        configure_notifications(client, settings)
        wait_for_mlflow(settings)
        mlflow_accounts.configure(settings)
        if finish_deploy is not None:
            finish_deploy()
        configure_retraining(client, settings)  # needs the training deployment's id
        if not settings.bootstrap_train:
            logger.info("BOOTSTRAP_TRAIN=false: no first training run")
            return
        if settings.bootstrap_crash_orphaned_runs:
            first_run.crash_orphaned_runs(client)
        # A run that stopped beating is no run "on its way": it must not stop the first training.
        automations.crash_silent_runs(
            client, settings.flow_run_heartbeat_seconds, settings.flow_run_missed_heartbeats
        )
        deployment = settings.first_run_deployment
        if settings.s3_enabled:
            seed_raw_bucket(deployments.deployment_months(client, deployment, date.today()))
        first_run.maybe_start_first_run(
            client, settings.mlflow_tracking_uri, settings.model_name, deployment
        )


def start_deploy(
    client: SyncPrefectClient, settings: BootstrapSettings, stack: contextlib.ExitStack
) -> Callable[[], None] | None:
    """Register the deployments this stack can run (without an S3 store, none tagged `s3`)
    unless nothing changed; return what waits for `prefect deploy`.

    The command is slow to start (it imports the flows), so it runs while the bootstrap carries on.
    """
    prefect_file = settings.prefect_file.resolve()
    declared = deployments.declared_deployments(prefect_file)
    names = deployments.runnable_deployments(declared, s3_enabled=settings.s3_enabled)
    digest = deployments.sources_digest(prefect_file, names)
    if not settings.bootstrap_redeploy and deployments.deployments_current(
        client, digest, settings.first_run_deployment
    ):
        logger.info("deployments up to date (prefect.yaml and flows/ unchanged since registered)")
        return None
    deployments.remove_unrunnable(client, [d["name"] for d in declared], names)
    finish = stack.enter_context(
        deployments.deploying(prefect_file, names, api_url=prefect_api_url(settings))
    )

    def finish_and_record() -> None:
        finish()
        deployments.record_deployed(digest)

    return finish_and_record


def configure_crash_detection(client: SyncPrefectClient, settings: BootstrapSettings) -> None:
    """The automation marking runs Crashed when their heartbeats stop (with or without a
    webhook: a dead run must not stay Running)."""
    spec = automations.crash_detection_automation(
        settings.flow_run_heartbeat_seconds, settings.flow_run_missed_heartbeats
    )
    automations.apply_automations(client, [spec])


def configure_notifications(client: SyncPrefectClient, settings: BootstrapSettings) -> None:
    """Automations calling NOTIFY_WEBHOOK_URL; removed when it is unset (notifications off)."""
    if settings.notify_webhook_url is None:
        logger.info("NOTIFY_WEBHOOK_URL unset: notifications off")
        automations.remove_automations(client)
        return
    block_id = blocks.save_webhook_block(settings.notify_webhook_url.get_secret_value())
    specs = automations.notification_automations(block_id, settings.promoted_resource_id)
    automations.apply_automations(client, specs)


def configure_retraining(client: SyncPrefectClient, settings: BootstrapSettings) -> None:
    """The automation running the training deployment when the champion is degraded (with or
    without a webhook: it closes the loop, it notifies nobody); removed when switched off or
    when the deployment is not registered (it would point at nothing)."""
    name = settings.first_run_deployment
    if not settings.retrain_on_degraded:
        logger.info("RETRAIN_ON_DEGRADED=false: a degraded model is reported, not retrained")
        automations.remove_automations(client, (retraining.RETRAIN_ON_DEGRADED,))
        return
    try:
        deployment = client.read_deployment_by_name(name)
    except ObjectNotFound:
        logger.warning("deployment %s is not registered: no retraining on a degraded model", name)
        automations.remove_automations(client, (retraining.RETRAIN_ON_DEGRADED,))
        return
    spec = retraining.retrain_on_degraded_automation(deployment.id, settings.promoted_resource_id)
    automations.apply_automations(client, [spec])


def stay_up() -> None:
    """Idle until honcho stops the stack: a Procfile process that exits stops all the others."""
    logger.info("bootstrap done; idling until the stack stops")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


def configure_logging() -> None:
    """Our own handler on our loggers: Prefect's logging setup resets the root logger."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("nyctaxi", "services"):
        package_logger = logging.getLogger(name)
        package_logger.addHandler(handler)
        package_logger.setLevel(logging.INFO)
        package_logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bootstrap a running stack (idempotent).")
    parser.add_argument(
        "--stay-up",
        action="store_true",
        help="after success, idle until stopped (for process managers such as honcho)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = BootstrapSettings()
        with bootstrap_lock(prefect_api_url(settings), settings.bootstrap_timeout_seconds):
            bootstrap(settings)
    except (
        BootstrapError,
        ServiceNotReady,
        deployments.DeployError,
        mlflow_accounts.MlflowAccountsError,
    ) as error:
        logger.error("bootstrap failed: %s", error)
        return 1
    except Exception:
        logger.exception("bootstrap failed")
        return 1
    if args.stay_up:
        stay_up()
    else:
        logger.info("bootstrap done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
