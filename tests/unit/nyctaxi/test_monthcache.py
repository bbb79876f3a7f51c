"""The cleaned-month cache: its key and the in-process runner's files."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from nyctaxi import cleaning, monthcache
from nyctaxi.config import PipelineSettings
from nyctaxi.locate import IngestedMonth
from tests.unit.nyctaxi.racing import run_at_once

SHA = "a" * 64


def ingested(path: Path, month: str = "2023-01", sha256: str = SHA) -> IngestedMonth:
    return IngestedMonth(month, str(path), sha256, "local", None)


def test_the_key_holds_the_file_and_the_code_and_nothing_else() -> None:
    key = monthcache.cache_key("2023-01", SHA)
    assert key == f"prepare-2023-01-{SHA}-{monthcache.cleaning_fingerprint()}"
    assert monthcache.cache_key("2023-01", "b" * 64) != key
    assert "pandas" in monthcache.cleaning_fingerprint()
    assert "pyarrow" in monthcache.cleaning_fingerprint()


def test_the_cache_folder_is_under_nyctaxi_home(tmp_path: Path) -> None:
    settings = PipelineSettings(nyctaxi_home=tmp_path)
    assert monthcache.cache_folder(settings) == tmp_path / "cache" / "cleaned"


def test_prepare_ingested_reads_and_cleans_with_the_files_checksum(
    tmp_path: Path, tlc_month: Callable[[str], Path]
) -> None:
    # Five copies of the shaped month's rows: enough rows for cleaning's minimum.
    raw = pd.concat([pd.read_parquet(tlc_month("2023-01"))] * 5, ignore_index=True)
    path = tmp_path / "green_tripdata_2023-01.parquet"
    raw.to_parquet(path)

    prepared = monthcache.prepare_ingested(ingested(path))

    assert prepared.facts.month == "2023-01"
    assert prepared.facts.sha256 == SHA
    assert prepared.facts.rows_read == len(raw)
    assert prepared.facts.rows_kept == len(prepared.trips) >= cleaning.MIN_ROWS
    assert prepared.facts.rows_read - prepared.facts.rows_kept == sum(
        prepared.facts.dropped.values()
    )


class CountingPrepare:
    """A stand-in for prepare_ingested that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, month: IngestedMonth) -> cleaning.PreparedMonth:
        self.calls += 1
        trips = pd.DataFrame({"duration": [12.5, 7.0]})
        facts = cleaning.CleanedMonth(month.month, month.sha256, 3, 2, {"missing_values": 1})
        return cleaning.PreparedMonth(trips, facts)


@pytest.fixture
def prepare(monkeypatch: pytest.MonkeyPatch) -> CountingPrepare:
    counting = CountingPrepare()
    monkeypatch.setattr(monthcache, "prepare_ingested", counting)
    return counting


def test_a_month_is_prepared_once_then_read_back(tmp_path: Path, prepare: CountingPrepare) -> None:
    cache = monthcache.CleanedMonthCache(tmp_path / "cleaned")
    first = cache.prepare(ingested(tmp_path / "x.parquet"))
    again = monthcache.CleanedMonthCache(tmp_path / "cleaned").prepare(
        ingested(tmp_path / "elsewhere.parquet")  # same content (sha256): same entry
    )

    assert prepare.calls == 1
    assert again.facts == first.facts
    pd.testing.assert_frame_equal(again.trips, first.trips)
    assert [p.name for p in (tmp_path / "cleaned").iterdir()] == [
        f"{monthcache.cache_key('2023-01', SHA)}.pickle"
    ]


def test_another_file_is_another_entry(tmp_path: Path, prepare: CountingPrepare) -> None:
    cache = monthcache.CleanedMonthCache(tmp_path)
    cache.prepare(ingested(tmp_path / "x.parquet", sha256=SHA))
    cache.prepare(ingested(tmp_path / "x.parquet", sha256="b" * 64))
    assert prepare.calls == 2


def test_an_unreadable_entry_is_prepared_again_and_replaced(
    tmp_path: Path, prepare: CountingPrepare
) -> None:
    cache = monthcache.CleanedMonthCache(tmp_path)
    month = ingested(tmp_path / "x.parquet")
    tmp_path.mkdir(exist_ok=True)
    cache.path(month).write_bytes(b"truncated")

    prepared = cache.prepare(month)

    assert prepare.calls == 1
    assert prepared.facts.rows_kept == 2
    assert cache.prepare(month).facts == prepared.facts
    assert prepare.calls == 1
    assert not list(tmp_path.glob("*.part"))


def test_two_runs_preparing_one_month_at_once_leave_one_whole_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_missed = threading.Barrier(2, timeout=10)
    counting = CountingPrepare()

    def prepare_after_both_missed(month: IngestedMonth) -> cleaning.PreparedMonth:
        both_missed.wait()  # both looked in the cache, found nothing, and now both write
        return counting(month)

    monkeypatch.setattr(monthcache, "prepare_ingested", prepare_after_both_missed)
    month = ingested(tmp_path / "x.parquet")
    folder = tmp_path / "cleaned"
    results = run_at_once(lambda: monthcache.CleanedMonthCache(folder).prepare(month))

    assert counting.calls == 2
    assert all(isinstance(result, cleaning.PreparedMonth) for result in results), results
    entry = monthcache.CleanedMonthCache(folder).path(month)
    assert [p.name for p in folder.iterdir()] == [entry.name]  # no temp file left
    assert monthcache.CleanedMonthCache(folder).prepare(month).facts.rows_kept == 2
    assert counting.calls == 2  # read back, not prepared again
