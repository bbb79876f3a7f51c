"""Code digests for cache keys: they follow every library module the cached code imports."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nyctaxi import cleaning
from nyctaxi.codehash import code_digest, library_closure


def test_cleaning_depends_on_the_modules_it_imports_even_for_a_constant() -> None:
    # cleaning imports only a tuple (REQUIRED_COLUMNS) from sources: it still counts
    assert library_closure(cleaning) == ["nyctaxi.cleaning", "nyctaxi.months", "nyctaxi.sources"]


@pytest.fixture
def fake_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway `nyctaxi` package, so the test edits files that are not the real library."""
    package = tmp_path / "nyctaxi"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rules.py").write_text("LIMIT = 60\n")
    (package / "helpers.py").write_text("from nyctaxi.rules import LIMIT\n")
    (package / "cleaner.py").write_text("from nyctaxi import helpers\n")
    (package / "unrelated.py").write_text("X = 1\n")
    saved = {name: module for name, module in sys.modules.items() if name.startswith("nyctaxi")}
    for name in saved:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield package
    for name in [name for name in sys.modules if name.startswith("nyctaxi")]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_editing_a_transitively_imported_module_changes_the_digest(fake_library: Path) -> None:
    cleaner = importlib.import_module("nyctaxi.cleaner")
    assert library_closure(cleaner) == [
        "nyctaxi",
        "nyctaxi.cleaner",
        "nyctaxi.helpers",
        "nyctaxi.rules",
    ]
    before = code_digest(cleaner)
    (fake_library / "unrelated.py").write_text("X = 2\n")
    assert code_digest(cleaner) == before
    (fake_library / "rules.py").write_text("LIMIT = 90\n")
    assert code_digest(cleaner) != before
