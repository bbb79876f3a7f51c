"""Storage faults, drilled for real: the S3 store killed while the ingest flow runs.

The store is moto's S3 server with its request journal on disk (`JournaledS3`): killed with
SIGKILL and started again on the same port, it replays the journal and comes back with every
request it had received whole, as a durable store (MinIO) would after a crash. Without the journal
moto forgets everything and "no partial object after the restart" would prove nothing.

The ingest flow runs in this process against the session's Prefect server, so a test can kill
the store at an exact point (halfway through an upload's body, between the lookup and the
download) instead of guessing with timing.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters

from flows.ingest import ingest_flow
from nyctaxi.months import file_name
from nyctaxi.sources import BucketError
from tests.servers import VENV_BIN, S3Endpoint, free_port, http_ok, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

Measure = Callable[[str], None]


class JournaledS3:
    """moto's S3 server journaling every request it receives whole (moto's recorder), so that a
    SIGKILL and a start on the same port give back what it had accepted, and nothing else."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.endpoint = S3Endpoint(url=f"http://127.0.0.1:{free_port()}")
        self.journal = root / "s3-journal.jsonl"
        self.log_file = root / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        port = self.endpoint.url.rsplit(":", 1)[1]
        env = {
            **os.environ,
            "MOTO_ENABLE_RECORDING": "true",
            "MOTO_RECORDER_FILEPATH": str(self.journal),
        }
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", port],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_until(
            lambda: http_ok(f"{self.endpoint.url}/moto-api/"),
            timeout=60,
            what="moto S3 server",
            log_file=self.log_file,
        )
        if self.journal.exists() and self.journal.stat().st_size:
            replay = f"{self.endpoint.url}/moto-api/recorder/replay-recording"
            with urllib.request.urlopen(urllib.request.Request(replay, method="POST"), timeout=60):
                pass

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: no chance to finish anything."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint.url,
            aws_access_key_id=self.endpoint.access_key,
            aws_secret_access_key=self.endpoint.secret_key,
            region_name=self.endpoint.region,
        )

    def objects(self, bucket: str) -> dict[str, bytes]:
        client = self.client()
        listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {
            o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing
        }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JournaledS3]:
    s3 = JournaledS3(tmp_path)
    s3.start()
    try:
        yield s3
    finally:
        s3.kill()


@pytest.fixture
def bucket(
    prefect_api: str, store: JournaledS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A bucket on the journaled store, its two blocks, and the ingest's environment."""
    name = f"raw-{uuid.uuid4().hex[:10]}"
    store.client().create_bucket(Bucket=name)
    credentials = AwsCredentials(
        aws_access_key_id=store.endpoint.access_key,
        aws_secret_access_key=store.endpoint.secret_key,
        region_name=store.endpoint.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=store.endpoint.url),
    )
    credentials.save(f"{name}-creds", overwrite=True)
    S3Bucket(bucket_name=name, credentials=credentials).save(name, overwrite=True)
    monkeypatch.setenv("S3_BUCKET_BLOCK", name)
    monkeypatch.setenv("NYCTAXI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TLC_ALLOW_DOWNLOAD", "false")
    return name


def task_runs(flow_run_id: uuid.UUID, prefix: str) -> list[TaskRun]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [run for run in runs if run.name.startswith(prefix)]


