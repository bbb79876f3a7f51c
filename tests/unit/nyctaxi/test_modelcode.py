"""The code version of a shipped package: what changes it and what does not."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from nyctaxi import modelcode


@pytest.fixture
def package(tmp_path: Path) -> Path:
    folder = tmp_path / "nyctaxi"
    shutil.copytree(
        modelcode.installed_package_dir(), folder, ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def test_a_copy_has_the_installed_code_version(package: Path) -> None:
    assert modelcode.package_digest(package) == modelcode.installed_code_version()


def test_bytecode_does_not_count(package: Path) -> None:
    before = modelcode.package_digest(package)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "features.cpython-311.pyc").write_bytes(b"\x00compiled")
    assert modelcode.package_digest(package) == before


def test_an_edited_module_changes_the_version(package: Path) -> None:
    before = modelcode.package_digest(package)
    features = package / "features.py"
    features.write_text(features.read_text() + "\n# one more line\n")
    assert modelcode.package_digest(package) != before


def test_a_renamed_module_changes_the_version(package: Path) -> None:
    before = modelcode.package_digest(package)
    (package / "zones.py").rename(package / "zones_renamed.py")
    assert modelcode.package_digest(package) != before


def test_the_library_ships_no_launcher_bootstrap_or_service_code() -> None:
    shipped = modelcode.installed_package_dir()
    modules = {path.relative_to(shipped).as_posix() for path in shipped.rglob("*.py")}
    assert not any(module.startswith("stack/") for module in modules), modules
    for path in shipped.rglob("*.py"):
        assert not imported_roots(path) & {"flows", "services", "stack", "bench", "tests"}, path


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import | ast.ImportFrom):
            roots |= imported_roots_of(node)
    return roots


def test_library_modules_import_the_library_at_module_level_only() -> None:
    """A function-level `import nyctaxi...` would run after load_model put the installed modules
    back, and could mix a shipped model with installed code (see nyctaxi.modelcode)."""
    for path in modelcode.installed_package_dir().rglob("*.py"):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    assert "nyctaxi" not in imported_roots_of(node), (path, function.name)


def imported_roots_of(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    return {node.module.split(".")[0]} if node.module and node.level == 0 else set()
