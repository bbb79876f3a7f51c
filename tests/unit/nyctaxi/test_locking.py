"""The in-process promotion lock: exclusive across processes, released when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nyctaxi.locking import file_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nyctaxi.locking import file_lock
    with file_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(600)
    """
)


def holder(path: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_waits_until_the_first_one_dies(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "promotion.lock"
    process = holder(lock)
    try:
        with pytest.raises(BlockingIOError):
            import fcntl

            with lock.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.kill(process.pid, signal.SIGKILL)  # a crash: no release, no cleanup
        process.wait()
    with file_lock(lock) as waited:
        assert waited < 5


def test_the_lock_is_released_after_the_block_even_on_error(tmp_path: Path) -> None:
    lock = tmp_path / "promotion.lock"
    with pytest.raises(ValueError), file_lock(lock):
        raise ValueError("boom")
    with file_lock(lock) as waited:
        assert waited < 1
