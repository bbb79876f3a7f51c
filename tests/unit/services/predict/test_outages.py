"""Serving through outages, with the real ModelHolder, the real cache and a fake source.

A worker that starts while the registry does not answer serves the version its alias was last
served by, from the local cache, and says so; it follows the alias again when the registry
answers. A version that fails to load is refused with growing intervals and announced, while
the current version keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from services.predict.app import create_app
from services.predict.backoff import Refusal, Refusals
from services.predict.holder import ModelHolder
from services.predict.model_cache import ModelCache
from services.predict.settings import PredictSettings
from tests.unit.services.predict.fakes import RIDE, FakeSource, assert_error


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "model-cache"


@pytest.fixture
def announced() -> list[Refusal]:
    return []


@pytest.fixture
def new_worker(
    source: FakeSource, cache_root: Path, clock: Clock, announced: list[Refusal]
) -> Callable[[], ModelHolder]:
    """Starts a holder like a fresh worker's: same cache folder, nothing in memory."""

    def start() -> ModelHolder:
        cache = ModelCache(cache_root, "fake", keep=2)
        cache.probe()
        return ModelHolder(
            source,
            reload_interval=3600,
            retry_interval=3600,
            poll=False,
            cache=cache,
            refusals=Refusals(first=5, cap=40, clock=clock),
            on_refused=announced.append,
        )

    return start


@pytest.fixture
def worker(new_worker: Callable[[], ModelHolder]) -> ModelHolder:
    return new_worker()


@pytest.fixture
def served_once(source: FakeSource, worker: ModelHolder) -> ModelHolder:
    """Version 1 served from the registry (so the cache points at it)."""
    source.alias_version = "1"
    assert worker.refresh() is True
    return worker


@pytest.fixture
def restarted(
    source: FakeSource, served_once: ModelHolder, new_worker: Callable[[], ModelHolder]
) -> ModelHolder:
    """Version 1 served once; then the registry stops answering and a worker starts."""
    source.unreachable = True
    return new_worker()


