"""The native stack's supervisor: Procfile parsing, backoff, and restarts of tiny real commands."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stack.supervisor import (
    Backoff,
    Console,
    ProcessSpec,
    Supervisor,
    parse_concurrency,
    parse_procfile,
    process_specs,
)
from tests.servers import wait_until

ROOT = Path(__file__).resolve().parents[3]
FAST = Backoff(initial=0.05, maximum=0.4, reset_after=5.0)


def test_quick_crashes_double_the_delay_up_to_the_maximum() -> None:
    backoff = Backoff(initial=1, maximum=30, reset_after=60)
    delays, previous = [], None
    for _ in range(7):
        previous = backoff.delay(previous, uptime=2)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 30, 30]


def test_a_process_that_stayed_up_a_while_restarts_at_the_initial_delay() -> None:
    backoff = Backoff(initial=1, maximum=30, reset_after=60)
    assert backoff.delay(16, uptime=59) == 30
    assert backoff.delay(30, uptime=60) == 1


def test_the_projects_procfile_runs_the_bootstrap_once_and_scales_the_workers() -> None:
    procfile = parse_procfile((ROOT / "Procfile").read_text())
    specs = process_specs(procfile, concurrency={"worker": 2}, oneshot=["bootstrap"])
    names = [spec.name for spec in specs]
    assert names == ["prefect", "mlflow", "bootstrap", "worker.1", "worker.2", "predict"]
    assert [spec.name for spec in specs if spec.oneshot] == ["bootstrap"]
    assert "--stay-up" not in procfile["bootstrap"]


def test_procfile_lines_comments_and_errors() -> None:
    text = "# a comment\n\nweb: exec serve --port 80\nworker:python -m work\n"
    assert parse_procfile(text) == {"web": "exec serve --port 80", "worker": "python -m work"}
    with pytest.raises(ValueError, match="line 1"):
        parse_procfile("not a process line\n")


def test_concurrency_and_process_selection() -> None:
    assert parse_concurrency(["worker=2,predict=0", "web=1"]) == {
        "worker": 2,
        "predict": 0,
        "web": 1,
    }
    with pytest.raises(ValueError):
        parse_concurrency(["worker"])
    procfile = {"web": "a", "worker": "b", "predict": "c"}
    specs = process_specs(procfile, only=["worker", "predict"], concurrency={"predict": 0})
    assert [spec.name for spec in specs] == ["worker"]
    with pytest.raises(ValueError, match="nope"):
        process_specs(procfile, only=["nope"])


@contextmanager
def supervising(specs: list[ProcessSpec], tmp_path: Path, grace: float = 5) -> Iterator[dict]:
    """A supervisor running in a thread; yields {"supervisor", "output", "status"}."""
    output = io.StringIO()
    console = Console(output, [spec.name for spec in specs])
    supervisor = Supervisor(
        specs, env=dict(os.environ), cwd=tmp_path, console=console, backoff=FAST, grace=grace
    )
    state: dict = {"supervisor": supervisor, "output": output}
    thread = threading.Thread(target=lambda: state.update(status=supervisor.run()))
    thread.start()
    try:
        yield state
    finally:
        supervisor.request_stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), output.getvalue()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_dying_process_is_restarted_with_backoff_while_the_others_keep_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = [
        ProcessSpec("steady", "echo steady up; exec sleep 60"),
        ProcessSpec("crasher", "echo crash; exit 3"),
        ProcessSpec("setup", "echo set up", oneshot=True),
        ProcessSpec("flaky", "test -e flaky-ok || { touch flaky-ok; exit 1; }", oneshot=True),
    ]
    with supervising(specs, tmp_path) as state:
        steady, crasher, setup, flaky = state["supervisor"].units
        wait_until(lambda: steady.process is not None, timeout=10, what="steady started")
        steady_pid = steady.process.pid
        wait_until(lambda: crasher.starts >= 4, timeout=20, what="four starts of the crasher")
        wait_until(lambda: flaky.done, timeout=10, what="flaky one-shot succeeded on retry")
        assert crasher.delay is not None and crasher.delay >= 0.2  # doubled: 0.05, 0.1, 0.2
        assert steady.process is not None and steady.process.pid == steady_pid
        assert steady.failures == 0
        assert (setup.starts, setup.done) == (1, True)  # exit 0: not restarted
        assert flaky.starts == 2
    assert state["status"] == 1  # the crasher failed
    lines = state["output"].getvalue().splitlines()
    assert any(line.split()[1:] == ["steady", "|", "steady", "up"] for line in lines), lines
    assert "crasher exited (exit 3)" in caplog.text
    assert not alive(steady_pid)


def test_a_dead_process_leaves_nothing_behind_not_even_in_another_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Like a Prefect worker: the child runs in a session of its own, then the parent dies.
    spawn = (
        "import subprocess, sys, pathlib; "
        "p = subprocess.Popen(['sleep', '60'], start_new_session=True); "
        "pathlib.Path('orphan.pid').write_text(str(p.pid))"
    )
    command = f'test -e orphan.pid && exec sleep 60; {sys.executable} -c "{spawn}"; exit 1'
    with supervising([ProcessSpec("worker", command)], tmp_path) as state:
        [worker] = state["supervisor"].units
        wait_until(lambda: worker.starts >= 2, timeout=10, what="the worker restarted")
        orphan = int((tmp_path / "orphan.pid").read_text())
        wait_until(lambda: not alive(orphan), timeout=5, what="the orphan killed")
    assert "killed 1 process(es) it left behind" in caplog.text


def test_stop_terminates_then_kills_what_ignores_sigterm_and_exits_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = [
        ProcessSpec("polite", "exec sleep 60"),
        ProcessSpec("stubborn", "trap '' TERM; echo ready; sleep 60"),
    ]
    with supervising(specs, tmp_path, grace=0.5) as state:
        polite, stubborn = state["supervisor"].units
        wait_until(lambda: "ready" in state["output"].getvalue(), timeout=10, what="ready")
        pids = [polite.process.pid, stubborn.process.pid]
    assert state["status"] == 0
    assert "stubborn still running: SIGKILL" in caplog.text
    assert not any(alive(pid) for pid in pids)


def test_the_supervisor_ends_by_itself_when_only_finished_one_shots_remain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="stack.supervisor")
    output = io.StringIO()
    supervisor = Supervisor(
        [ProcessSpec("once", "exit 0", oneshot=True)],
        env=dict(os.environ),
        cwd=tmp_path,
        console=Console(output, ["once"]),
        backoff=FAST,
    )
    assert supervisor.run() == 0
    assert "every process has finished" in caplog.text


def test_the_command_line_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("steady: echo $$ > steady.pid; exec sleep 60\nonce: echo hello\n")
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "stack.supervisor", "--procfile", str(procfile)]
            + ["--oneshot", "once", "--grace", "5"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        wait_until(lambda: "once finished" in log.read_text(), timeout=20, what="the one-shot")
        wait_until(lambda: (tmp_path / "steady.pid").exists(), timeout=10, what="steady")
        steady = int((tmp_path / "steady.pid").read_text())
        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(timeout=20) == 0, log.read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    text = log.read_text()
    assert "SIGINT: stopping every process" in text
    assert any(line.split()[1:] == ["once", "|", "hello"] for line in text.splitlines()), text
    assert not alive(steady)
