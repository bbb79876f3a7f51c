"""Digests of library code, for cache keys that must change whenever the cached logic does."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

PACKAGE = "nyctaxi"


def _source(module: ModuleType) -> str:
    # The file itself: inspect.getsource refuses an empty one (a package's __init__.py).
    return Path(module.__file__ or "").read_text(encoding="utf-8")


def _library_imports(module: ModuleType) -> set[str]:
    """Names of the package's modules that `module`'s source imports (read from its syntax tree:
    a constant imported by name has no `__module__` to follow)."""
    found = set()
    for node in ast.walk(ast.parse(_source(module))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from nyctaxi import cleaning` imports a module by name
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if _is_library_module(name)}


def _is_library_module(name: str) -> bool:
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # `nyctaxi.months.Month`: a name inside a module
        return False


def library_closure(module: ModuleType) -> list[str]:
    """`module` and every package module it depends on, transitively, sorted by name."""
    seen: set[str] = set()
    pending = [module.__name__]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(_library_imports(importlib.import_module(name)) - seen)
    return sorted(seen)


def code_digest(module: ModuleType) -> str:
    """sha256 over the source of `module` and of the package modules it uses, transitively:
    editing any function a cached result comes from changes the digest."""
    digest = hashlib.sha256()
    for name in library_closure(module):
        digest.update(name.encode() + b"\0")
        digest.update(_source(importlib.import_module(name)).encode() + b"\0")
    return digest.hexdigest()
