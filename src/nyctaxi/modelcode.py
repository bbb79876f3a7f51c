"""The code a model version ships, and loading a model so that it runs that code.

A logged model carries a copy of this package (MLflow `code_paths`): the feature code it was
trained with. MLflow only puts that copy on `sys.path`, so in a process that has already imported
`nyctaxi` (the prediction service, the training flow scoring its champion) the model would run
the *installed* feature code instead: silent training/serving skew.

`load_model` prevents that. It compares the shipped package's content digest (the "code
version", recorded in the model's metadata and as a model-version tag) with the installed one:
- equal: an ordinary load;
- different: the shipped package is imported afresh, under the lock below, with the installed
  `nyctaxi` modules set aside; the model keeps references to its own modules, and the process's
  `nyctaxi` is put back afterwards, so each loaded model runs exactly the code it was logged with;
- shipped files that do not match their recorded digest, no shipped package, or a shipped package
  that cannot be imported: `ModelCodeError`, naming both code versions.
Library modules therefore import what they need at module level, never inside functions: a
function-level import would run after the swap and could find the other package.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "nyctaxi"
# Key of the code version in the MLmodel metadata, and name of the model-version tag.
CODE_VERSION_KEY = "code_version"
_DIGEST_CHARS = 16
_IGNORED_PARTS = {"__pycache__"}
_IGNORED_SUFFIXES = {".pyc", ".pyo"}

# Loads that set the installed package aside must not interleave.
_IMPORT_LOCK = threading.Lock()

logger = logging.getLogger(__name__)


class ModelCodeError(RuntimeError):
    """A model version whose shipped code cannot be trusted or run here."""


def package_digest(package_dir: Path) -> str:
    """Content digest of a package folder: every file but bytecode, with its relative path."""
    sha = hashlib.sha256()
    files = sorted(
        path
        for path in package_dir.rglob("*")
        if path.is_file()
        and not _IGNORED_PARTS.intersection(path.relative_to(package_dir).parts)
        and path.suffix not in _IGNORED_SUFFIXES
    )
    for path in files:
        sha.update(path.relative_to(package_dir).as_posix().encode())
        sha.update(b"\0")
        sha.update(path.read_bytes())
        sha.update(b"\0")
    return sha.hexdigest()[:_DIGEST_CHARS]


def installed_package_dir() -> Path:
    """The folder of the `nyctaxi` package this process imported."""
    return Path(__file__).resolve().parent


@functools.cache  # the installed package does not change under a running process
def installed_code_version() -> str:
    return package_digest(installed_package_dir())


@dataclass(frozen=True)
class LoadedModel:
    """A pyfunc model and the code it runs."""

    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    code_version: str
    installed_code_version: str

    @property
    def own_code(self) -> bool:
        """Whether the model runs a package other than the installed one (its own)."""
        return self.code_version != self.installed_code_version

    def python_model(self) -> Any:
        return self.pyfunc.unwrap_python_model()


def _shipped_package(model_dir: Path) -> tuple[Path, str | None]:
    """The shipped package folder and the code version recorded at logging time."""
    from mlflow.models import Model

    model = Model.load(str(model_dir))
    code_subdir = model.flavors.get("python_function", {}).get("code")
    package = model_dir / code_subdir / PACKAGE if code_subdir else None
    if package is None or not package.is_dir():
        raise ModelCodeError(f"the model at {model_dir} ships no '{PACKAGE}' package (code_paths)")
    recorded = (model.metadata or {}).get(CODE_VERSION_KEY)
    return package, recorded


def _package_modules() -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in sys.modules.items()
        if name == PACKAGE or name.startswith(f"{PACKAGE}.")
    }


@contextlib.contextmanager
def _import_scope(*, set_installed_aside: bool) -> Iterator[None]:
    """Restores sys.path afterwards (MLflow prepends the model's code folder for good) and,
    when asked, imports the package afresh inside and puts the installed modules back after."""
    with _IMPORT_LOCK:
        saved_path = list(sys.path)
        installed = _package_modules() if set_installed_aside else {}
        for name in installed:
            del sys.modules[name]
        try:
            yield
        finally:
            if set_installed_aside:
                for name in _package_modules():
                    del sys.modules[name]  # the loaded model holds its own modules
                sys.modules.update(installed)
            sys.path[:] = saved_path


def load_model(model_uri: str) -> LoadedModel:
    """Load a pyfunc model (`models:/name/version`, `runs:/...` or a folder) with its own code."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="nyctaxi-load-") as tmp:
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        package, recorded = _shipped_package(model_dir)
        shipped = package_digest(package)
        installed = installed_code_version()
        if recorded is not None and recorded != shipped:
            raise ModelCodeError(
                f"{model_uri}: its shipped code does not match the code version recorded at "
                f"logging ({recorded}); the files hash to {shipped}; this process runs {installed}"
            )
        own_code = shipped != installed
        if own_code:
            logger.info(
                "%s was logged with nyctaxi code %s; this process runs %s: loading its own code",
                model_uri,
                shipped,
                installed,
            )
        try:
            with _import_scope(set_installed_aside=own_code):
                pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        except ImportError as error:
            raise ModelCodeError(
                f"{model_uri} ships nyctaxi code {shipped}, this process runs {installed}, and "
                f"the shipped code cannot be imported here: {error}"
            ) from error
    return LoadedModel(pyfunc, code_version=shipped, installed_code_version=installed)
