"""The served model: loaded in the background, swapped atomically when the alias moves.

Each process (each gunicorn worker) has one `ModelHolder` with its own poller thread. A request
reads `holder.current` once and uses that `LoadedModel` for the prediction and the response, so
a swap (one reference assignment) never mixes two versions in one response and never fails one.

Through outages (see README, "Serving through outages"):
- every version is loaded from the local model cache (model_cache.py): downloaded there once,
  checked against its checksum each time it is read; the cache remembers which version each
  alias was last served by;
- a worker with no model yet whose registry does not answer (refused, timed out) loads that
  version from the cache and says so (`origin: cache`); when the registry answers again the
  worker follows the alias as usual (a swap, or just a confirmation of the cached version);
- a version that fails to download (registry reachable), to load or to warm up is refused: the
  current model stays, and the version is retried with exponential backoff (backoff.py), each
  attempt logged and, on each doubling of the attempts, announced (`notify`: a Prefect event).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from services.predict.backoff import Refusal, Refusals, worth_notifying
from services.predict.loaded import (
    AliasNotFound,
    LoadedModel,
    ModelMeta,
    ModelSource,
    Origin,
    RegistryUnreachable,
    RidePredictor,
    VersionRef,
    warm_up,
)
from services.predict.model_cache import CachedVersion, CacheError, ModelCache
from services.predict.redact import redact, short_reason

__all__ = [
    "AliasNotFound",
    "LoadedModel",
    "ModelHolder",
    "ModelSource",
    "RegistryUnreachable",
    "RidePredictor",
    "SwapListener",
    "VersionRef",
    "warm_up",
]

logger = logging.getLogger(__name__)

SwapListener = Callable[[LoadedModel | None, LoadedModel], None]
RefusalListener = Callable[[Refusal], None]
RegistryState = Literal["unknown", "reachable", "unreachable", "error"]
# What counts as "the registry does not answer" (the cache may stand in), besides the
# source's own RegistryUnreachable.
_UNREACHABLE = (RegistryUnreachable, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class RegistryStatus:
    state: RegistryState = "unknown"
    checked_at: datetime | None = None  # last time it was asked
    answered_at: datetime | None = None  # last time it answered

    def describe(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "status": self.state,
            "checked_at": iso(self.checked_at),
            "answered_at": iso(self.answered_at),
        }


class _Failed(Exception):
    """A version that failed at one stage (download, load, warm-up)."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error


