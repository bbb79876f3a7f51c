"""The Dask cluster's doors, on a real `dask scheduler` and `dask worker` started with the very
commands `make run` gives the supervisor (stack.run.dask_processes) and the TLS files it writes.

With the client's TLS variables (nothing else: no code of ours handles the key) a client runs a
task through nyctaxi.cluster.connect; without them, with another stack's key, over plain TCP or
with a TLS connection that shows no certificate, nothing gets in. The dashboard serves its pages
and /health, but no route that changes the cluster, and no live plot to another site's page.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nyctaxi import dasktls
from stack.run import DASK_SCHEDULER, DASK_WORKER, dask_processes, dask_scheduler_address
from stack.settings import LocalStackSettings
from tests.servers import free_port, http_ok, running_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CLIENT = textwrap.dedent(
    """
    import operator, sys
    from nyctaxi.cluster import connect, worker_count
    with connect(sys.argv[1]) as client:
        print("result", client.submit(operator.add, 40, 2).result(), worker_count(client))
    """
)

# What anyone else would run: Dask's own client, without our up-front key check.
RAW_CLIENT = textwrap.dedent(
    """
    import operator, sys
    from distributed import Client
    with Client(sys.argv[1], timeout=3) as client:
        print("result", client.submit(operator.add, 40, 2).result())
    """
)


@dataclass(frozen=True)
class Cluster:
    address: str
    port: int
    dashboard_port: int
    tls_dir: Path
    log_dir: Path


def without_dask_settings(connect_timeout: str = "20s") -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    # Dask retries a refused connection until this runs out: the refusals wait less.
    return env | {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": connect_timeout}


def run_client(
    address: str, env: dict[str, str], script: str = CLIENT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("dask-home")
    settings = LocalStackSettings(
        _env_file=None,
        nyctaxi_home=home,
        dask_local_workers=1,
        dask_scheduler_port=free_port(),
        dask_dashboard_port=free_port(),
        dask_worker_memory_limit="1GiB",
    )
    dasktls.ensure_tls_files(settings.dask_tls_dir)
    commands = dask_processes(settings)
    env = without_dask_settings()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    logs = home / "logs"
    health = f"http://127.0.0.1:{settings.dask_dashboard_port}/health"
    # As the supervisor runs them: `bash -c` the command line, in a process group of its own.
    with running_process(
        ["bash", "-c", commands[DASK_SCHEDULER]], log_file=logs / "scheduler.log", env=env
    ):
        wait_until(lambda: http_ok(health), timeout=60, what="dask scheduler")
        with running_process(
            ["bash", "-c", commands[DASK_WORKER]], log_file=logs / "worker.log", env=env
        ):
            yield Cluster(
                dask_scheduler_address(settings),
                settings.dask_scheduler_port,
                settings.dask_dashboard_port,
                settings.dask_tls_dir,
                logs,
            )


def test_a_client_with_the_key_in_dasks_variables_runs_a_task(cluster: Cluster) -> None:
    env = without_dask_settings() | dasktls.tls_environment(cluster.tls_dir, "client")
    done = run_client(cluster.address, env)
    log = (cluster.log_dir / "worker.log").read_text()
    assert done.returncode == 0, done.stderr[-2000:] + log[-2000:]
    assert done.stdout.split() == ["result", "42", "1"]
    assert "Registered to:      tls://" in log


def test_a_client_without_the_key_is_refused(cluster: Cluster) -> None:
    raw = run_client(cluster.address, without_dask_settings("3s"), RAW_CLIENT)
    assert raw.returncode != 0
    assert "check your TLS configuration" in raw.stderr and "result" not in raw.stdout
    reason = next(line for line in raw.stderr.splitlines() if "TLS configuration" in line)
    print(f"[dask-tls] without the key: {reason}")
    # Ours says so at once, naming what to set, instead of Dask's TypeError after its timeout.
    ours = run_client(cluster.address, without_dask_settings("3s"))
    assert ours.returncode != 0 and "result" not in ours.stdout
    assert "asks for the cluster's key and this process has none" in ours.stderr


def test_another_stacks_key_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    dasktls.ensure_tls_files(tmp_path / "other")
    env = without_dask_settings() | dasktls.tls_environment(tmp_path / "other", "client")
    done = run_client(cluster.address, env)
    assert done.returncode != 0
    assert "TLS certificate does not match" in done.stderr
    assert "result" not in done.stdout
    print(f"[dask-tls] another stack's key: {done.stderr.strip().splitlines()[-1]}")


def test_plain_tcp_is_refused(cluster: Cluster) -> None:
    env = without_dask_settings("3s") | dasktls.tls_environment(cluster.tls_dir, "client")
    done = run_client(f"tcp://127.0.0.1:{cluster.port}", env)
    assert done.returncode != 0 and "result" not in done.stdout
    print(f"[dask-tls] tcp://: {done.stderr.strip().splitlines()[-1]}")
    # And to the raw port, bytes in clear get nothing back.
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as raw:
        raw.sendall(b"\x00" * 64)
        try:
            answer = raw.recv(64)
        except ConnectionResetError:
            answer = b""
    assert answer == b""


def test_the_scheduler_demands_a_client_certificate(cluster: Cluster) -> None:
    # Trusts the cluster's CA but shows no certificate: the server ends the connection (TLS 1.3
    # reports it after the handshake, at the first read) and never speaks Dask's protocol.
    context = ssl.create_default_context(cafile=str(cluster.tls_dir / "ca.pem"))
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        assert tls.version() == "TLSv1.3"
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            tls.recv(64)


def status_of(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            method, path, body=b"{}" if method == "POST" else None, headers=headers or {}
        )
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_dashboard_only_reads(cluster: Cluster) -> None:
    port = cluster.dashboard_port
    assert status_of(port, "GET", "/health") == 200
    assert status_of(port, "GET", "/status") == 200
    assert status_of(port, "GET", "/info/main/workers.html") == 200
    # Dask's `api` route (POST retire_workers stops workers) and the proxy are not served.
    assert status_of(port, "POST", "/api/v1/retire_workers") == 404
    assert status_of(port, "GET", "/api/v1/get_workers") == 404
    assert status_of(port, "GET", "/proxy/8788/127.0.0.1/health") == 404
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    # Live plots: refused to a page of another site, served to the dashboard's own origin.
    assert status_of(port, "GET", "/status/ws", upgrade | {"Origin": "http://evil.example"}) == 403
    own = upgrade | {"Origin": f"http://127.0.0.1:{port}"}
    assert status_of(port, "GET", "/status/ws", own) != 403
