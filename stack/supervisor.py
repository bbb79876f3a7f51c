"""The native stack's process supervisor: runs the Procfile's processes and restarts the one that
dies while the others keep running (standard library only).

    python -m stack.supervisor [--procfile Procfile] [--concurrency worker=2] [--oneshot NAME]
                               [--process 'name: command'] [--grace SECONDS] [PROCESS ...]

- Each Procfile line `name: command` runs as `bash -c command` in its own process group, in the
  Procfile's folder, with the supervisor's environment; its output lines are forwarded prefixed
  with its name (`worker.1 | ...`). `--concurrency worker=2` starts worker.1 and worker.2.
  `--process` adds a line to the Procfile's (the launcher's optional ones, e.g. a Dask cluster).
- A process that exits is restarted after a delay doubling from 1 s to 30 s, back to 1 s once it
  had stayed up a minute. A one-shot process (`--oneshot`, e.g. the bootstrap) is not restarted
  after exit 0.
- A process that exits leaves nothing behind, as when a container's main process dies: its
  process group is killed, and so is every process that inherited its marker variable
  (NYCTAXI_SUPERVISOR_UNIT): a Prefect worker starts each flow run in a session of its own, and
  a flow run left alive by its dead worker would finish unseen by anyone.
- Ctrl-C / SIGTERM: SIGTERM to every process group, SIGKILL to what is left after the grace
  period (a second Ctrl-C: at once). Exit status 1 if a process died unexpectedly (or a one-shot's
  last attempt failed), else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

logger = logging.getLogger("stack.supervisor")

MARKER = "NYCTAXI_SUPERVISOR_UNIT"
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
POLL_SECONDS = 0.2
COLORS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)  # ANSI foreground colours of the prefixes


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    command: str
    oneshot: bool = False


@dataclass(frozen=True)
class Backoff:
    """Restart delays: `initial`, doubling up to `maximum`; back to `initial` after a run that
    lasted `reset_after` seconds (a crash an hour later is no crash loop)."""

    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def delay(self, previous: float | None, uptime: float) -> float:
        """The wait before restarting a process that ran `uptime` seconds; `previous` is the
        wait before that run (None: it was the first start)."""
        if previous is None or uptime >= self.reset_after:
            return self.initial
        return min(previous * 2, self.maximum)


def parse_procfile(text: str) -> dict[str, str]:
    """`name: command` lines, in order; comments and blank lines skipped."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PROCFILE_LINE.match(line)
        if match is None:
            raise ValueError(f"Procfile line {number} is not `name: command`: {line[:60]!r}")
        entries[match.group(1)] = match.group(2).strip()
    return entries


def with_extra_processes(procfile: Mapping[str, str], lines: Iterable[str]) -> dict[str, str]:
    """The Procfile's entries followed by `lines` (`name: command` each); a name may not repeat."""
    extra = parse_procfile("\n".join(lines))
    clash = sorted(set(extra) & set(procfile))
    if clash:
        raise ValueError(f"--process names a Procfile process again: {', '.join(clash)}")
    return {**procfile, **extra}


def parse_concurrency(values: Iterable[str]) -> dict[str, int]:
    """`worker=2` or `worker=2,predict=1` (honcho's syntax) -> {"worker": 2, ...}."""
    counts: dict[str, int] = {}
    for value in values:
        for item in filter(None, value.split(",")):
            name, _, count = item.partition("=")
            if not count.isdigit():
                raise ValueError(f"--concurrency wants name=count, got {item!r}")
            counts[name.strip()] = int(count)
    return counts


def process_specs(
    procfile: Mapping[str, str],
    *,
    only: Iterable[str] = (),
    concurrency: Mapping[str, int] | None = None,
    oneshot: Iterable[str] = (),
) -> list[ProcessSpec]:
    """The processes to run: `only` those (default all), `concurrency` copies of each."""
    only = list(only)
    unknown = sorted(set(only) - set(procfile))
    if unknown:
        raise ValueError(f"not in the Procfile: {', '.join(unknown)}")
    counts = concurrency or {}
    oneshot = set(oneshot)
    specs = []
    for name, command in procfile.items():
        if only and name not in only:
            continue
        count = counts.get(name, 1)
        for index in range(1, count + 1):
            label = name if count == 1 else f"{name}.{index}"
            specs.append(ProcessSpec(label, command, oneshot=name in oneshot))
    return specs


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit {code}"


