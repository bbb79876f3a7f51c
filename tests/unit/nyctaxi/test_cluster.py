"""Which cluster a run uses, and the clear failures before any connection is tried."""

from __future__ import annotations

import dask.config
import pytest

from nyctaxi import cluster


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"DASK_SCHEDULER_ADDRESS": ""}, None),  # compose passes unset variables as empty
        ({"DASK_SCHEDULER_ADDRESS": "  "}, None),
        ({"DASK_SCHEDULER_ADDRESS": " tls://dask-scheduler:8786 "}, "tls://dask-scheduler:8786"),
    ],
)
def test_the_scheduler_address(environ: dict[str, str], expected: str | None) -> None:
    assert cluster.scheduler_address(environ) == expected


def test_the_connect_timeout_is_dasks_own_setting() -> None:
    with dask.config.set({"distributed.comm.timeouts.connect": "7s"}):
        assert cluster.connect_timeout_seconds() == 7.0


def test_a_tls_scheduler_without_the_key_fails_at_once_naming_what_to_set() -> None:
    unset = {
        "distributed.comm.tls.ca-file": None,
        "distributed.comm.tls.client.cert": None,
        "distributed.comm.tls.client.key": None,
    }
    with dask.config.set(unset), pytest.raises(ConnectionError) as error:
        cluster.check_can_connect("tls://dask-scheduler:8786")
    assert "tls://dask-scheduler:8786" in str(error.value)
    assert "DASK_DISTRIBUTED__COMM__TLS__" in str(error.value)


def test_a_plain_address_needs_no_key() -> None:
    cluster.check_can_connect("tcp://127.0.0.1:8786")  # LocalCluster in tests: no TLS asked


def test_no_worker_says_how_to_start_some() -> None:
    message = str(cluster.no_worker_error("tls://s:8786", 30))
    assert "tls://s:8786" in message and "--scale dask-worker=N" in message
    assert "DASK_LOCAL_WORKERS=N" in message
