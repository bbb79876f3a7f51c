"""`make run`'s Dask cluster: none by default, DASK_LOCAL_WORKERS=N starts one under the
supervisor with mutual TLS, a scheduler of the user's own is passed through untouched."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest

from nyctaxi import dasktls
from stack.run import (
    banner,
    busy_ports,
    dask_processes,
    supervisor_command,
)
from stack.settings import LocalStackSettings
from stack.supervisor import process_specs, with_extra_processes
from tests.unit.stack.test_run import APP, env_for, settings


def command_of(stack: LocalStackSettings) -> list[str]:
    return supervisor_command(
        stack, python="/venv/bin/python", procfile=APP / "Procfile", processes=[]
    )


def test_by_default_there_is_no_cluster_and_no_dask_setting(tmp_path: Path) -> None:
    stack = settings(nyctaxi_home=tmp_path)
    env = env_for(stack)
    assert not any(key.startswith("DASK_") for key in env)
    assert dask_processes(stack) == {}
    assert "--process" not in command_of(stack)
    assert "Dask        none" in banner(stack, env, tmp_path / "credentials.env")


def test_local_workers_start_a_tls_scheduler_and_that_many_workers(tmp_path: Path) -> None:
    stack = settings(
        nyctaxi_home=tmp_path,
        dask_local_workers=3,
        dask_scheduler_port=18786,
        dask_dashboard_port=18787,
        dask_worker_nthreads=2,
        dask_worker_memory_limit="1GiB",
    )
    command = command_of(stack)
    extra = [command[i + 1] for i, arg in enumerate(command) if arg == "--process"]
    concurrency = [command[i + 1] for i, arg in enumerate(command) if arg == "--concurrency"]
    assert concurrency == ["worker=1", "dask-worker=3"]
    procfile = with_extra_processes({"worker": "prefect worker start"}, extra)
    specs = process_specs(procfile, concurrency={"dask-worker": 3})
    assert [spec.name for spec in specs] == [
        "worker",
        "dask-scheduler",
        "dask-worker.1",
        "dask-worker.2",
        "dask-worker.3",
    ]
    scheduler = shlex.split(procfile["dask-scheduler"])
    tls = tmp_path / "dask-tls"
    assert f"DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY={tls}/key.pem" in scheduler
    assert "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True" in scheduler
    assert scheduler[scheduler.index("--host") + 1] == "tls://127.0.0.1"
    assert scheduler[scheduler.index("--dashboard-address") + 1] == "127.0.0.1:18787"
    worker = shlex.split(procfile["dask-worker"])
    assert "tls://127.0.0.1:18786" in worker
    assert f"DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT={tls}/cert.pem" in worker
    assert worker[worker.index("--nthreads") + 1] == "2"
    assert worker[worker.index("--memory-limit") + 1] == "1GiB"
    assert worker[worker.index("--local-directory") + 1] == str(tmp_path / "dask-scratch")


def test_the_prefect_workers_get_the_address_and_the_client_key(tmp_path: Path) -> None:
    stack = settings(nyctaxi_home=tmp_path, dask_local_workers=1)
    # What the user had for some other cluster does not mix with the local cluster's key.
    environ = {"PATH": "/usr/bin", "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": "/elsewhere/ca.pem"}
    env = env_for(stack, environ)
    assert env["DASK_SCHEDULER_ADDRESS"] == "tls://127.0.0.1:8786"
    expected = dasktls.tls_environment(tmp_path / "dask-tls", "client")
    assert {key: env[key] for key in expected} == expected
    text = banner(stack, env, tmp_path / "credentials.env")
    assert "http://127.0.0.1:8787/status" in text and "no login" in text


def test_a_scheduler_of_the_users_own_is_passed_through_and_none_started(tmp_path: Path) -> None:
    environ = {"PATH": "/usr/bin", "DASK_SCHEDULER_ADDRESS": "tls://cluster.example:8786"}
    environ["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] = "/mine/ca.pem"
    stack = settings(
        nyctaxi_home=tmp_path,
        dask_local_workers=2,
        dask_scheduler_address=environ["DASK_SCHEDULER_ADDRESS"],
    )
    env = env_for(stack, environ)
    assert env["DASK_SCHEDULER_ADDRESS"] == "tls://cluster.example:8786"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == "/mine/ca.pem"
    assert dask_processes(stack) == {}
    assert "your scheduler tls://cluster.example:8786" in banner(stack, env, tmp_path / "c.env")
    plain = settings(nyctaxi_home=tmp_path, dask_scheduler_address="tcp://10.0.0.5:8786")
    assert "not tls://" in banner(plain, env_for(plain), tmp_path / "c.env")


def test_the_dashboard_may_be_bound_elsewhere_and_its_origins_follow(tmp_path: Path) -> None:
    stack = settings(nyctaxi_home=tmp_path, dask_local_workers=1, dask_dashboard_bind="0.0.0.0")
    scheduler = shlex.split(dask_processes(stack)["dask-scheduler"])
    assert scheduler[scheduler.index("--dashboard-address") + 1] == "0.0.0.0:8787"
    key = "DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__BOKEH_APPLICATION__ALLOW_WEBSOCKET_ORIGIN"
    origins = next(arg for arg in scheduler if arg.startswith(key)).partition("=")[2]
    assert "'localhost:8787'" in origins and "0.0.0.0" not in origins and "*" not in origins


def test_busy_dask_ports_are_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Port 0 always binds: only the taken port can be reported.
        free = {"prefect_port": 0, "mlflow_port": 0, "predict_port": 0, "dask_dashboard_port": 0}
        off = settings(nyctaxi_home=tmp_path, dask_scheduler_port=port, **free)
        assert busy_ports(off, []) == []  # no cluster: its port is not ours to check
        on = settings(nyctaxi_home=tmp_path, dask_local_workers=1, dask_scheduler_port=port, **free)
        assert busy_ports(on, []) == [f"dask-scheduler:{port}"]


def test_an_extra_process_may_not_replace_a_procfile_one() -> None:
    with pytest.raises(ValueError, match="worker"):
        with_extra_processes({"worker": "a"}, ["worker: b"])
    assert with_extra_processes({"a": "x"}, []) == {"a": "x"}