def marked_pids(token: str, proc: Path = Path("/proc"), *, variable: str = MARKER) -> list[int]:
    """Live (not zombie) processes whose environment holds `variable`=token."""
    needle = f"{variable}={token}".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_leftovers(pgid: int, token: str) -> int:
    """SIGKILL the process group and every process carrying the token; return how many of the
    latter there were (rounds: a killed parent's children are found in the next one)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    killed = 0
    for _ in range(5):
        pids = marked_pids(token)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed += len(pids)
        time.sleep(0.1)  # let the kernel take them down before looking again
    return killed


class Console:
    """Writes whole lines, each prefixed with a time and the name of whoever wrote it."""

    def __init__(self, stream: TextIO, names: Iterable[str], *, color: bool = False) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._names = ["supervisor", *names]
        self._width = max(len(name) for name in self._names)
        self._color = color

    def line(self, name: str, text: str) -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name:<{self._width}} |"
        if self._color:
            base = name.partition(".")[0]
            index = next((i for i, n in enumerate(self._names) if n.startswith(base)), 0)
            prefix = f"\033[{COLORS[index % len(COLORS)]}m{prefix}\033[0m"
        with self._lock:
            self._stream.write(f"{prefix} {text}\n")
            self._stream.flush()


class ConsoleHandler(logging.Handler):
    """The supervisor's own log lines, in the same stream as the processes' output."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        self._console.line("supervisor", self.format(record))


@dataclass
class Unit:
    """One supervised process and its restart bookkeeping."""

    spec: ProcessSpec
    process: subprocess.Popen[bytes] | None = None
    token: str = ""
    started: float = 0.0
    delay: float | None = None
    restart_at: float | None = None
    starts: int = 0
    failures: int = 0
    last_code: int | None = None
    done: bool = False
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        if self.spec.oneshot:
            return self.last_code not in (None, 0)
        return self.failures > 0


