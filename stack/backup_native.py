"""Backup and restore of the native stack (`make run`), wherever its state lives.

The stores are the ones `python -m stack.run` gives its processes (stack.run.stack_environment):
on the embedded defaults, three SQLite databases and the artifact folder under
NYCTAXI_HOME/stack; with PREFECT_API_DATABASE_CONNECTION_URL / MLFLOW_BACKEND_STORE_URI /
MLFLOW_AUTH_DATABASE_URI on Postgres, a pg_dump of each (the host's pg_dump, the password
through PGPASSWORD); with S3_ENDPOINT_URL, both buckets copied object by object.

A backup is taken while the stack runs: the databases first (SQLite's backup API, or pg_dump:
one consistent snapshot each), then the files, so every artifact the databases point at is in
it. A restore needs the stack stopped and its stores empty (or --force, which moves the existing
files aside and empties the databases and buckets).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from nyctaxi import names
from nyctaxi.credentials import credentials_path, parse_env_lines
from stack import backup_sql as sql
from stack import envfile
from stack.backup_manifest import (
    SECRETS_FILE,
    BackupError,
    Component,
    component_of,
    entries_under,
    file_entry,
    files_of,
    without_password,
)
from stack.credentials import NATIVE_SECRETS, ensure_native_credentials
from stack.run import busy_ports, settings_input, stack_environment
from stack.settings import LocalStackSettings

logger = logging.getLogger("stack.backup")

DESCRIPTIONS = {
    "prefect": "Prefect's database: flows, deployments, flow runs, blocks, automations, variables",
    "mlflow": "MLflow's tracking store: experiments, runs, registered models, versions, aliases",
    "mlflow_auth": "MLflow's user store (basic-auth app): users, password hashes, grants",
    "artifacts": "MLflow's artifacts: the models and the files each run logged",
    "raw": "raw TLC months as ingested (raw/green/YYYY-MM.parquet)",
}
# What a backup secrets file holds: the generated credentials and the names derived from them.
SECRET_KEYS = (
    *NATIVE_SECRETS,
    "MLFLOW_ADMIN_USERNAME",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


@dataclass(frozen=True)
class Store:
    component: Component
    target: str  # a file path, a database URL, a folder path or a bucket name


@dataclass(frozen=True)
class NativeStack:
    env: dict[str, str]  # what every Procfile process gets
    settings: LocalStackSettings
    credentials_file: Path


def resolve(app_dir: Path, environ: Mapping[str, str] | None = None) -> NativeStack:
    """The native stack's settings and environment, found as `python -m stack.run` finds them
    (shell > `.env` > credentials.env); credentials.env is read, never created here."""
    dotenv = {k: v for k, v in dotenv_values(app_dir / ".env").items() if v is not None}
    merged = {**dotenv, **(os.environ if environ is None else environ)}
    credentials_file = credentials_path(merged)
    if credentials_file.is_file():
        merged = {**parse_env_lines(credentials_file.read_text()), **merged}
    settings = LocalStackSettings(**settings_input(merged))
    env = stack_environment(settings, merged, app_dir=app_dir, venv_bin=Path(sys.executable).parent)
    return NativeStack(env=env, settings=settings, credentials_file=credentials_file)


def database_store(name: str, url: str) -> Store:
    path = sql.sqlite_path(url)
    if path is not None:
        return Store(Component(name, "sqlite", str(path), DESCRIPTIONS[name]), str(path))
    if url.startswith("postgresql"):
        component = Component(name, "postgres", without_password(url), DESCRIPTIONS[name])
        return Store(component, url)
    raise BackupError(f"{name}: {without_password(url)}: only SQLite and Postgres are supported")


def stores(env: Mapping[str, str]) -> list[Store]:
    """The native stack's stores, databases first (the order a backup takes them in)."""
    prefect_url = env.get("PREFECT_API_DATABASE_CONNECTION_URL") or (
        f"sqlite:///{Path(env['PREFECT_HOME']) / 'prefect.db'}"
    )
    found = [
        database_store("prefect", prefect_url),
        database_store("mlflow", env["MLFLOW_BACKEND_STORE_URI"]),
        database_store("mlflow_auth", env["MLFLOW_AUTH_DATABASE_URI"]),
    ]
    artifacts = env["MLFLOW_ARTIFACTS_DESTINATION"]
    if artifacts.startswith("s3://"):
        bucket = artifacts.removeprefix("s3://").split("/", 1)[0]
        found.append(
            Store(Component("artifacts", "s3", artifacts, DESCRIPTIONS["artifacts"]), bucket)
        )
    else:
        folder = artifacts.removeprefix("file://")
        found.append(
            Store(Component("artifacts", "folder", folder, DESCRIPTIONS["artifacts"]), folder)
        )
    if env.get("S3_ENDPOINT_URL"):
        bucket = env.get("RAW_BUCKET") or names.RAW_BUCKET
        found.append(Store(Component("raw", "s3", f"s3://{bucket}", DESCRIPTIONS["raw"]), bucket))
    return found