@contextlib.contextmanager
def _stage(name: str, passing: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Any error in the block (but those `passing`) as a failure of the version at `name`."""
    try:
        yield
    except passing:
        raise
    except Exception as error:  # noqa: BLE001 - whatever it is, the version is refused
        raise _Failed(name, error) from error


class ModelHolder:
    """Holds the current model; a daemon thread keeps it in step with the registry alias."""

    def __init__(
        self,
        source: ModelSource,
        *,
        reload_interval: float,
        retry_interval: float,
        poll: bool = True,
        cache: ModelCache | None = None,
        refusals: Refusals | None = None,
        on_refused: RefusalListener | None = None,
    ) -> None:
        """poll=False: no background thread; whoever owns the holder calls refresh().
        cache=None: versions are downloaded to a temporary folder and not kept."""
        self._source = source
        self._reload_interval = reload_interval
        self._retry_interval = retry_interval
        self._cache = cache
        self._refusals = refusals or Refusals(first=5.0, cap=600.0)
        self._on_refused = on_refused
        self._listeners: list[SwapListener] = []
        self._poll_listeners: list[Callable[[], None]] = []
        self._current: LoadedModel | None = None
        self._registry = RegistryStatus()
        self._problem: str | None = redact(f"model not loaded yet from {source.describe()}")
        self._public_problem: str | None = f"no model loaded yet for {self._public_ref()}"
        self._cache_refused: set[tuple[str, str | None, str]] = set()
        self._said_no_cache = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tried = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._poll = poll

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def problem(self) -> str | None:
        """Why no model is served (None once one is), or why the last reload failed: the detail
        for the logs (credentials masked, but registry location and exception text kept)."""
        return self._problem

    @property
    def public_problem(self) -> str | None:
        """`problem` as clients may read it: model name, alias and version, never a registry
        location or an exception text (either may hold hosts, paths or credentials)."""
        return self._public_problem

    @property
    def registry(self) -> RegistryStatus:
        return self._registry

    def refused(self) -> list[dict[str, Any]]:
        """The version the alias points at if it is refused: attempts, reason, next attempt."""
        return self._refusals.describe()

    def _public_ref(self) -> str:
        return f"model '{self._source.name}' under alias '{self._source.alias}'"

    def add_listener(self, listener: SwapListener) -> None:
        """Call listener(old, new) after each swap (and now, if a model is already served)."""
        self._listeners.append(listener)
        if self._current is not None:
            listener(None, self._current)

    def add_poll_listener(self, listener: Callable[[], None]) -> None:
        """Call listener() on the poller thread after each look at the registry."""
        self._poll_listeners.append(listener)

    # -- the poller -------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the poller in this process (again after a fork: threads do not survive one)."""
        pid = os.getpid()
        if self._pid == pid or not self._poll:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._stop = threading.Event()
            self._tried = threading.Event()
            self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
            self._pid = pid
            self._thread.start()

    def wait_first_attempt(self, timeout: float) -> bool:
        """Block until the poller has tried once (a model served or not), at most `timeout`
        seconds: a starting worker takes no request before it had its chance to load one."""
        if not self._poll or self._pid != os.getpid():
            return False
        return self._tried.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout)

    def _run(self) -> None:
        stop, tried = self._stop, self._tried
        while not stop.is_set():
            try:
                self.refresh()
                for listener in self._poll_listeners:
                    listener()
            except Exception:  # noqa: BLE001 - the poller must outlive any surprise
                logger.exception("model poller iteration failed")
            tried.set()
            interval = self._reload_interval if self._current else self._retry_interval
            stop.wait(interval)

    # -- one look at the registry -----------------------------------------------------------

    def refresh(self) -> bool:
        """Ask the registry once; load and swap in a new version. True when a swap happened."""
        target = self._resolve()
        if target is None:
            if self._current is None and self._registry.state == "unreachable":
                return self._serve_cached()
            return False
        self._refusals.forget_others(target)
        current = self._current
        if current is not None and (current.version, current.run_id) == target.key():
            self._confirm(current)
            return False
        waiting = self._refusals.waiting(target)
        if waiting is not None:  # refused lately: not due for another attempt yet
            return self._current is None and self._serve_cached(exclude=target)
        try:
            loaded, cached = self._fetch(target)
        except _UNREACHABLE as error:  # the registry went away between resolve and download
            self._registry_failed("unreachable", error)
            return self._current is None and self._serve_cached()
        except _Failed as failure:
            self._refuse(target, failure)
            return self._current is None and self._serve_cached(exclude=target)
        self._refusals.succeeded(target)
        self._swap(loaded, "from the registry")
        self._remember(cached)
        return True

    def _resolve(self) -> VersionRef | None:
        checked = datetime.now(UTC)
        try:
            target = self._source.resolve()
        except AliasNotFound as error:
            self._registry = RegistryStatus("reachable", checked, checked)
            public = f"the registry has no version of {self._public_ref()}"
            self._note_problem(str(error), public)
            return None
        except _UNREACHABLE as error:
            self._registry_failed("unreachable", error)
            return None
        except Exception as error:  # noqa: BLE001 - auth or server errors: keep serving, retry
            self._registry_failed("error", error)
            return None
        self._registry = RegistryStatus("reachable", checked, checked)
        return target

    def _registry_failed(self, state: RegistryState, error: BaseException) -> None:
        self._registry = RegistryStatus(state, datetime.now(UTC), self._registry.answered_at)
        detail = f"cannot ask the model registry {self._source.describe()}: {error}"
        public = f"the registry is unreachable or refused the lookup of {self._public_ref()}"
        self._note_problem(detail, public)

    def _confirm(self, current: LoadedModel) -> None:
        """The alias points at the served version: a cached one becomes the registry's."""
        if current.origin == "cache":
            self._current = dataclasses.replace(current, origin="registry")
            logger.info(
                "the registry answers again: version %s (@%s) is still the alias's; serving it",
                current.version,
                current.alias,
            )
        self._problem = self._public_problem = None

    # -- loading ----------------------------------------------------------------------------

    def _fetch(self, target: VersionRef) -> tuple[LoadedModel, CachedVersion | None]:
        """The version loaded and warmed up, through the cache when there is one."""
        if self._cache is not None:
            with _stage("download", passing=_UNREACHABLE):
                cached = self._cache.store(target, lambda into: self._source.download(target, into))
            loaded = self._load(cached.model_dir, cached.meta, "registry", cached.checksum)
            return loaded, cached
        with tempfile.TemporaryDirectory(prefix="predict-model-") as tmp:
            with _stage("download", passing=_UNREACHABLE):
                downloaded = self._source.download(target, Path(tmp))
            return self._load(downloaded.model_dir, downloaded.meta, "registry", None), None

    def _load(
        self, model_dir: Path, meta: ModelMeta, origin: Origin, checksum: str | None
    ) -> LoadedModel:
        with _stage("load"):
            loaded = self._source.load_local(model_dir, meta)
        with _stage("warm-up"):
            warm_up(loaded.predictor)
        return dataclasses.replace(loaded, origin=origin, checksum=checksum)

    def _refuse(self, target: VersionRef, failure: _Failed) -> None:
        kind = type(failure.error).__name__
        reason = f"{failure.stage} failed ({kind})"
        detail = short_reason(failure.stage, failure.error)
        refusal = self._refusals.failed(target, reason, detail)
        kept = self._current.version if self._current else "none"
        logger.warning(
            "refused version %s (run %s) attempt %d: %s; serving %s; next attempt in %.0fs",
            target.version,
            target.run_id,
            refusal.attempts,
            detail,
            kept,
            refusal.delay,
            exc_info=failure.error if refusal.attempts == 1 else None,
        )
        self._problem = redact(f"version {target.version} failed to load: {failure}")
        self._public_problem = (
            f"version {target.version} of {self._public_ref()} failed to load "
            f"({reason}, attempt {refusal.attempts}); next attempt in {refusal.delay:.0f}s"
        )
        if self._on_refused is not None and worth_notifying(refusal.attempts):
            try:
                self._on_refused(refusal)
            except Exception:  # noqa: BLE001 - a notification must not stop the poller
                logger.exception("announcing the refusal of version %s failed", target.version)

    def _serve_cached(self, exclude: VersionRef | None = None) -> bool:
        """No model yet and the registry cannot give one: the version this alias was last
        served by, from the cache, if its files still match their checksum."""
        if self._cache is None:
            return False
        pointer = self._cache.pointer(self._source.alias)
        if pointer is None or (exclude is not None and pointer.ref() == exclude):
            if not self._said_no_cache:
                logger.warning("no cached version of %s to serve meanwhile", self._public_ref())
                self._said_no_cache = True
            return False
        key = (pointer.version, pointer.run_id, pointer.checksum)
        if key in self._cache_refused:
            return False  # refused once, logged then: a cache does not heal by itself
        try:
            cached = self._cache.pointed(pointer)
            loaded = self._load(cached.model_dir, cached.meta, "cache", cached.checksum)
        except (CacheError, _Failed) as error:
            self._cache_refused.add(key)
            logger.error("refusing the cached version %s: %s", pointer.version, redact(str(error)))
            return False
        self._swap(loaded, f"from the local cache (registry {self._registry.state})")
        return True

    def _swap(self, loaded: LoadedModel, how: str) -> None:
        current = self._current
        self._current = loaded  # the swap: one reference assignment
        if loaded.origin == "registry":
            self._problem = self._public_problem = None
        logger.info(
            "serving %s version %s (@%s) %s, was %s",
            loaded.name,
            loaded.version,
            loaded.alias,
            how,
            current.version if current else "none",
        )
        for listener in self._listeners:
            listener(current, loaded)

    def _remember(self, cached: CachedVersion | None) -> None:
        """The cache's fallback for this alias is now the version just swapped in."""
        if self._cache is None or cached is None:
            return
        try:
            self._cache.point(self._source.alias, cached)
            removed = self._cache.prune()
        except OSError as error:
            logger.warning("could not update the model cache: %s", error)
            return
        if removed:
            logger.info("pruned cached versions %s", ", ".join(removed))

    def _note_problem(self, problem: str, public: str) -> None:
        problem = redact(problem)
        self._public_problem = f"{public}; retrying (details in the service log)"
        if problem != self._problem:
            if self._current is None:
                logger.warning("no model served: %s", problem)
            else:
                logger.warning("keeping version %s: %s", self._current.version, problem)
        self._problem = problem