class Supervisor:
    def __init__(
        self,
        specs: list[ProcessSpec],
        *,
        env: Mapping[str, str],
        cwd: Path,
        console: Console,
        backoff: Backoff = Backoff(),
        grace: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.units = [Unit(spec) for spec in specs]
        self._env = dict(env)
        self._cwd = cwd
        self._console = console
        self._backoff = backoff
        self._grace = grace
        self._clock = clock
        self._session = f"{os.getpid()}-{secrets.token_hex(4)}"
        # Plain flags, polled: a signal handler may not take a lock (Event.set does).
        self._stopping = False
        self._force = False
        self._stop_reason = ""

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop everything; a second call: SIGKILL at once. Safe in a signal handler: it only
        sets flags (logging from there could wait for a lock its own thread holds)."""
        if self._stopping:
            self._force = True
        else:
            self._stop_reason = reason
        self._stopping = True

    def run(self) -> int:
        """Start every process, supervise until asked to stop (or nothing is left to run)."""
        try:
            for unit in self.units:
                self._start(unit)
            while not self._stopping:
                for unit in self.units:
                    self._check(unit, self._clock())
                if all(unit.done for unit in self.units):
                    logger.info("every process has finished")
                    break
                time.sleep(POLL_SECONDS)
            if self._stop_reason:
                logger.info("%s: stopping every process", self._stop_reason)
        finally:
            self._stop_all()  # whatever happened here, no process outlives the supervisor
        failed = [unit.spec.name for unit in self.units if unit.failed]
        restarts = ", ".join(f"{u.spec.name} x{u.failures}" for u in self.units if u.failures)
        logger.info("stopped; unexpected exits: %s", restarts or "none")
        return 1 if failed else 0

    def _start(self, unit: Unit) -> None:
        unit.starts += 1
        unit.token = f"{self._session}.{unit.spec.name}.{unit.starts}"
        unit.restart_at = None
        unit.started = self._clock()
        try:
            process = subprocess.Popen(
                ["bash", "-c", unit.spec.command],
                cwd=self._cwd,
                env={**self._env, MARKER: unit.token},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,  # its own group: a terminal's Ctrl-C reaches the supervisor only
            )
        except OSError as error:
            logger.error("%s could not start: %s", unit.spec.name, error)
            self._schedule_restart(unit, self._clock(), -1)
            return
        unit.process = process
        assert process.stdout is not None
        reader = threading.Thread(
            target=self._forward, args=(unit.spec.name, process.stdout), daemon=True
        )
        reader.start()
        unit.readers = [*filter(threading.Thread.is_alive, unit.readers), reader]
        again = f" (start {unit.starts})" if unit.starts > 1 else ""
        logger.info("%s started, pid %d%s", unit.spec.name, process.pid, again)

    def _forward(self, name: str, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                self._console.line(name, raw.decode(errors="replace").rstrip("\r\n"))

    def _check(self, unit: Unit, now: float) -> None:
        if unit.process is not None:
            code = unit.process.poll()
            if code is not None:
                self._exited(unit, code, now)
        elif unit.restart_at is not None and now >= unit.restart_at:
            self._start(unit)

    def _exited(self, unit: Unit, code: int, now: float) -> None:
        assert unit.process is not None
        leftovers = kill_leftovers(unit.process.pid, unit.token)
        unit.process = None
        unit.last_code = code
        left = f"; killed {leftovers} process(es) it left behind" if leftovers else ""
        if unit.spec.oneshot and code == 0:
            unit.done = True
            logger.info("%s finished (exit 0)%s", unit.spec.name, left)
            return
        logger.warning(
            "%s exited (%s) after %.0f s%s",
            unit.spec.name,
            describe_exit(code),
            now - unit.started,
            left,
        )
        self._schedule_restart(unit, now, code)

    def _schedule_restart(self, unit: Unit, now: float, code: int) -> None:
        unit.failures += 1
        unit.last_code = code
        unit.delay = self._backoff.delay(unit.delay, now - unit.started)
        unit.restart_at = now + unit.delay
        logger.warning("%s: restart in %.3g s", unit.spec.name, unit.delay)

    def _stop_all(self) -> None:
        running = [u for u in self.units if u.process is not None and u.process.poll() is None]
        for unit in running:
            assert unit.process is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(unit.process.pid, signal.SIGTERM)
        deadline = self._clock() + self._grace
        while self._clock() < deadline and not self._force:
            if all(u.process is None or u.process.poll() is not None for u in running):
                break
            time.sleep(POLL_SECONDS)
        if self._force:
            logger.warning("asked again: killing every process now")
        for unit in self.units:
            if unit.process is None:
                continue
            if unit.process.poll() is None:
                logger.warning("%s still running: SIGKILL", unit.spec.name)
            kill_leftovers(unit.process.pid, unit.token)
            unit.process.wait()
        for unit in self.units:
            for reader in unit.readers:
                reader.join(timeout=2)  # the last lines of output (a failure's last words)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Procfile's processes; restart the dead.")
    parser.add_argument("processes", nargs="*", help="Procfile processes (default: all)")
    parser.add_argument("--procfile", type=Path, default=Path("Procfile"))
    parser.add_argument("--concurrency", action="append", default=[], help="e.g. worker=2")
    parser.add_argument(
        "--oneshot", action="append", default=[], help="not restarted after exit 0 (repeatable)"
    )
    parser.add_argument(
        "--process", action="append", default=[], help="an extra 'name: command' (repeatable)"
    )
    parser.add_argument("--grace", type=float, default=15.0, help="seconds from SIGTERM to SIGKILL")
    args = parser.parse_args(argv)

    procfile = args.procfile.resolve()
    try:
        specs = process_specs(
            with_extra_processes(parse_procfile(procfile.read_text()), args.process),
            only=args.processes,
            concurrency=parse_concurrency(args.concurrency),
            oneshot=args.oneshot,
        )
    except (OSError, ValueError) as error:
        parser.error(str(error))
    console = Console(sys.stdout, [s.name for s in specs], color=sys.stdout.isatty())
    handler = ConsoleHandler(console)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    supervisor = Supervisor(
        specs, env=os.environ, cwd=procfile.parent, console=console, grace=args.grace
    )

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.request_stop(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