def failed_task_run(flow_run_id: uuid.UUID, prefix: str) -> TaskRun:
    """The failed task run, once the server has recorded it (states arrive as events)."""
    found: list[TaskRun] = []

    def recorded() -> bool:
        found[:] = [r for r in task_runs(flow_run_id, prefix) if r.state and r.state.is_failed()]
        return bool(found)

    wait_until(recorded, timeout=30, what=f"Failed state of {prefix}")
    return found[-1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def only_in_bucket(
    month: str,
    bucket: str,
    store: JournaledS3,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, bytes, Path]:
    """Put the month in the bucket and nowhere local; returns its key, its bytes and the
    download cache the ingest will fetch it into."""
    key = f"raw/green/{month}.parquet"
    body = (data_dir / file_name(month)).read_bytes()
    store.client().put_object(Bucket=bucket, Key=key, Body=body)
    empty = tmp_path / "no-local-months"
    empty.mkdir()
    monkeypatch.setenv("TAXI_DATA_DIR", str(empty))
    return key, body, tmp_path / "home" / "cache" / "raw"


def test_store_killed_mid_upload_fails_clearly_lands_nothing_partial_and_a_rerun_completes(
    bucket: str,
    store: JournaledS3,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    measurement: Measure,
) -> None:
    monkeypatch.setenv("TAXI_DATA_DIR", str(data_dir))
    first_key, cut_key = "raw/green/2023-01.parquet", "raw/green/2023-02.parquet"
    size = (data_dir / file_name("2023-02")).stat().st_size
    killed_at: list[float] = []
    sent = [0]
    listed_before_kill: list[str] = []
    upload = S3Bucket.upload_from_path

    def kill_halfway(bytes_transferred: int) -> None:
        sent[0] += bytes_transferred
        if not killed_at and sent[0] >= size // 2:
            # What the bucket shows while the body is half sent...
            listed_before_kill.extend(store.objects(bucket))
            store.kill()  # ...and the store dies before it can receive the rest.
            killed_at.append(time.monotonic())

    def upload_killed_halfway(self: S3Bucket, from_path: Any, to_path: Any = None, **kw: Any):
        if to_path == cut_key and not killed_at:
            kw["Callback"] = kill_halfway
        return upload(self, from_path, to_path, **kw)

    monkeypatch.setattr(S3Bucket, "upload_from_path", upload_killed_halfway)
    state = ingest_flow(["2023-01", "2023-02"], require_bucket=True, return_state=True)
    failed_after = time.monotonic() - killed_at[0]

    assert state.is_failed(), state
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BucketError), repr(error)
    message = str(error)
    assert f"s3://{bucket}/{cut_key}" in message
    assert store.endpoint.url in message
    assert "attempt 3 of 3" in message
    assert store.endpoint.secret_key not in message
    assert message in (state.message or "")  # what the UI and the notification show
    attempts = failed_task_run(state.state_details.flow_run_id, "land_in_bucket").run_count
    assert attempts == 3
    assert sent[0] < size  # the body was cut short
    assert listed_before_kill == [first_key]

    down_at = time.monotonic()
    store.start()
    back_after = time.monotonic() - down_at
    landed = store.objects(bucket)
    # The journal kept what the store accepted (the first month) and no trace of the second.
    assert set(landed) == {first_key}
    assert not store.client().list_multipart_uploads(Bucket=bucket).get("Uploads")

    monkeypatch.setattr(S3Bucket, "upload_from_path", upload)
    rerun = ingest_flow(["2023-01", "2023-02"], require_bucket=True)
    landed = store.objects(bucket)
    assert set(landed) == {first_key, cut_key}
    assert sha256(landed[cut_key]) == rerun[1].sha256
    assert [m.found_in for m in rerun] == ["local", "local"]
    measurement(
        f"S3 killed mid-upload: flow Failed {failed_after:.1f}s after the kill, "
        f"{attempts} task attempts (botocore: 3 tries each); store back and "
        f"replayed in {back_after:.1f}s; rerun completed"
    )
    measurement(f"  failure message: {message[:160]}...")


def test_a_store_that_comes_back_within_the_retries_lets_the_run_complete(
    bucket: str,
    store: JournaledS3,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    measurement: Measure,
) -> None:
    monkeypatch.setenv("TAXI_DATA_DIR", str(data_dir))
    key = "raw/green/2023-02.parquet"
    size = (data_dir / file_name("2023-02")).stat().st_size
    killed_at: list[float] = []
    restarts: list[threading.Thread] = []
    sent = [0]
    upload = S3Bucket.upload_from_path

    def kill_halfway(bytes_transferred: int) -> None:
        sent[0] += bytes_transferred
        if not killed_at and sent[0] >= size // 2:
            store.kill()
            killed_at.append(time.monotonic())

    def upload_cut_once(self: S3Bucket, from_path: Any, to_path: Any = None, **kw: Any):
        if killed_at:
            return upload(self, from_path, to_path, **kw)
        try:
            return upload(self, from_path, to_path, Callback=kill_halfway, **kw)
        finally:  # the first attempt failed: the store restarts while the task waits to retry
            restarts.append(threading.Thread(target=store.start))
            restarts[0].start()

    monkeypatch.setattr(S3Bucket, "upload_from_path", upload_cut_once)
    [month] = ingest_flow(["2023-02"], require_bucket=True)
    completed_after = time.monotonic() - killed_at[0]
    restarts[0].join(timeout=60)

    assert month.bucket_key == key
    assert sha256(store.objects(bucket)[key]) == month.sha256
    measurement(
        "S3 killed mid-upload, restarted after the task's first failed attempt: flow "
        f"Completed {completed_after:.1f}s after the kill (object whole, same sha256)"
    )