# -- backup -------------------------------------------------------------------------------------


def back_up_store(store: Store, env: Mapping[str, str], folder: Path) -> tuple[list[dict], dict]:
    """Copy one store into the backup folder; (manifest entries, facts)."""
    name, kind = store.component.name, store.component.kind
    queries = sql.FACT_QUERIES.get(name, [])
    if kind == "sqlite":
        target = folder / f"{name}.db"
        sql.sqlite_snapshot(Path(store.target), target)
        entry = file_entry(folder, target, component=name, kind="sqlite-snapshot")
        return [entry], sql.sqlite_facts(target, queries)
    if kind == "postgres":
        db = sql.HostPostgres(store.target, name)
        target = folder / f"{name}.dump"
        sql.pg_dump(db, target)
        facts = sql.pg_facts(db, [*queries, sql.SERVER_VERSION])
        return [file_entry(folder, target, component=name, kind="pg-dump")], facts
    if kind == "folder":
        copy_tree(Path(store.target), folder / name)
        entries = entries_under(folder, folder / name, component=name, kind="file")
        return entries, {"files": len(entries)}
    from stack import backup_s3

    client = backup_s3.client_from_env(dict(env))
    copied = backup_s3.download(client, store.target, folder / "buckets")
    entries = entries_under(
        folder, folder / "buckets" / store.target, component=name, kind="object"
    )
    return entries, {"objects": copied["objects"]}


def copy_tree(source: Path, target: Path) -> None:
    """Every regular file under `source` (symlinks skipped), owner-only."""
    target.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        copy.chmod(0o600)


def secret_values(env: Mapping[str, str]) -> dict[str, str]:
    return {key: env[key] for key in SECRET_KEYS if env.get(key)}


def write_secrets(folder: Path, env: Mapping[str, str]) -> dict:
    text = (
        "# nyctaxi native stack secrets, copied by `make backup WITH_SECRETS=true`. Keep private.\n"
    )
    text += "".join(f"{key}={value}\n" for key, value in secret_values(env).items())
    envfile.write_private(folder / SECRETS_FILE, text)
    return file_entry(folder, folder / SECRETS_FILE, component="secrets", kind="secrets")


# -- restore ----------------------------------------------------------------------------------


def open_files_under(folder: Path, proc: Path = Path("/proc")) -> list[str]:
    """`pid N (command)` of each process with a file open under `folder` (Linux /proc)."""
    found = []
    root = str(folder.resolve())
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:80].decode()
        except OSError:
            continue
        if any(t == root or t.startswith(root + os.sep) for t in targets):
            found.append(f"pid {entry.name} ({command.strip()})")
    return found


def running_stack(stack: NativeStack) -> str | None:
    """Why the stack counts as running (None: stopped)."""
    holders = (
        open_files_under(stack.settings.state_dir) if stack.settings.state_dir.exists() else []
    )
    busy = busy_ports(stack.settings, [])
    if not holders and not busy:
        return None
    details = "; ".join(
        filter(None, [", ".join(holders), "ports in use " + ", ".join(busy) if busy else ""])
    )
    return (
        f"the native stack is running ({details}). Stop it first (Ctrl-C where `make run` runs; "
        "or stop what else listens on PREFECT_PORT / MLFLOW_PORT / PREDICT_PORT), then restore"
    )


def store_contents(store: Store, env: Mapping[str, str]) -> int:
    """How many things (tables, files, objects) the store already holds."""
    kind, target = store.component.kind, store.target
    if kind == "sqlite":
        path = Path(target)
        if not path.is_file() or path.stat().st_size == 0:
            return 0
        return len(
            sql.sqlite_execute(path, ["SELECT name FROM sqlite_master WHERE type = 'table'"])
        )
    if kind == "postgres":
        return sql.pg_table_count(sql.HostPostgres(target, store.component.name))
    if kind == "folder":
        path = Path(target)
        return sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
    from stack import backup_s3

    return len(backup_s3.listing(backup_s3.client_from_env(dict(env)), target))


