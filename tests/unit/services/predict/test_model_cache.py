"""The local model cache: atomic writes, checksums checked on every read, pointers, pruning."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from services.predict import model_cache
from services.predict.loaded import Downloaded, ModelMeta, VersionRef
from services.predict.model_cache import CacheError, ModelCache, entry_name, safe_name


def fetcher(ref: VersionRef, payload: bytes = b"weights", calls: list[str] | None = None):  # noqa: ANN201
    """A download that writes a model folder with two files."""

    def fetch(into: Path) -> Downloaded:
        if calls is not None:
            calls.append(ref.version)
        model_dir = into / "model"
        (model_dir / "code").mkdir(parents=True)
        (model_dir / "MLmodel").write_text(f"version: {ref.version}\n")
        (model_dir / "code" / "weights.bin").write_bytes(payload)
        return Downloaded(model_dir, ModelMeta(ref.version, ref.run_id, {"rmse": 5.0}, "src"))

    return fetch


@pytest.fixture
def cache(tmp_path: Path) -> ModelCache:
    cache = ModelCache(tmp_path / "cache", "nyc taxi/duration", keep=2)
    cache.probe()
    return cache


V1 = VersionRef("1", "run-a")
V2 = VersionRef("2", "run-b")


def test_a_stored_version_reads_back_with_its_meta_and_checksum(cache: ModelCache) -> None:
    stored = cache.store(V1, fetcher(V1))
    assert stored.meta == ModelMeta("1", "run-a", {"rmse": 5.0}, "src")
    assert (stored.model_dir / "MLmodel").read_text() == "version: 1\n"
    manifest = json.loads((stored.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model/MLmodel", "model/code/weights.bin"}
    assert manifest["checksum"] == stored.checksum and len(stored.checksum) == 64
    found = cache.find(V1)
    assert found is not None and found.checksum == stored.checksum


def test_a_cached_version_is_not_downloaded_again(cache: ModelCache) -> None:
    calls: list[str] = []
    cache.store(V1, fetcher(V1, calls=calls))
    cache.store(V1, fetcher(V1, calls=calls))
    assert calls == ["1"]


def test_the_same_version_number_of_another_run_is_another_entry(cache: ModelCache) -> None:
    recreated = VersionRef("1", "run-z")
    assert cache.store(V1, fetcher(V1)).path != cache.store(recreated, fetcher(recreated)).path
    assert cache.find(recreated).meta.run_id == "run-z"  # type: ignore[union-attr]


def test_a_failed_download_leaves_nothing_behind(cache: ModelCache) -> None:
    def failing(into: Path) -> Downloaded:
        (into / "half-written").write_bytes(b"x" * 100)
        raise ConnectionError("reset mid-download")

    with pytest.raises(ConnectionError):
        cache.store(V1, failing)
    assert cache.find(V1) is None
    assert list(cache.folder.glob(".staging-*")) == []
    assert list(cache.entries.iterdir()) == []


def test_readers_never_see_a_half_written_version(cache: ModelCache) -> None:
    # While the download runs, the version is invisible; it appears whole with its manifest.
    seen_during: list[object] = []

    def slow(into: Path) -> Downloaded:
        downloaded = fetcher(V1)(into)
        seen_during.append(cache.find(V1))
        return downloaded

    cache.store(V1, slow)
    assert seen_during == [None]
    assert cache.find(V1) is not None


def test_two_workers_storing_the_same_version_at_once_both_get_a_sound_copy(
    cache: ModelCache, tmp_path: Path
) -> None:
    other = ModelCache(cache.root, cache.model_name)  # another worker, same folder
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def racing(name: str, worker: ModelCache) -> None:
        def fetch(into: Path) -> Downloaded:
            downloaded = fetcher(V1)(into)
            barrier.wait(5)  # both downloads done before either publishes
            return downloaded

        results[name] = worker.store(V1, fetch).checksum

    threads = [
        threading.Thread(target=racing, args=("a", cache)),
        threading.Thread(target=racing, args=("b", other)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results["a"] == results["b"]
    assert [path.name for path in cache.entries.iterdir()] == [entry_name(V1)]
    assert list(cache.folder.glob(".staging-*")) == []


def test_a_damaged_file_is_refused_and_removed(
    cache: ModelCache, caplog: pytest.LogCaptureFixture
) -> None:
    stored = cache.store(V1, fetcher(V1))
    (stored.model_dir / "code" / "weights.bin").write_bytes(b"weightz")
    assert cache.find(V1) is None
    assert "files differ from their checksums" in caplog.text
    assert "model/code/weights.bin" in caplog.text
    assert not stored.path.exists()


@pytest.mark.parametrize("damage", ["extra file", "missing file", "manifest"])
def test_other_damage_is_refused_too(cache: ModelCache, damage: str) -> None:
    stored = cache.store(V1, fetcher(V1))
    if damage == "extra file":
        (stored.model_dir / "planted.py").write_text("import os")
    elif damage == "missing file":
        (stored.model_dir / "MLmodel").unlink()
    else:
        (stored.path / "manifest.json").write_text("{not json")
    assert cache.find(V1) is None


def test_a_pointer_names_the_version_last_served(cache: ModelCache) -> None:
    assert cache.pointer("champion") is None
    stored = cache.store(V1, fetcher(V1))
    cache.point("champion", stored)
    pointer = cache.pointer("champion")
    assert pointer is not None and pointer.ref() == V1 and pointer.checksum == stored.checksum
    assert cache.pointed(pointer).model_dir == stored.model_dir
    cache.point("champion", cache.store(V2, fetcher(V2)))
    assert cache.pointer("champion").ref() == V2  # type: ignore[union-attr]
    assert list(cache.pointers.glob(".*")) == []  # no temporary file left


def test_a_pointed_version_whose_files_changed_is_refused(cache: ModelCache) -> None:
    stored = cache.store(V1, fetcher(V1))
    cache.point("champion", stored)
    (stored.model_dir / "MLmodel").write_text("version: 666\n")
    pointer = cache.pointer("champion")
    assert pointer is not None
    with pytest.raises(CacheError, match="differ from their checksums"):
        cache.pointed(pointer)


def test_a_pointed_version_rewritten_consistently_still_fails_the_pointer_checksum(
    cache: ModelCache,
) -> None:
    # Files and manifest replaced together (another model under the same name): the checksum
    # recorded by the pointer no longer matches.
    cache.point("champion", cache.store(V1, fetcher(V1)))
    stored = cache.find(V1)
    assert stored is not None
    os.rename(stored.path, cache.folder / "aside")
    cache.store(V1, fetcher(V1, payload=b"other weights"))
    with pytest.raises(CacheError, match="not the one recorded"):
        cache.pointed(cache.pointer("champion"))  # type: ignore[arg-type]


def test_an_unreadable_pointer_is_no_pointer(
    cache: ModelCache, caplog: pytest.LogCaptureFixture
) -> None:
    (cache.pointers / "champion.json").write_text("{")
    assert cache.pointer("champion") is None
    assert "unreadable cache pointer" in caplog.text


def test_prune_keeps_the_newest_and_every_pointed_version(cache: ModelCache) -> None:
    refs = [VersionRef(str(n), f"run-{n}") for n in range(1, 6)]
    for age, ref in enumerate(refs):
        stored = cache.store(ref, fetcher(ref))
        os.utime(stored.path, (1_000_000 + age, 1_000_000 + age))
        if ref.version == "1":
            cache.point("champion", stored)
            os.utime(stored.path, (1_000_000, 1_000_000))  # the oldest of all
    removed = cache.prune()
    assert sorted(removed) == [entry_name(refs[1]), entry_name(refs[2])]
    left = sorted(path.name for path in cache.entries.iterdir())
    assert left == sorted(entry_name(ref) for ref in (refs[0], refs[3], refs[4]))
    assert cache.pointed(cache.pointer("champion")).meta.version == "1"  # type: ignore[arg-type]


def test_prune_removes_leftovers_of_dead_processes_only_when_stale(cache: ModelCache) -> None:
    stale = cache.folder / ".staging-dead"
    fresh = cache.folder / ".staging-alive"
    for folder in (stale, fresh):
        folder.mkdir()
    old = model_cache.time.time() - model_cache.STALE_SECONDS - 10
    os.utime(stale, (old, old))
    cache.prune()
    assert not stale.exists() and fresh.exists()


def test_names_become_safe_distinct_file_names() -> None:
    assert safe_name("champion") == "champion"
    assert "/" not in safe_name("../../etc") and safe_name("../../etc") != safe_name("etc")
    assert safe_name("a/b") != safe_name("a_b")


def test_probe_fails_on_a_folder_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        ModelCache(blocker, "m").probe()
