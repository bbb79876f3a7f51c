"""Where a month comes from (local folders, bucket, TLC) with an in-memory bucket."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nyctaxi import locate, sources
from nyctaxi.config import PipelineSettings
from nyctaxi.months import Month, file_name
from tests.unit.nyctaxi.racing import run_at_once

MONTH = "2023-01"
KEY = "raw/green/2023-01.parquet"


class FakeBucket:
    """locate.RawBucket in memory; records every call."""

    def __init__(self, objects: dict[str, bytes] | None = None, name: str = "raw-test") -> None:
        self.name = name
        self.objects = dict(objects or {})
        self.calls: list[tuple[str, str]] = []

    def has_key(self, key: str) -> bool:
        self.calls.append(("has_key", key))
        return key in self.objects

    def download(self, key: str, dest: Path) -> None:
        self.calls.append(("download", key))
        dest.write_bytes(self.objects[key])

    def upload(self, path: Path, key: str) -> None:
        self.calls.append(("upload", key))
        self.objects[key] = path.read_bytes()


def never_fetch(month: Month) -> Path:
    raise AssertionError(f"TLC asked for {month}")


@pytest.fixture
def sample_bytes(tlc_month: Callable[[str], Path]) -> bytes:
    return tlc_month(MONTH).read_bytes()


def settings_for(tmp_path: Path, *, data_dir: Path | None, allow_download: bool = False):
    return PipelineSettings(
        nyctaxi_home=tmp_path / "home", taxi_data_dir=data_dir, TLC_ALLOW_DOWNLOAD=allow_download
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def test_a_local_month_is_used_and_landed_in_the_bucket(
    tmp_path: Path, data_dir: Path, sample_bytes: bytes
) -> None:
    (data_dir / file_name(MONTH)).write_bytes(sample_bytes)
    bucket = FakeBucket()

    [month] = locate.ingest_months(
        [MONTH], settings_for(tmp_path, data_dir=data_dir), bucket, never_fetch
    )

    assert month == locate.IngestedMonth(
        MONTH,
        str(data_dir / file_name(MONTH)),
        hashlib.sha256(sample_bytes).hexdigest(),
        "local",
        KEY,
    )
    assert bucket.calls == [("has_key", KEY), ("upload", KEY)]
    assert bucket.objects[KEY] == sample_bytes


def test_a_month_already_in_the_bucket_is_not_uploaded_again(
    tmp_path: Path, data_dir: Path, sample_bytes: bytes
) -> None:
    (data_dir / file_name(MONTH)).write_bytes(sample_bytes)
    bucket = FakeBucket({KEY: sample_bytes})

    locate.ingest_months([MONTH], settings_for(tmp_path, data_dir=data_dir), bucket, never_fetch)

    assert bucket.calls == [("has_key", KEY)]


def test_without_a_local_copy_the_month_comes_from_the_bucket_into_the_cache(
    tmp_path: Path, sample_bytes: bytes
) -> None:
    settings = settings_for(tmp_path, data_dir=tmp_path / "empty")
    bucket = FakeBucket({KEY: sample_bytes})

    [month] = locate.ingest_months([MONTH], settings, bucket, never_fetch)

    assert month.found_in == "s3"
    assert Path(month.path) == settings.cache_dir / file_name(MONTH)
    assert Path(month.path).read_bytes() == sample_bytes
    assert bucket.calls == [("has_key", KEY), ("download", KEY)]  # nothing uploaded back
    assert list(settings.cache_dir.iterdir()) == [Path(month.path)]  # no partial file left


def test_the_download_cache_counts_as_local(tmp_path: Path, sample_bytes: bytes) -> None:
    settings = settings_for(tmp_path, data_dir=None)
    settings.cache_dir.mkdir(parents=True)
    (settings.cache_dir / file_name(MONTH)).write_bytes(sample_bytes)

    path, found_in = locate.locate_month(Month.parse(MONTH), settings, None, never_fetch)

    assert (path, found_in) == (settings.cache_dir / file_name(MONTH), "local")


def test_a_corrupt_bucket_object_fails_and_overwrites_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, data_dir=None)
    settings.cache_dir.mkdir(parents=True)
    other = settings.cache_dir / file_name("2022-12")
    other.write_bytes(b"an unrelated month")
    bucket = FakeBucket({KEY: b"not parquet at all"})

    with pytest.raises(sources.InvalidParquetError, match="Parquet"):
        locate.locate_month(Month.parse(MONTH), settings, bucket, never_fetch)

    assert list(settings.cache_dir.iterdir()) == [other]
    assert other.read_bytes() == b"an unrelated month"


def test_a_month_found_nowhere_names_every_place_and_the_remedies(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, data_dir=tmp_path / "empty")

    with pytest.raises(sources.MonthNotAvailableError) as raised:
        locate.locate_month(Month.parse("2019-07"), settings, FakeBucket(), never_fetch)

    message = str(raised.value)
    assert str(tmp_path / "empty" / "green_tripdata_2019-07.parquet") in message
    assert str(settings.cache_dir / "green_tripdata_2019-07.parquet") in message
    assert "s3://raw-test/raw/green/2019-07.parquet" in message
    assert "TLC download: disabled (TLC_ALLOW_DOWNLOAD=false)" in message


def test_without_a_bucket_the_message_says_why(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, data_dir=None)

    with pytest.raises(sources.MonthNotAvailableError) as raised:
        locate.locate_month(
            Month.parse(MONTH), settings, None, never_fetch, no_bucket="S3 bucket: no server"
        )

    assert "local folder: TAXI_DATA_DIR is not set" in str(raised.value)
    assert "S3 bucket: no server" in str(raised.value)


def test_tlc_is_asked_last_and_the_download_is_landed(
    tmp_path: Path, data_dir: Path, sample_bytes: bytes
) -> None:
    settings = settings_for(tmp_path, data_dir=data_dir, allow_download=True)
    asked: list[Month] = []

    def fetch(month: Month) -> Path:
        asked.append(month)
        dest = settings.cache_dir / file_name(month)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(sample_bytes)
        return dest

    bucket = FakeBucket()
    [month] = locate.ingest_months([MONTH], settings, bucket, fetch)

    assert asked == [Month(2023, 1)]
    assert month.found_in == "download"
    # Asked once while looking, then uploaded without asking again.
    assert bucket.calls == [("has_key", KEY), ("upload", KEY)]


def test_a_failed_download_is_listed_with_the_places(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, data_dir=None, allow_download=True)

    def fetch(month: Month) -> Path:
        raise sources.RemoteFileNotFoundError(f"{file_name(month)} answered 404")

    with pytest.raises(sources.MonthNotAvailableError) as raised:
        locate.locate_month(Month.parse("2031-01"), settings, None, fetch)

    assert "TLC: green_tripdata_2031-01.parquet answered 404" in str(raised.value)
    assert isinstance(raised.value.__cause__, sources.DownloadError)


def test_download_from_tlc_uses_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tlc_month: Callable[[str], Path]
) -> None:
    settings = PipelineSettings(
        nyctaxi_home=tmp_path, tlc_base_url="http://127.0.0.1:9/trip-data", download_attempts=3
    )
    seen: dict[str, object] = {}

    def fake_download(month: Month, dest_dir: Path, **options: object) -> Path:
        seen.update(options, month=month, dest_dir=dest_dir)
        return shutil.copy(tlc_month(MONTH), tmp_path / "x.parquet")

    monkeypatch.setattr(sources, "download_month", fake_download)
    locate.download_from_tlc(Month(2023, 1), settings)

    assert seen["dest_dir"] == settings.cache_dir
    assert seen["base_url"] == "http://127.0.0.1:9/trip-data"
    assert seen["attempts"] == 3


class HalfwayBucket(FakeBucket):
    """Writes half of each object, waits until every concurrent download is halfway, then
    writes the rest: the overlap two runs fetching the same month have at worst."""

    def __init__(self, objects: dict[str, bytes], downloads: int) -> None:
        super().__init__(objects)
        self.halfway = threading.Barrier(downloads, timeout=10)

    def download(self, key: str, dest: Path) -> None:
        body = self.objects[key]
        with dest.open("wb") as out:
            out.write(body[: len(body) // 2])
            out.flush()
            self.halfway.wait()
            out.write(body[len(body) // 2 :])


def test_two_runs_fetching_one_month_at_once_both_end_with_the_whole_file(
    tmp_path: Path, sample_bytes: bytes
) -> None:
    bucket = HalfwayBucket({KEY: sample_bytes}, downloads=2)
    dest = tmp_path / "cache" / file_name(MONTH)
    results = run_at_once(lambda: locate.fetch_from_bucket(bucket, KEY, dest))

    assert results == [dest, dest]
    assert dest.read_bytes() == sample_bytes
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left


def test_the_second_finisher_keeps_the_first_copy(
    tmp_path: Path, sample_bytes: bytes, tlc_month: Callable[[str], Path]
) -> None:
    dest = tmp_path / "cache" / file_name(MONTH)
    dest.parent.mkdir()
    dest.write_bytes(sample_bytes)  # another run placed it while this one downloaded
    bucket = FakeBucket({KEY: tlc_month("2023-02").read_bytes()})

    assert locate.fetch_from_bucket(bucket, KEY, dest) == dest

    assert dest.read_bytes() == sample_bytes
    assert list(dest.parent.iterdir()) == [dest]


def test_a_download_that_breaks_off_leaves_nothing(tmp_path: Path, sample_bytes: bytes) -> None:
    class BrokenBucket(FakeBucket):
        def download(self, key: str, dest: Path) -> None:
            dest.write_bytes(self.objects[key][:100])
            raise ConnectionResetError("the store went away")

    dest = tmp_path / "cache" / file_name(MONTH)
    with pytest.raises(ConnectionResetError):
        locate.fetch_from_bucket(BrokenBucket({KEY: sample_bytes}), KEY, dest)
    assert list(dest.parent.iterdir()) == []


def test_a_local_file_that_is_not_a_whole_month_is_never_landed(
    tmp_path: Path, data_dir: Path
) -> None:
    (data_dir / file_name(MONTH)).write_bytes(b"PAR1 cut short")
    bucket = FakeBucket()

    with pytest.raises(sources.InvalidParquetError):
        locate.ingest_months(
            [MONTH], settings_for(tmp_path, data_dir=data_dir), bucket, never_fetch
        )

    assert bucket.objects == {}
    assert ("upload", KEY) not in bucket.calls
