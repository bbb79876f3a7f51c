"""The Dask cluster a run may use: named by DASK_SCHEDULER_ADDRESS, none when it is unset.

The cluster's key (mutual TLS) is Dask's own configuration, read from the environment by every
`distributed.Client` (DASK_DISTRIBUTED__COMM__TLS__*, see .env.example): nothing here handles it,
so no code path can connect without it or print it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nyctaxi import dasktls, names

if TYPE_CHECKING:  # distributed is imported only by runs that use a cluster
    from distributed import Client

logger = logging.getLogger(__name__)

ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"
IN_PROCESS = names.ENGINE_IN_PROCESS
DASK = names.ENGINE_DASK


def scheduler_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The scheduler to use, or None (blank counts as unset: compose passes empty values)."""
    value = (os.environ if environ is None else environ).get(ADDRESS_VARIABLE, "").strip()
    return value or None


def worker_count(client: Client) -> int:
    """Workers connected to the client's scheduler now."""
    return len(client.scheduler_info(n_workers=-1).get("workers", {}))


def connect_timeout_seconds() -> float:
    """How long to wait for the scheduler and for a first worker: Dask's own connect timeout
    (distributed.comm.timeouts.connect, 30 s unless DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT
    says otherwise)."""
    import dask.config
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s"))


def no_worker_error(address: str, timeout_seconds: float) -> ConnectionError:
    return ConnectionError(
        f"the Dask scheduler at {address} has no worker after {timeout_seconds:.0f}s: start "
        "some (compose: --profile dask --scale dask-worker=N; make run: DASK_LOCAL_WORKERS=N)"
    )


def check_can_connect(address: str) -> None:
    """Fail at once, saying why, when this process lacks the key a tls:// scheduler asks for
    (Dask itself fails after its connect timeout, with a TypeError about an ssl_context)."""
    problem = dasktls.client_tls_problem(address)
    if problem:
        raise ConnectionError(f"cannot connect to the Dask scheduler at {address}: {problem}")


@contextmanager
def connect(address: str) -> Iterator[Client]:
    """A client of the scheduler at `address`; fails with the address when it can't be reached,
    this process lacks its key, or it has no worker, instead of a run that waits forever for
    workers that never come."""
    from distributed import Client

    check_can_connect(address)
    timeout_seconds = connect_timeout_seconds()
    try:
        client = Client(address, timeout=timeout_seconds, set_as_default=False)
    except OSError as error:
        raise ConnectionError(
            f"no Dask scheduler reachable at {address} ({ADDRESS_VARIABLE}) within "
            f"{timeout_seconds:.0f}s: {error}"
        ) from error
    try:
        client.wait_for_workers(1, timeout=timeout_seconds)
    except TimeoutError as error:
        client.close()
        raise no_worker_error(address, timeout_seconds) from error
    logger.info("connected to the Dask scheduler at %s (%d workers)", address, worker_count(client))
    try:
        yield client
    finally:
        client.close()
