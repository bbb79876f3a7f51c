"""The gunicorn configuration: loopback unless told otherwise, and nothing written outside the
temp dir and /dev/shm (the container runs on a read-only root filesystem)."""

from __future__ import annotations

import os
import runpy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

LoadConf = Callable[..., dict[str, Any]]
CONF = Path(__file__).parents[4] / "services" / "predict" / "gunicorn_conf.py"


@pytest.fixture
def load_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LoadConf:
    """The config module's settings as gunicorn reads them, under a controlled environment."""
    for name in ("PREDICT_HOST", "PREDICT_PORT"):
        monkeypatch.delenv(name, raising=False)
    # Set here so that the module's own assignments are undone after the test.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def load(**env: str) -> dict[str, Any]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(str(CONF))

    return load


def test_binds_loopback_by_default(load_conf: LoadConf) -> None:
    assert load_conf()["bind"] == "127.0.0.1:9696"


def test_predict_host_opens_it_up(load_conf: LoadConf) -> None:
    assert load_conf(PREDICT_HOST="0.0.0.0", PREDICT_PORT="8000")["bind"] == "0.0.0.0:8000"


def test_worker_heartbeat_files_go_to_memory_or_the_temp_dir(load_conf: LoadConf) -> None:
    folder = load_conf()["worker_tmp_dir"]
    assert folder in {"/dev/shm", tempfile.gettempdir()}
    assert os.access(folder, os.W_OK)


def test_the_metrics_folder_is_made_in_the_temp_dir(
    load_conf: LoadConf,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what TMPDIR would choose
    conf = load_conf()
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.parent == tmp_path and made.is_dir()
    conf["on_exit"](None)
    assert not made.exists()