@pytest.fixture
def client_of(
    service_settings: PredictSettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[object]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    def make(holder: ModelHolder) -> FlaskClient:
        return create_app(service_settings, holder=holder).test_client()

    yield make


# -- the cache stands in while the registry does not answer -----------------------------------


def test_a_worker_started_during_an_outage_serves_the_cached_version_and_says_so(
    source: FakeSource, restarted: ModelHolder, client_of
) -> None:
    assert restarted.refresh() is True
    assert source.downloads == ["1"]  # from the cache: nothing downloaded again
    client = client_of(restarted)

    answer = client.post("/predict", json=RIDE)
    assert answer.status_code == 200 and answer.get_json()["model"]["version"] == "1"
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["origin"] == "cache" and body["registry"] == "unreachable"
    assert body["degraded"] is True and "cached version 1" in body["detail"]
    assert body["model"] == {"name": "fake", "version": "1", "alias": "champion"}
    model = client.get("/model").get_json()
    assert model["origin"] == "cache" and model["registry"]["status"] == "unreachable"
    assert model["checksum"] and len(model["checksum"]) == 64
    assert "registry is unreachable" in model["last_problem"]
    assert "registry.internal" not in str(model) + str(body)
    metrics = client.get("/metrics").get_data(as_text=True).splitlines()
    assert "predict_model_from_cache 1.0" in metrics and "predict_registry_up 0.0" in metrics


def test_when_the_registry_answers_again_the_cached_version_is_confirmed(
    source: FakeSource, restarted: ModelHolder, client_of
) -> None:
    restarted.refresh()
    source.unreachable = False
    assert restarted.refresh() is False  # the alias still points at it: no swap, no load
    assert source.loads == ["1", "1"]
    body = client_of(restarted).get("/ready").get_json()
    assert (body["origin"], body["registry"]) == ("registry", "reachable")
    assert "degraded" not in body


def test_when_the_registry_answers_again_a_moved_alias_is_followed(
    source: FakeSource, restarted: ModelHolder
) -> None:
    restarted.refresh()
    source.unreachable = False
    source.alias_version = "2"
    assert restarted.refresh() is True
    assert restarted.current is not None
    assert (restarted.current.version, restarted.current.origin) == ("2", "registry")
    pointer = restarted._cache.pointer("champion")  # type: ignore[union-attr]
    assert pointer is not None and pointer.version == "2"


@pytest.mark.usefixtures("served_once")
@pytest.mark.parametrize("failure", ["denied", "no alias"])
def test_the_cache_stands_in_only_for_a_registry_that_does_not_answer(
    source: FakeSource,
    new_worker: Callable[[], ModelHolder],
    client_of,
    failure: str,
) -> None:
    # An auth error or a missing alias is an answer: serving an old version would hide it.
    if failure == "denied":
        source.denied = True
    else:
        source.alias_version = None
    restarted = new_worker()
    assert restarted.refresh() is False
    assert restarted.current is None
    assert_error(client_of(restarted).get("/ready"), 503, "model")


def test_without_a_cached_version_an_outage_at_start_is_a_503_that_says_why(
    source: FakeSource, worker: ModelHolder, client_of, caplog: pytest.LogCaptureFixture
) -> None:
    source.unreachable = True
    assert worker.refresh() is False
    body = assert_error(client_of(worker).get("/ready"), 503, "model")
    assert "registry is unreachable" in body["details"][0]["problem"]
    assert "no cached version" in caplog.text


@pytest.mark.usefixtures("served_once")
def test_a_corrupt_cache_is_refused_logged_and_not_retried(
    source: FakeSource,
    cache_root: Path,
    new_worker: Callable[[], ModelHolder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = ModelCache(cache_root, "fake")
    pointer = cache.pointer("champion")
    assert pointer is not None
    weights = next((cache.entries).rglob("weights.bin"))
    weights.write_bytes(b"bit rot")
    source.unreachable = True
    restarted = new_worker()
    with caplog.at_level(logging.ERROR):
        assert restarted.refresh() is False
    assert restarted.current is None
    assert "refusing the cached version 1" in caplog.text and "weights.bin" in caplog.text
    assert source.loads == ["1"]  # the damaged copy was never loaded
    caplog.clear()
    assert restarted.refresh() is False
    assert "refusing the cached version" not in caplog.text  # logged once
    # when the registry answers, the version is downloaded afresh
    source.unreachable = False
    assert restarted.refresh() is True
    assert source.downloads == ["1", "1"]


def test_losing_the_registry_while_serving_keeps_the_model_and_says_so(
    source: FakeSource, served_once: ModelHolder, client_of
) -> None:
    source.unreachable = True
    assert served_once.refresh() is False
    body = client_of(served_once).get("/ready").get_json()
    assert (body["origin"], body["registry"], body["degraded"]) == (
        "registry",
        "unreachable",
        True,
    )
    source.unreachable = False
    served_once.refresh()
    assert "degraded" not in client_of(served_once).get("/ready").get_json()


def test_a_registry_gone_between_resolve_and_download_is_an_outage_not_a_refusal(
    source: FakeSource, served_once: ModelHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    source.alias_version = "2"
    original = source.download

    def vanishing(ref, into):  # noqa: ANN001, ANN202
        source.unreachable = True
        return original(ref, into)

    monkeypatch.setattr(source, "download", vanishing)
    assert served_once.refresh() is False
    assert served_once.refused() == [] and served_once.registry.state == "unreachable"


# -- refused versions -------------------------------------------------------------------------


def attempts_at(
    holder: ModelHolder, source: FakeSource, clock: Clock, until: float, step: float = 1.0
) -> list[float]:
    """Poll every `step` seconds of the fake clock; the times at which version 2 was tried."""
    tried: list[float] = []
    start = clock.now
    while clock.now - start <= until:
        before = len(source.loads)
        holder.refresh()
        if len(source.loads) > before:
            tried.append(clock.now - start)
        clock.now += step
    return tried


@pytest.mark.parametrize("broken", ["warm-up", "load"])
def test_a_broken_version_is_retried_with_growing_intervals_while_the_current_one_serves(
    source: FakeSource,
    served_once: ModelHolder,
    clock: Clock,
    announced: list[Refusal],
    client_of,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    (source.broken_versions if broken == "warm-up" else source.unloadable_versions).add("2")
    source.alias_version = "2"
    client = client_of(served_once)
    with caplog.at_level(logging.WARNING):
        tried = attempts_at(served_once, source, clock, until=200)
    assert tried == [0, 5, 15, 35, 75, 115, 155, 195]  # +5, +10, +20, +40, then the cap
    assert source.downloads == ["1", "2"]  # downloaded once; retried from the cache
    assert client.post("/predict", json=RIDE).get_json()["model"]["version"] == "1"
    refused = client.get("/model").get_json()["refused"]
    assert [(r["version"], r["attempts"]) for r in refused] == [("2", 8)]
    assert (
        refused[0]["reason"]
        == f"{broken} failed ({'ValueError' if broken == 'warm-up' else 'RuntimeError'})"
    )
    lines = [r.getMessage() for r in caplog.records if "refused version 2" in r.getMessage()]
    assert len(lines) == 8 and "attempt 3" in lines[2] and "next attempt in 20s" in lines[2]
    assert "s3cret-pw" not in caplog.text
    # announced on attempts 1, 2, 4 and 8, with a short reason that names no location
    assert [refusal.attempts for refusal in announced] == [1, 2, 4, 8]
    assert announced[0].version == "2" and announced[0].run_id == "run-2"
    assert broken in announced[0].detail and "registry.internal" not in announced[0].detail
    ready = client.get("/ready").get_json()
    assert ready["degraded"] is True and "version 2 under the alias is refused" in ready["detail"]


def test_a_fixed_version_replaces_the_refused_one_at_once(
    source: FakeSource, served_once: ModelHolder, clock: Clock
) -> None:
    source.broken_versions.add("2")
    source.alias_version = "2"
    served_once.refresh()
    source.alias_version = "3"  # the fix, promoted
    assert served_once.refresh() is True
    assert served_once.current.version == "3"  # type: ignore[union-attr]
    assert served_once.refused() == []


def test_a_worker_starting_on_a_refused_alias_serves_the_last_good_cached_version(
    source: FakeSource, new_worker: Callable[[], ModelHolder]
) -> None:
    first = new_worker()
    source.alias_version = "1"
    first.refresh()
    source.broken_versions.add("2")
    source.alias_version = "2"
    restarted = new_worker()
    assert restarted.refresh() is True
    assert restarted.current is not None
    assert (restarted.current.version, restarted.current.origin) == ("1", "cache")
    assert restarted.refused()[0]["version"] == "2"


def test_a_failing_announcement_does_not_stop_the_holder(
    source: FakeSource, served_once: ModelHolder, caplog: pytest.LogCaptureFixture
) -> None:
    def exploding(refusal: Refusal) -> None:
        raise RuntimeError("prefect down")

    served_once._on_refused = exploding
    source.broken_versions.add("2")
    source.alias_version = "2"
    assert served_once.refresh() is False
    assert "announcing the refusal of version 2 failed" in caplog.text


# -- process gauges ---------------------------------------------------------------------------


def test_metrics_show_sys_path_entries_and_resident_memory(
    served_once: ModelHolder, client_of
) -> None:
    import sys

    text = client_of(served_once).get("/metrics").get_data(as_text=True)
    assert f"predict_worker_sys_path_entries {float(len(sys.path))}" in text
    rss = [line for line in text.splitlines() if line.startswith("predict_worker_resident")]
    assert len(rss) == 1 and float(rss[0].split()[1]) > 10e6


# -- a starting worker ------------------------------------------------------------------------


class GatedSource(FakeSource):
    """A registry that answers only once the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def resolve(self):  # noqa: ANN201
        self.gate.wait(10)
        return super().resolve()


def test_a_starting_worker_takes_requests_once_it_tried_to_load_a_model() -> None:
    source = GatedSource()
    source.alias_version = "1"
    holder = ModelHolder(source, reload_interval=3600, retry_interval=3600)
    holder.ensure_started()
    try:
        assert holder.wait_first_attempt(0.2) is False  # bounded: the registry hangs
        source.gate.set()
        assert holder.wait_first_attempt(10) is True
        assert holder.current is not None and holder.current.version == "1"
    finally:
        holder.stop()