def test_store_killed_before_a_download_leaves_no_local_file_and_a_rerun_completes(
    bucket: str,
    store: JournaledS3,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    measurement: Measure,
) -> None:
    key, body, cache = only_in_bucket("2023-03", bucket, store, data_dir, tmp_path, monkeypatch)
    killed_at: list[float] = []
    download = S3Bucket.download_object_to_path

    def download_after_the_store_died(self: S3Bucket, from_path: str, to_path: Any, **kw: Any):
        if not killed_at:  # the lookup found the key; the store dies before the download
            store.kill()
            killed_at.append(time.monotonic())
        return download(self, from_path, to_path, **kw)

    monkeypatch.setattr(S3Bucket, "download_object_to_path", download_after_the_store_died)
    state = ingest_flow(["2023-03"], require_bucket=True, return_state=True)
    failed_after = time.monotonic() - killed_at[0]

    assert state.is_failed(), state
    message = str(state.result(raise_on_failure=False))
    assert f"could not download s3://{bucket}/{key} at {store.endpoint.url}" in message
    assert "attempt 3 of 3" in message
    assert not cache.exists() or list(cache.iterdir()) == []  # no month, no temp file

    store.start()
    monkeypatch.setattr(S3Bucket, "download_object_to_path", download)
    [month] = ingest_flow(["2023-03"], require_bucket=True)
    assert month.found_in == "s3"
    assert month.sha256 == sha256(body)
    assert [p.name for p in cache.iterdir()] == [file_name("2023-03")]
    measurement(
        f"S3 killed before a download: flow Failed {failed_after:.1f}s after the kill "
        "(3 task attempts), nothing written locally; rerun completed"
    )


def test_two_runs_fetching_one_month_at_once_end_with_one_whole_file(
    bucket: str,
    store: JournaledS3,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    measurement: Measure,
) -> None:
    _, body, cache = only_in_bucket("2023-04", bucket, store, data_dir, tmp_path, monkeypatch)
    both_downloaded = threading.Barrier(2, timeout=60)
    download = S3Bucket.download_object_to_path
    seen_in_folder: list[list[str]] = []

    def download_then_wait(self: S3Bucket, from_path: str, to_path: Any, **kw: Any):
        path = download(self, from_path, to_path, **kw)
        if both_downloaded.wait() == 0:  # both copies complete, neither in place yet
            seen_in_folder.append(sorted(p.name for p in cache.iterdir()))
        both_downloaded.wait()
        return path

    monkeypatch.setattr(S3Bucket, "download_object_to_path", download_then_wait)
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(ingest_flow(["2023-04"], require_bucket=True))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            results.append(error)

    started = time.monotonic()
    # Each thread gets a copy of this context: the Prefect settings point at the test server.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(run,)) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started

    assert len(results) == 2 and all(isinstance(r, list) for r in results), results
    assert [r[0].found_in for r in results] == ["s3", "s3"]
    assert {r[0].sha256 for r in results} == {sha256(body)}
    [staged] = seen_in_folder
    assert len(staged) == 2 and file_name("2023-04") not in staged  # two private temp copies
    assert [p.name for p in cache.iterdir()] == [file_name("2023-04")]  # one file, no leftovers
    assert (cache / file_name("2023-04")).read_bytes() == body
    measurement(f"two ingest runs fetching one month at once: both completed in {elapsed:.1f}s")


def test_an_interrupted_multipart_upload_never_shows_an_object(
    bucket: str, store: JournaledS3, tmp_path: Path, measurement: Measure
) -> None:
    # The months are one PUT each (below boto3's 8 MiB multipart threshold); a bigger file goes
    # up in parts, and S3 shows it only once CompleteMultipartUpload is accepted.
    part = 5 * 1024 * 1024  # S3's smallest part
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * part + 1024))
    key = "raw/green/big.bin"
    sent = [0]

    def kill_in_second_part(bytes_transferred: int) -> None:
        sent[0] += bytes_transferred
        if sent[0] > part + part // 2 and store.process and store.process.poll() is None:
            store.kill()  # the first part was acknowledged (one part at a time)

    config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=1)
    block = S3Bucket.load(bucket)
    with pytest.raises((BotoCoreError, Boto3Error)):
        block.upload_from_path(big, key, Config=config, Callback=kill_in_second_part)

    store.start()
    uploads = store.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert key not in store.objects(bucket)
    # The store holds the unfinished upload (its abort could not reach a dead store), invisible.
    assert [u["Key"] for u in uploads] == [key]
    measurement(
        "S3 killed during a multipart upload: no object visible after the restart; "
        f"{len(uploads)} unfinished upload left for the store's stale-upload cleanup"
    )
