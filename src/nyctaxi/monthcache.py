"""The cleaned-month cache: one key for both runners, a folder of files for the in-process one.

The training flow caches `prepare_month` in Prefect's result store under `cache_key`; the
in-process training CLI has no Prefect, so it keeps the same entries as files here. The key holds
everything a cleaned month depends on and nothing else: the file's content, the cleaning code and
the libraries that read and pickle the frame. Never the role (train or validation) a run gives it.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import tempfile
from importlib.metadata import version as package_version
from pathlib import Path

from nyctaxi import cleaning
from nyctaxi.codehash import code_digest
from nyctaxi.config import PipelineSettings
from nyctaxi.locate import IngestedMonth

logger = logging.getLogger(__name__)


@functools.cache
def cleaning_fingerprint() -> str:
    """The cleaning code this process runs (with every library module it imports) and the
    libraries that read and pickle the frame: fixed for the life of the process."""
    libraries = "-".join(f"{name}{package_version(name)}" for name in ("pandas", "pyarrow"))
    return f"{code_digest(cleaning)[:16]}-{libraries}"


def cache_key(month: str, sha256: str) -> str:
    """The cache key of one cleaned month file."""
    return f"prepare-{month}-{sha256}-{cleaning_fingerprint()}"


def cache_folder(settings: PipelineSettings) -> Path:
    """Where the in-process runner keeps cleaned months: local state, never the cwd."""
    return settings.nyctaxi_home / "cache" / "cleaned"


def prepare_ingested(ingested: IngestedMonth) -> cleaning.PreparedMonth:
    """Read and clean an ingested month (uncached)."""
    return cleaning.prepare_month(Path(ingested.path), ingested.month, ingested.sha256)


class CleanedMonthCache:
    """Cleaned months as pickle files in one folder, named by `cache_key`.

    The folder is the user's own state (NYCTAXI_HOME), trusted like Prefect's result store; an
    entry that cannot be read is prepared again and rewritten."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, ingested: IngestedMonth) -> Path:
        return self.folder / f"{cache_key(ingested.month, ingested.sha256)}.pickle"

    def prepare(self, ingested: IngestedMonth) -> cleaning.PreparedMonth:
        """The cached cleaned month, or prepare it and cache it."""
        path = self.path(ingested)
        cached = self._read(path)
        if cached is not None:
            logger.info("%s: cleaned month from the cache (%s)", ingested.month, path.name)
            return cached
        prepared = prepare_ingested(ingested)
        self._write(path, prepared)
        return prepared

    @staticmethod
    def _read(path: Path) -> cleaning.PreparedMonth | None:
        try:
            with path.open("rb") as handle:
                prepared = pickle.load(handle)
        except FileNotFoundError:
            return None
        except Exception as error:  # noqa: BLE001 - truncated or stale: prepare it again
            logger.warning("ignoring unreadable cache entry %s: %s", path, error)
            return None
        return prepared if isinstance(prepared, cleaning.PreparedMonth) else None

    def _write(self, path: Path, prepared: cleaning.PreparedMonth) -> None:
        """Write to a temporary file and rename it: a reader never sees half an entry."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump(prepared, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
