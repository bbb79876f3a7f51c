"""The promotion lock of a flow run: a Prefect global concurrency limit with one slot.

Every training run of every worker holds it while it scores the champion, registers its version
and moves the alias (nyctaxi.pipeline.run_training), so two runs never decide against the same
champion. The slot is leased: the holder renews the lease while it works, and the server frees
the slot once a crashed holder's lease runs out (PipelineSettings.promotion_lease_seconds).
The limit shows in the UI under Concurrency, with the run that holds it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client, get_run_logger
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from nyctaxi import names
from nyctaxi.config import PipelineSettings


def ensure_limit(name: str = names.PROMOTION_LIMIT) -> None:
    """Create the one-slot limit if it is missing (an unknown limit would not lock anything)."""
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            existing = None
        if existing is not None:
            if existing.limit != 1 or not existing.active:
                raise RuntimeError(
                    f"global concurrency limit {name!r} must be active with 1 slot "
                    f"(it has {existing.limit}, active={existing.active}): promotions would race"
                )
            return
        # Another run may have created it a moment ago.
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1, active=True)
            )


@contextmanager
def promotion_lock(settings: PipelineSettings, model_name: str) -> Iterator[None]:
    """Hold the promotion slot; strict, so a limit deleted meanwhile fails the run loudly."""
    logger = get_run_logger()
    ensure_limit()
    started = time.perf_counter()
    with concurrency(
        names.PROMOTION_LIMIT,
        occupy=1,
        timeout_seconds=settings.promotion_wait_seconds,
        lease_duration=settings.promotion_lease_seconds,
        strict=True,
    ):
        logger.info(
            "holding the promotion lock %r for %s (waited %.1fs)",
            names.PROMOTION_LIMIT,
            model_name,
            time.perf_counter() - started,
        )
        yield
    logger.info("released the promotion lock %r", names.PROMOTION_LIMIT)
