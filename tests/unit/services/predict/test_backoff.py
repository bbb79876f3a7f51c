"""The retry schedule of refused versions."""

from __future__ import annotations

import pytest

from services.predict.backoff import Refusals, retry_delay, worth_notifying
from services.predict.loaded import VersionRef


def test_the_delay_doubles_from_the_first_up_to_the_cap() -> None:
    delays = [retry_delay(n, first=5, cap=600) for n in range(1, 11)]
    assert delays == [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]
    assert retry_delay(0, first=5, cap=600) == 0
    assert retry_delay(5000, first=5, cap=600) == 600  # no float overflow


def test_events_go_out_on_each_doubling_of_the_attempts() -> None:
    assert [n for n in range(1, 40) if worth_notifying(n)] == [1, 2, 4, 8, 16, 32]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_refused_version_waits_its_delay_then_is_due(clock: Clock) -> None:
    refusals = Refusals(first=5, cap=30, clock=clock)
    ref = VersionRef("7", "run-7")
    assert refusals.waiting(ref) is None
    first = refusals.failed(ref, "load failed (OSError)", "load: OSError: boom")
    assert (first.attempts, first.delay) == (1, 5)
    clock.now += 4.9
    assert refusals.waiting(ref) is first
    clock.now += 0.1
    assert refusals.waiting(ref) is None  # due: one more attempt
    second = refusals.failed(ref, "load failed (OSError)", "load: OSError: boom")
    assert (second.attempts, second.delay) == (2, 10)
    assert refusals.describe() == [
        {
            "version": "7",
            "run_id": "run-7",
            "attempts": 2,
            "reason": "load failed (OSError)",
            "retry_in_seconds": 10.0,
        }
    ]


def test_the_key_is_version_and_run(clock: Clock) -> None:
    refusals = Refusals(first=5, cap=30, clock=clock)
    refusals.failed(VersionRef("1", "run-old"), "r", "d")
    assert refusals.waiting(VersionRef("1", "run-new")) is None


def test_success_and_a_moved_alias_forget_the_refusal(clock: Clock) -> None:
    refusals = Refusals(first=5, cap=30, clock=clock)
    broken, fixed = VersionRef("2", "a"), VersionRef("3", "b")
    refusals.failed(broken, "r", "d")
    refusals.forget_others(fixed)
    assert refusals.describe() == []
    refusals.failed(fixed, "r", "d")
    refusals.succeeded(fixed)
    assert refusals.describe() == []
    # promoted again later: a fresh first attempt, not the old schedule
    assert refusals.failed(broken, "r", "d").attempts == 1
