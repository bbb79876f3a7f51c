"""The local model cache: each version's files with their checksum, and which version was served.

Layout under the cache folder (PREDICT_MODEL_CACHE_DIR), shared by every worker of the service:

    <model>/entries/<version>-<run>/files/...        the version's files as the source wrote them
    <model>/entries/<version>-<run>/manifest.json    sha256 of every file, the checksum over
                                                     them, what the registry said of the version
    <model>/pointers/<alias>.json                    version, run id and checksum last served
    <model>/.staging-*/ , <model>/.trash-*/          downloads in progress, entries being deleted

Every write is atomic, so workers sharing the folder never see a half-written version: a
version is downloaded into a staging folder of its own and renamed into `entries/` once its
manifest is written (a rename onto an existing entry fails instead of clobbering it); a pointer
is written to a temporary file and renamed over the old one; an entry is renamed out of
`entries/` before it is deleted. A version is checked against its manifest each time it is
read, so a corrupt or truncated copy is refused (and removed), never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.predict.loaded import Downloaded, ModelMeta, VersionRef

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FILES = "files"
FORMAT = 1
# Staging and trash folders older than this belong to a process that died mid-way.
STALE_SECONDS = 3600
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class CacheError(Exception):
    """A cached version that is missing, incomplete or does not match its checksum."""


@dataclass(frozen=True)
class CachedVersion:
    """A version in the cache whose files matched their checksum when it was read."""

    path: Path
    model_dir: Path
    meta: ModelMeta
    checksum: str


@dataclass(frozen=True)
class Pointer:
    """The version last served under an alias."""

    version: str
    run_id: str | None
    checksum: str
    entry: str
    served_at: str

    def ref(self) -> VersionRef:
        return VersionRef(self.version, self.run_id)


def safe_name(text: str) -> str:
    """A file name for any model name, alias, version or run id (distinct texts stay distinct)."""
    slug = _UNSAFE.sub("_", text).strip("._")[:60] or "_"
    if slug == text:
        return slug
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def entry_name(ref: VersionRef) -> str:
    return f"{safe_name(ref.version)}-{safe_name(ref.run_id or 'none')}"


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def tree_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by path relative to it."""
    return {
        path.relative_to(folder).as_posix(): file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def checksum(digests: dict[str, str]) -> str:
    """One sha256 over the file names and their digests: the version's checksum."""
    sha = hashlib.sha256()
    for name in sorted(digests):
        sha.update(f"{name}\0{digests[name]}\n".encode())
    return sha.hexdigest()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


class ModelCache:
    """The cache of one model (all its aliases and versions) under `root`."""

    def __init__(self, root: Path, model_name: str, *, keep: int = 3) -> None:
        self.root = Path(root)
        self.model_name = model_name
        self.keep = keep
        self.folder = self.root / safe_name(model_name)
        self.entries = self.folder / "entries"
        self.pointers = self.folder / "pointers"

    def probe(self) -> None:
        """Create the folders and check they are writable (OSError otherwise)."""
        for folder in (self.entries, self.pointers):
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.folder):
            pass

    # -- versions ---------------------------------------------------------------------------

    def store(self, ref: VersionRef, fetch: Callable[[Path], Downloaded]) -> CachedVersion:
        """Download a version (`fetch` writes its files under the folder it is given) and put it
        in the cache atomically; a verified copy already there is used as it is."""
        found = self.find(ref)
        if found is not None:
            return found
        self.entries.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.folder))
        try:
            files = staging / FILES
            files.mkdir()
            downloaded = fetch(files)
            digests = tree_digests(files)
            model_dir = downloaded.model_dir.relative_to(files).as_posix()
            meta, total = downloaded.meta.to_json(), checksum(digests)
            manifest = {
                "format": FORMAT,
                "model": self.model_name,
                "meta": meta,
                "model_dir": model_dir,
                "files": digests,
                "checksum": total,
                "cached_at": datetime.now(UTC).isoformat(),
            }
            _write_json_atomic(staging / MANIFEST, manifest)
            final = self.entries / entry_name(ref)
            # What _verified would read back from the entry: its files were just hashed.
            ours = CachedVersion(
                path=final,
                model_dir=final / FILES / model_dir,
                meta=ModelMeta.from_json(meta),
                checksum=total,
            )
            return self._publish(staging, ours)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, staging: Path, ours: CachedVersion) -> CachedVersion:
        try:
            os.rename(staging, ours.path)
        except OSError:
            # Another worker published the same version first: theirs is as good as ours,
            # unless it is damaged, in which case ours replaces it.
            try:
                return self._verified(ours.path)
            except CacheError as error:
                logger.error("replacing a damaged cached version: %s", error)
                self._discard(ours.path)
                os.rename(staging, ours.path)
        return ours

    def find(self, ref: VersionRef) -> CachedVersion | None:
        """The cached copy of a version if there is a sound one; a damaged one is removed."""
        path = self.entries / entry_name(ref)
        if not path.is_dir():
            return None
        try:
            found = self._verified(path)
        except CacheError as error:
            logger.error("refusing the cached copy of version %s: %s", ref.version, error)
            self._discard(path)
            return None
        if found.meta.ref() != ref:
            logger.error("refusing %s: it holds version %s", path.name, found.meta.version)
            self._discard(path)
            return None
        return found

    def _verified(self, path: Path, expected: str | None = None) -> CachedVersion:
        """The entry at `path` if its files match its manifest (and `expected`, a checksum)."""
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            recorded: dict[str, str] = dict(manifest["files"])
            meta = ModelMeta.from_json(manifest["meta"])
            model_dir = path / FILES / str(manifest["model_dir"])
            actual = tree_digests(path / FILES)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CacheError(f"{path.name}: unreadable manifest or files ({error})") from error
        damaged = sorted(
            name for name in set(recorded) | set(actual) if recorded.get(name) != actual.get(name)
        )
        if damaged:
            raise CacheError(f"{path.name}: files differ from their checksums: {damaged[:5]}")
        total = checksum(actual)
        if total != manifest.get("checksum") or (expected is not None and total != expected):
            raise CacheError(f"{path.name}: checksum {total[:12]} is not the one recorded")
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: pruned last
        return CachedVersion(path=path, model_dir=model_dir, meta=meta, checksum=total)

    def _discard(self, path: Path) -> None:
        """Remove an entry: renamed away first, so no reader ever sees it half deleted."""
        trash = self.folder / f".trash-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(path, trash)
        except OSError:
            return  # gone already (another worker discarded it)
        shutil.rmtree(trash, ignore_errors=True)

    # -- pointers ---------------------------------------------------------------------------

    def point(self, alias: str, cached: CachedVersion) -> None:
        """Record that `alias` was served by this version (the cache's fallback for it)."""
        self.pointers.mkdir(parents=True, exist_ok=True)
        data = {
            "version": cached.meta.version,
            "run_id": cached.meta.run_id,
            "checksum": cached.checksum,
            "entry": cached.path.name,
            "served_at": datetime.now(UTC).isoformat(),
        }
        _write_json_atomic(self.pointers / f"{safe_name(alias)}.json", data)

    def pointer(self, alias: str) -> Pointer | None:
        return self._read_pointer(self.pointers / f"{safe_name(alias)}.json")

    @staticmethod
    def _read_pointer(path: Path) -> Pointer | None:
        try:
            data = json.loads(path.read_text())
            run_id = data.get("run_id")
            return Pointer(
                version=str(data["version"]),
                run_id=str(run_id) if run_id is not None else None,
                checksum=str(data["checksum"]),
                entry=str(data["entry"]),
                served_at=str(data.get("served_at", "")),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.error("ignoring the unreadable cache pointer %s: %s", path.name, error)
            return None

    def pointed(self, pointer: Pointer) -> CachedVersion:
        """The version a pointer names, checked against the checksum the pointer recorded."""
        path = self.entries / entry_name(pointer.ref())
        if not path.is_dir():
            raise CacheError(f"version {pointer.version} is no longer in the cache")
        try:
            return self._verified(path, expected=pointer.checksum)
        except CacheError:
            self._discard(path)
            raise

    # -- pruning ----------------------------------------------------------------------------

    def prune(self) -> list[str]:
        """Delete all but the `keep` most recently used versions (never one a pointer names)
        and leftovers of dead processes; return the names of the entries deleted."""
        pointers = map(self._read_pointer, self._pointer_files())
        protected = {entry_name(pointer.ref()) for pointer in pointers if pointer}
        try:
            entries = sorted(
                (path for path in self.entries.iterdir() if path.is_dir()),
                key=lambda path: path.stat().st_mtime,
                reverse=True,
            )
        except OSError:
            return []
        removed = []
        for path in entries[self.keep :]:
            if path.name not in protected:
                self._discard(path)
                removed.append(path.name)
        self._remove_stale_leftovers()
        return removed

    def _pointer_files(self) -> list[Path]:
        try:
            return list(self.pointers.glob("*.json"))
        except OSError:
            return []

    def _remove_stale_leftovers(self) -> None:
        cutoff = time.time() - STALE_SECONDS
        for path in self.folder.glob(".*"):
            with contextlib.suppress(OSError):
                if path.name.startswith((".staging-", ".trash-")) and path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
