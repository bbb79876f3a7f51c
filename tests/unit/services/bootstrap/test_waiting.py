"""Bounded waiting: returns once the probe is healthy, fails with the reason at the deadline."""

from __future__ import annotations

import socket

import pytest

from services.bootstrap.waiting import ServiceNotReady, main, mlflow_health_url, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def test_returns_once_the_probe_is_healthy() -> None:
    answers = iter(["refused", "starting", None])
    clock = FakeClock()
    wait_until(lambda: next(answers), what="svc", timeout=10, clock=clock, pause=clock.pause)
    assert clock.now == 2.0


def test_fails_at_the_deadline_naming_the_service_and_the_last_reason() -> None:
    clock = FakeClock()
    with pytest.raises(ServiceNotReady, match=r"Prefect API not healthy after 5s: refused"):
        wait_until(lambda: "refused", what="Prefect API", timeout=5, clock=clock, pause=clock.pause)
    assert clock.now == 5.0


def test_mlflow_health_url_only_for_servers() -> None:
    assert mlflow_health_url("http://mlflow:5000/") == "http://mlflow:5000/health"
    assert mlflow_health_url("sqlite:////data/mlflow.db") is None
    assert mlflow_health_url("file:///tmp/mlruns") is None


def test_waiting_cli_fails_with_exit_code_1_when_nothing_answers() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        assert main([f"http://127.0.0.1:{port}/health", "--timeout", "0.5"]) == 1
