"""Refused versions: a version that failed to load or to warm up is retried with exponential
backoff instead of at every poll, so a broken promotion costs a handful of attempts an hour per
worker, not a download every few seconds forever.

A refusal is keyed by version *and* run id (a re-created model numbers its versions from 1
again). Only the version the alias points at is tracked: when the alias moves on, the record
goes, and a later promotion of the same version gets a fresh first attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.predict.loaded import VersionRef


def retry_delay(attempts: int, *, first: float, cap: float) -> float:
    """Seconds to wait after the `attempts`-th failure: first, 2*first, 4*first, ... up to cap."""
    if attempts < 1:
        return 0.0
    # min() on the exponent too: 2**attempts overflows a float after ~1000 failures.
    return min(cap, first * 2.0 ** min(attempts - 1, 60))


def worth_notifying(attempts: int) -> bool:
    """Attempts 1, 2, 4, 8, ...: an event on each doubling, a few a day for a version that
    stays broken (each worker sends its own)."""
    return attempts >= 1 and attempts & (attempts - 1) == 0


@dataclass(frozen=True)
class Refusal:
    version: str
    run_id: str | None
    attempts: int
    reason: str  # short, no exception text: may be shown to clients
    detail: str  # for the log and the event: the exception, credentials masked
    delay: float
    retry_at: float  # on the holder's monotonic clock

    def retry_in(self, now: float) -> float:
        return max(0.0, self.retry_at - now)

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "attempts": self.attempts,
            "reason": self.reason,
            "retry_in_seconds": round(self.retry_in(now), 1),
        }


class Refusals:
    """The refused version the alias points at, if any, and when to try it again."""

    def __init__(
        self, *, first: float, cap: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.first = first
        self.cap = cap
        self.clock = clock
        self._refused: dict[tuple[str, str | None], Refusal] = {}

    def forget_others(self, ref: VersionRef) -> None:
        """The alias points at `ref` now: other refused versions are no longer of interest."""
        for key in [key for key in self._refused if key != ref.key()]:
            del self._refused[key]

    def waiting(self, ref: VersionRef) -> Refusal | None:
        """The refusal of `ref` while its next attempt is not due yet."""
        refusal = self._refused.get(ref.key())
        if refusal is not None and self.clock() < refusal.retry_at:
            return refusal
        return None

    def failed(self, ref: VersionRef, reason: str, detail: str) -> Refusal:
        previous = self._refused.get(ref.key())
        attempts = previous.attempts + 1 if previous else 1
        delay = retry_delay(attempts, first=self.first, cap=self.cap)
        refusal = Refusal(
            version=ref.version,
            run_id=ref.run_id,
            attempts=attempts,
            reason=reason,
            detail=detail,
            delay=delay,
            retry_at=self.clock() + delay,
        )
        self._refused[ref.key()] = refusal
        return refusal

    def succeeded(self, ref: VersionRef) -> None:
        self._refused.pop(ref.key(), None)

    def describe(self) -> list[dict[str, Any]]:
        now = self.clock()
        # list() copies in one step (request threads read while the poller writes)
        return [refusal.describe(now) for refusal in list(self._refused.values())]
