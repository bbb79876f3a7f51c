"""gunicorn configuration of the prediction service (settings from PredictSettings).

    gunicorn --config services/predict/gunicorn_conf.py "services.predict.app:create_app()"

The app is not preloaded: each worker imports it after the fork, so each worker loads its own
model and runs its own registry poller thread (threads do not survive a fork). Variables that
libraries read when they are imported (OpenMP, prometheus_client) are set here, in the master,
before any worker imports them.

The service writes only to the temp dir (TMPDIR, else /tmp: the metrics folder below, each
model while it loads), /dev/shm (worker heartbeats; the temp dir when there is no /dev/shm), the
model cache (PREDICT_MODEL_CACHE_DIR: the versions served, with their checksums; a volume in
Docker) and the prediction log (PREDICTION_LOG_DIR; a volume in Docker), so it runs on a
read-only root filesystem with a tmpfs on /tmp. Without a writable cache folder it still serves,
but a worker started while MLflow is down has nothing to serve; without a writable log folder it
serves and logs nothing. A worker that stops gracefully writes its queued log first
(`worker_exit` below).

A worker blocks in `create_app()` until it has tried to load a model (at most
PREDICT_STARTUP_WAIT_SECONDS, kept below `timeout` so gunicorn never kills a starting worker):
a worker respawned under load takes requests once it can answer them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from services.predict.redact import install_log_redaction
from services.predict.settings import PredictSettings

_settings = PredictSettings()

# One OpenMP thread per worker: the workers are the parallelism. With XGBoost's default, every
# worker spins a thread per core per request and throughput collapses (ENVIRONMENT.md).
os.environ["OMP_NUM_THREADS"] = str(_settings.model_threads)

# Metrics of all workers are aggregated from files in this folder (prometheus_client
# multiprocess mode). A folder we create is ours to delete at exit.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="predict-metrics-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def _worker_tmp_dir() -> str:
    """Where workers keep their heartbeat file: in memory when possible (gunicorn warns that a
    disk-backed folder can block workers), never under the (maybe read-only) working folder.
    gunicorn's own --worker-tmp-dir (or GUNICORN_CMD_ARGS) overrides it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return str(shm)
    return tempfile.gettempdir()


bind = f"{_settings.host}:{_settings.port}"
worker_tmp_dir = _worker_tmp_dir()
workers = _settings.workers
worker_class = _settings.worker_class
threads = _settings.threads
preload_app = False
timeout = 60
graceful_timeout = 20
keepalive = 5
# No access log by default: gunicorn builds each line even when nothing would print it.
accesslog = None
errorlog = "-"
loglevel = "info"
# Several services may run on one machine (tests, benchmarks): no shared control socket path.
control_socket_disable = True


def post_fork(server, worker) -> None:  # noqa: ANN001 - gunicorn's Arbiter and Worker
    # The app's own loggers (model loads and swaps) go to stderr beside gunicorn's.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    # Library warnings (MLflow's may quote the tracking URI) then go through the redaction too.
    logging.captureWarnings(True)
    install_log_redaction()


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    install_log_redaction()  # the master's log lines too (the workers inherit it by the fork)
    # Files left by a previous run would be summed into this run's metrics.
    os.makedirs(_metrics_dir, exist_ok=True)
    for name in os.listdir(_metrics_dir):
        os.remove(os.path.join(_metrics_dir, name))


def worker_exit(server, worker) -> None:  # noqa: ANN001
    # In the worker, whatever ended it (SIGTERM, SIGQUIT, a timeout): the rides still queued
    # for the prediction log are written before the process goes. Not imported: nothing to do.
    prediction_log = sys.modules.get("services.predict.prediction_log")
    if prediction_log is not None:
        prediction_log.close_all()


def child_exit(server, worker) -> None:  # noqa: ANN001
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)


def on_exit(server) -> None:  # noqa: ANN001
    if _OWN_METRICS_DIR:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
