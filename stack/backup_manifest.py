"""The backup's self-description (manifest.json) and the pure checks made on it.

A backup is a folder `nyctaxi-<stack>-<UTC timestamp>/` holding the files of each component
(a database snapshot or dump, a folder or a bucket copied file by file) and `manifest.json`:
when and from which stack it was made, the versions of the servers, each file with what it is,
its size and sha256, and a few facts (row counts, the model aliases) a restore is checked
against. Standard library only: the Docker stack's backup runs on the host's python3.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

FORMAT = "nyctaxi-backup/1"
MANIFEST = "manifest.json"
SECRETS_FILE = "secrets.env"
STACKS = ("native", "docker")
_STAMP = "%Y%m%dT%H%M%SZ"
_NAME = re.compile(r"^nyctaxi-(native|docker)-(\d{8}T\d{6}Z)(?:-\d+)?$")
_CHUNK = 1 << 20


class BackupError(RuntimeError):
    """The backup or the restore cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Component:
    """One thing a stack keeps: where it lives (`source`, never with a password) and how."""

    name: str  # prefect, mlflow, mlflow_auth, artifacts, raw
    kind: str  # sqlite, postgres, folder, s3
    source: str
    description: str


# -- names and timestamps -------------------------------------------------------------------------


def utc_stamp(now: datetime) -> str:
    """`20261201T120000Z`: sorts in time order, no characters a shell or a file system minds."""
    if now.tzinfo is None:
        raise ValueError("a timezone-aware time is needed (datetime.now(UTC))")
    return now.astimezone(UTC).strftime(_STAMP)


def backup_name(stack: str, now: datetime, taken: Iterable[str] = ()) -> str:
    """`nyctaxi-<stack>-<stamp>`, with `-2`, `-3`... when that name is taken (same second)."""
    if stack not in STACKS:
        raise ValueError(f"stack must be one of {STACKS}, got {stack!r}")
    base = f"nyctaxi-{stack}-{utc_stamp(now)}"
    taken = set(taken)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def parse_backup_name(name: str) -> tuple[str, datetime] | None:
    """(stack, creation time) of a backup folder's name; None for any other name."""
    match = _NAME.match(name)
    if match is None:
        return None
    return match.group(1), datetime.strptime(match.group(2), _STAMP).replace(tzinfo=UTC)


# -- files and checksums --------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(root: Path, path: Path, *, component: str, kind: str) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "component": component,
        "kind": kind,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def safe_relative(path: str) -> bool:
    """A manifest path stays inside the backup: relative, no `..`, no empty part."""
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p not in {"", ".", ".."} for p in parts)


def verify_files(root: Path, manifest: Mapping[str, Any]) -> list[str]:
    """What is wrong with the backup's files, one line per file ([] when all are intact)."""
    problems = []
    for entry in manifest.get("files", []):
        relative = str(entry.get("path", ""))
        if not safe_relative(relative):
            problems.append(f"{relative!r}: not a path inside the backup")
            continue
        path = root / relative
        if not path.is_file():
            problems.append(f"{relative}: missing")
        elif path.stat().st_size != entry.get("bytes"):
            problems.append(
                f"{relative}: {path.stat().st_size} bytes, the manifest says {entry.get('bytes')}"
            )
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{relative}: sha256 differs from the manifest (corrupt or altered)")
    return problems


# -- the manifest ---------------------------------------------------------------------------------


def build_manifest(
    *,
    stack: str,
    created: datetime,
    components: Iterable[Component],
    files: list[dict[str, Any]],
    versions: Mapping[str, Any],
    facts: Mapping[str, Any],
    secrets: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "stack": stack,
        "created": created.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "versions": dict(versions),
        "components": [component.__dict__ for component in components],
        "secrets": dict(secrets),
        "facts": dict(facts),
        "total_bytes": sum(int(entry["bytes"]) for entry in files),
        "files": sorted(files, key=lambda entry: entry["path"]),
    }


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a backup folder, checked for the fields a restore needs."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BackupError(f"{folder}: no such backup folder")
    if not path.is_file():
        raise BackupError(f"{folder}: no {MANIFEST}, not a backup (or an unfinished one)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as error:
        raise BackupError(f"{path}: not valid JSON ({error}): the backup is corrupt") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: format is not {FORMAT}: made by another tool or release")
    if manifest.get("stack") not in STACKS:
        raise BackupError(f"{path}: unknown stack {manifest.get('stack')!r}")
    for key in ("components", "files", "facts", "secrets", "versions"):
        if key not in manifest:
            raise BackupError(f"{path}: no {key!r} in the manifest: the backup is corrupt")
    return manifest


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def component_of(manifest: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in manifest["components"] if c["name"] == name), None)


def files_of(manifest: Mapping[str, Any], component: str) -> list[dict[str, Any]]:
    return [entry for entry in manifest["files"] if entry["component"] == component]


# -- secrets: fingerprints, never values ---------------------------------------------------------


def key_fingerprint(key: str | None) -> str | None:
    """A fingerprint of PREFECT_SERVER_ENCRYPTION_KEY (16 hex of its sha256; the key is 256
    random bits, so this tells keys apart without revealing one). None: no key set, Prefect
    keeps its own in its database, and it travels with the backup."""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else None


def blocks_readable(backup_key: str | None, target_key: str | None) -> bool:
    """Whether the restored Prefect block documents can be decrypted on the target stack."""
    return backup_key == target_key


def without_password(url: str) -> str:
    """A connection URL fit for a manifest or a log line: the password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- facts: row counts and aliases, checked after a restore -------------------------------------


def parse_fact_lines(lines: Iterable[str]) -> dict[str, Any]:
    """Facts from `key=value` lines (what the fact queries print): numbers as ints, and
    `alias:<model>@<alias>=<version>` lines gathered under `aliases`."""
    facts: dict[str, Any] = {}
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key.startswith("alias:"):
            facts.setdefault("aliases", {})[key.removeprefix("alias:")] = value
        else:
            facts[key] = int(value) if value.isdigit() else value
    return facts


def fact_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """`component.fact: backup X, restored Y` for each fact the restored stack disagrees on."""
    differences = []
    for component, facts in expected.items():
        restored = found.get(component, {})
        for key, value in facts.items():
            if restored.get(key) != value:
                differences.append(
                    f"{component}.{key}: backup {value!r}, restored {restored.get(key)!r}"
                )
    return differences


# -- the empty-stack check -----------------------------------------------------------------------


def not_empty(contents: Mapping[str, int]) -> list[str]:
    """Components of the target stack that already hold something (`name: N item(s)`)."""
    return [f"{name}: {count} item(s)" for name, count in contents.items() if count > 0]


def refusal(contents: Mapping[str, int], *, force: bool) -> str | None:
    """Why a restore must not go on (None: the target is empty, or `force`)."""
    full = not_empty(contents)
    if not full or force:
        return None
    return (
        "refusing to restore onto a stack that holds data ("
        + "; ".join(full)
        + "). Restore onto an empty stack, or pass --force (make restore FORCE=true) to replace it"
    )


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def entries_under(root: Path, folder: Path, *, component: str, kind: str) -> list[dict[str, Any]]:
    """Manifest entries of every file under `folder` (inside `root`), in path order."""
    if not folder.is_dir():
        return []
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return [file_entry(root, path, component=component, kind=kind) for path in paths]