def clear_store(store: Store, env: Mapping[str, str], stamp: str) -> str | None:
    """Make room for a forced restore; says what was done (files are moved aside, not deleted)."""
    kind, target = store.component.kind, store.target
    if kind == "sqlite":
        moved = []
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(target + suffix)
            if path.exists():
                path.rename(f"{path}.replaced-{stamp}")
                moved.append(path.name)
        return f"moved aside {', '.join(moved)} (*.replaced-{stamp})" if moved else None
    if kind == "folder":
        path = Path(target)
        if path.exists():
            path.rename(f"{path}.replaced-{stamp}")
            return f"moved aside {path} -> {path.name}.replaced-{stamp}"
        return None
    if kind == "postgres":
        sql.pg_empty_schema(sql.HostPostgres(target, store.component.name))
        return "emptied its public schema"
    from stack import backup_s3

    emptied = backup_s3.empty(backup_s3.client_from_env(dict(env)), target)
    return f"deleted {emptied['objects']} object(s)"


def restore_store(
    store: Store, backup: Path, manifest: Mapping[str, Any], env: Mapping[str, str]
) -> None:
    name, kind = store.component.name, store.component.kind
    if kind == "sqlite":
        target = Path(store.target)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.restoring")
        shutil.copyfile(backup / f"{name}.db", staging)
        staging.chmod(0o600)
        # A journal left beside the file (the stack is stopped: nobody's) would be replayed
        # into the restored database.
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        staging.replace(target)
    elif kind == "postgres":
        sql.pg_restore(sql.HostPostgres(store.target, name), backup / f"{name}.dump")
    elif kind == "folder":
        target = Path(store.target)
        for entry in files_of(manifest, name):
            source = backup / entry["path"]
            copy = target / Path(entry["path"]).relative_to(name)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    else:
        from stack import backup_s3

        client = backup_s3.client_from_env(dict(env))
        region = env.get("AWS_DEFAULT_REGION") or "us-east-1"
        # The backup's folder is named after the bucket it came from (maybe renamed since).
        source = component_of(manifest, name) or {}
        folder = str(source.get("source", "")).removeprefix("s3://").split("/", 1)[0]
        backup_s3.upload(client, store.target, backup / "buckets", region, folder or None)


def install_secrets(backup: Path, manifest: Mapping[str, Any], credentials_file: Path) -> str:
    """credentials.env from the backup's secrets when the target has none; says what it did."""
    if not manifest["secrets"].get("included"):
        return "the backup holds no secrets: this stack keeps (or generates) its own"
    if credentials_file.exists():
        return f"kept {credentials_file} (the backup's {SECRETS_FILE} was not used)"
    credentials_file.parent.mkdir(parents=True, exist_ok=True)
    envfile.write_private(credentials_file, (backup / SECRETS_FILE).read_text())
    return f"installed the backup's secrets as {credentials_file} (mode 0600)"


def store_facts(store: Store, env: Mapping[str, str]) -> dict:
    """The facts a backup records of this store, read from the (restored) store."""
    queries = sql.FACT_QUERIES.get(store.component.name, [])
    kind = store.component.kind
    if kind == "sqlite":
        return sql.sqlite_facts(Path(store.target), queries)
    if kind == "postgres":
        return sql.pg_facts(sql.HostPostgres(store.target, store.component.name), queries)
    if kind == "folder":
        return {"files": store_contents(store, env)}
    return {"objects": store_contents(store, env)}


def fix_prefect(store: Store, *, drop_blocks: bool) -> list[str]:
    """After the restore: reset concurrency slots; drop the block documents when they were
    encrypted with another key. Returns the names of the blocks dropped."""
    if store.component.kind == "sqlite":
        return sql.sqlite_fix_prefect(Path(store.target), drop_blocks=drop_blocks)
    return sql.pg_fix_prefect(sql.HostPostgres(store.target, "prefect"), drop_blocks=drop_blocks)


def ensure_credentials(stack: NativeStack) -> None:
    """What `make run` would generate on its first start, generated now: the restore must know
    the encryption key the restored stack will run with."""
    ensure_native_credentials(stack.credentials_file)
