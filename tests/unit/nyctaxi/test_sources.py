"""Data sources: local lookup, checksums, and downloads against a local HTTP server (loopback)."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from nyctaxi import sources
from nyctaxi.months import file_name
from tests.unit.nyctaxi.racing import run_at_once

MONTH = "2023-01"

# A response plan: for the n-th request (0-based), (status, body) or a callable doing the answer.
Plan = Callable[[int, BaseHTTPRequestHandler], None]


@contextmanager
def http_server(plan: Plan) -> Iterator[tuple[str, list[str]]]:
    """Serve plan on 127.0.0.1:<free port>; yields (base URL, list of requested paths)."""
    requests_seen: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with lock:
                index = len(requests_seen)
                requests_seen.append(self.path)
            plan(index, self)

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests_seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def answer(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"") -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(scope="module")
def month_bytes(tlc_month: Callable[[str], Path]) -> bytes:
    """A TLC-shaped Parquet file of MONTH (synthetic, tests/unit/tlc_shaped.py)."""
    return tlc_month(MONTH).read_bytes()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_download_retries_503_then_succeeds(tmp_path: Path, month_bytes: bytes) -> None:
    def plan(n: int, handler: BaseHTTPRequestHandler) -> None:
        answer(handler, 503, b"busy") if n < 2 else answer(handler, 200, month_bytes)

    dest = tmp_path / "raw" / file_name(MONTH)
    with http_server(plan) as (base, seen):
        result = sources.download(f"{base}/{file_name(MONTH)}", dest, backoff_seconds=0.01)
    assert result == dest
    assert len(seen) == 3
    assert dest.read_bytes() == month_bytes
    assert leftovers(dest.parent) == []


def test_download_month_builds_the_tlc_path(tmp_path: Path, month_bytes: bytes) -> None:
    with http_server(lambda n, h: answer(h, 200, month_bytes)) as (base, seen):
        path = sources.download_month(MONTH, tmp_path, base_url=f"{base}/trip-data")
    assert seen == [f"/trip-data/{file_name(MONTH)}"]
    assert path == tmp_path / file_name(MONTH)
    assert sources.validate_parquet(path) == len(pd.read_parquet(path))


def test_404_fails_at_once_and_creates_nothing(tmp_path: Path) -> None:
    dest = tmp_path / file_name("2031-07")
    with (
        http_server(lambda n, h: answer(h, 404, b"nope")) as (base, seen),
        pytest.raises(sources.RemoteFileNotFoundError, match="404.*not published"),
    ):
        sources.download(f"{base}/{dest.name}", dest, backoff_seconds=0.01)
    assert len(seen) == 1  # not retried
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_persistent_503_gives_up_after_the_attempts(tmp_path: Path) -> None:
    dest = tmp_path / file_name(MONTH)
    with (
        http_server(lambda n, h: answer(h, 503)) as (base, seen),
        pytest.raises(sources.DownloadError, match="after 3 attempts.*503"),
    ):
        sources.download(f"{base}/x.parquet", dest, attempts=3, backoff_seconds=0.01)
    assert len(seen) == 3
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_corrupt_body_fails_clearly_and_overwrites_nothing(tmp_path: Path) -> None:
    dest = tmp_path / file_name(MONTH)
    dest.write_bytes(b"the previous good file")
    with (
        http_server(lambda n, h: answer(h, 200, b"<html>Access denied</html>")) as (base, _),
        pytest.raises(sources.InvalidParquetError, match="not a readable Parquet file"),
    ):
        sources.download(f"{base}/{dest.name}", dest, backoff_seconds=0.01)
    assert dest.read_bytes() == b"the previous good file"
    assert leftovers(tmp_path) == []


def test_parquet_without_the_tlc_columns_is_rejected(tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pd.DataFrame({"PULocationID": [1, 2], "fare_amount": [3.5, 7.0]}).to_parquet(other)
    body = other.read_bytes()
    dest = tmp_path / "out" / file_name(MONTH)
    with (
        http_server(lambda n, h: answer(h, 200, body)) as (base, _),
        pytest.raises(sources.InvalidParquetError, match="lacks the columns") as error,
    ):
        sources.download(f"{base}/{dest.name}", dest)
    assert "lpep_pickup_datetime" in str(error.value)
    assert not dest.exists()


def test_truncated_body_is_retried(tmp_path: Path, month_bytes: bytes) -> None:
    def plan(n: int, handler: BaseHTTPRequestHandler) -> None:
        if n == 0:  # promise the whole file, send half, hang up
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(month_bytes)))
            handler.end_headers()
            handler.wfile.write(month_bytes[: len(month_bytes) // 2])
            handler.close_connection = True
        else:
            answer(handler, 200, month_bytes)

    dest = tmp_path / file_name(MONTH)
    with http_server(plan) as (base, seen):
        sources.download(f"{base}/{dest.name}", dest, backoff_seconds=0.01)
    assert len(seen) == 2
    assert dest.read_bytes() == month_bytes


def test_a_server_slower_than_the_timeout_is_retried(tmp_path: Path, month_bytes: bytes) -> None:
    release = threading.Event()

    def plan(n: int, handler: BaseHTTPRequestHandler) -> None:
        if n == 0:
            release.wait(timeout=10)  # stalls until the test is over; the client times out
            return
        answer(handler, 200, month_bytes)

    dest = tmp_path / file_name(MONTH)
    try:
        with http_server(plan) as (base, seen):
            sources.download(f"{base}/{dest.name}", dest, timeout=0.3, backoff_seconds=0.01)
            assert len(seen) == 2
    finally:
        release.set()
    assert dest.read_bytes() == month_bytes


def test_find_local(tmp_path: Path, tlc_month: Callable[[str], Path]) -> None:
    data_dir = tmp_path / "tlc"
    data_dir.mkdir()
    shutil.copy(tlc_month(MONTH), data_dir / file_name(MONTH))
    assert sources.find_local(MONTH, data_dir) == data_dir / file_name(MONTH)
    assert sources.find_local("2031-07", data_dir) is None
    assert sources.find_local(MONTH, tmp_path / "no-such-folder") is None
    assert sources.find_local(MONTH, None) is None


# The published checksums and row counts of whole months: tests/integration/nyctaxi/test_sources.py


def test_sha256_reads_files_larger_than_a_chunk(tmp_path: Path, month_bytes: bytes) -> None:
    path = tmp_path / "big.parquet"
    path.write_bytes(month_bytes * (2 * (1 << 20) // len(month_bytes) + 1))  # > 2 chunks
    assert sources.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("month", ["2023-01", "2023-02"])
def test_validate_parquet_counts_rows_of_tlc_shaped_files(
    month: str, tlc_month: Callable[[str], Path]
) -> None:
    # both dtype generations (int64 zone IDs up to 2023-01, int32 after)
    path = tlc_month(month)
    assert sources.validate_parquet(path) == len(pd.read_parquet(path)) > 300


def test_month_not_available_names_month_places_and_remedies() -> None:
    looked_in = [
        "local folder /data/tlc: no green_tripdata_2031-07.parquet",
        "s3://nyctaxi-raw/raw/green/2031-07.parquet: no such key",
    ]
    error = sources.MonthNotAvailableError("2031-07", looked_in)
    message = str(error)
    assert "2031-07 is not available" in message
    for place in looked_in:
        assert place in message
    assert "TAXI_DATA_DIR" in message
    assert "raw/green/2031-07.parquet" in message
    assert "green_tripdata_2031-07.parquet" in message
    assert "allow downloads" in message
    assert isinstance(error, FileNotFoundError)
    assert error.month.year == 2031


def test_two_downloads_of_one_file_at_once_both_end_with_the_whole_file(
    tmp_path: Path, month_bytes: bytes
) -> None:
    both_sending = threading.Barrier(2, timeout=10)

    def plan(n: int, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(month_bytes)))
        handler.end_headers()
        half = len(month_bytes) // 2
        handler.wfile.write(month_bytes[:half])
        handler.wfile.flush()
        both_sending.wait()  # both copies are half-written beside dest at this point
        handler.wfile.write(month_bytes[half:])

    dest = tmp_path / file_name(MONTH)
    with http_server(plan) as (base, seen):
        url = f"{base}/{dest.name}"
        results = run_at_once(lambda: sources.download(url, dest, backoff_seconds=0.01))
    assert len(seen) == 2
    assert results == [dest, dest]
    assert dest.read_bytes() == month_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]  # no temp file left


def test_staging_paths_are_unique_hidden_and_removed(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / file_name(MONTH)
    with sources.staging_path(dest) as first, sources.staging_path(dest) as second:
        assert first != second
        assert first.parent == second.parent == dest.parent
        assert first.name.startswith(f".{dest.name}.")
        assert first.name.endswith(sources.STAGING_SUFFIX)
        assert sources.find_local(MONTH, dest.parent) is None  # never taken for the month
    assert list(dest.parent.iterdir()) == []


def test_the_first_complete_copy_wins(tmp_path: Path) -> None:
    dest = tmp_path / file_name(MONTH)
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"first copy")
    second.write_bytes(b"second copy")

    assert sources.publish(first, dest) is True
    assert sources.publish(second, dest) is False
    assert dest.read_bytes() == b"first copy"


def test_publish_without_hard_links_replaces_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(sources.os, "link", no_links)
    dest = tmp_path / file_name(MONTH)
    dest.write_bytes(b"old")
    staged = tmp_path / "staged"
    staged.write_bytes(b"new")

    assert sources.publish(staged, dest) is True
    assert dest.read_bytes() == b"new"
    assert not staged.exists()


def test_a_bucket_error_names_bucket_key_and_endpoint_without_credentials() -> None:
    error = sources.BucketError(
        "upload",
        "nyctaxi-raw",
        "raw/green/2023-01.parquet",
        "http://minio-user:minio-secret@minio:9000",
        "EndpointConnectionError: Could not connect",
        transient=True,
        attempt="attempt 3 of 3",
    )
    message = str(error)
    assert message == (
        "S3 store unreachable: could not upload s3://nyctaxi-raw/raw/green/2023-01.parquet at "
        "http://minio:9000 (attempt 3 of 3): EndpointConnectionError: Could not connect"
    )
    assert "minio-secret" not in message and "minio-user" not in message
    assert error.transient
    # Prefect may pickle a failed task's exception: it must come back the same.
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.bucket, again.key, again.transient) == (
        message,
        "nyctaxi-raw",
        "raw/green/2023-01.parquet",
        True,
    )


def test_a_refused_bucket_request_says_so_and_names_the_default_endpoint() -> None:
    error = sources.BucketError("look up", "b", "k", None, "AccessDenied", transient=False)
    assert str(error) == (
        "S3 request refused: could not look up s3://b/k at the AWS default endpoint: AccessDenied"
    )


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://user:pw@s3.example:8443/path", "https://s3.example:8443/path"),
        ("http://user@[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_public_url_drops_user_and_password(url: str, public: str) -> None:
    assert sources.public_url(url) == public


def test_redact_replaces_every_secret() -> None:
    assert sources.redact("key s3cr3t and s3cr3t", ["s3cr3t", None, ""]) == "key *** and ***"
