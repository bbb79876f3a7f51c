"""What `make backup` and `make restore` do, per stack (the CLI is stack.backup).

The native stack's stores are handled by stack.backup_native, the Docker stack's by
stack.backup_docker; both write the same manifest (stack.backup_manifest). A restore verifies
every checksum first, refuses a stack that holds data unless forced, restores, compares the facts
(row counts, aliases) with the manifest, then fixes what a restored Prefect database needs: the
concurrency slots no run holds any more, and, when the target's PREFECT_SERVER_ENCRYPTION_KEY is
not the backup's, the block documents nobody can decrypt (the bootstrap saves ours again).
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stack import backup_docker as docker
from stack import backup_sql as sql
from stack import envfile
from stack.backup_manifest import (
    SECRETS_FILE,
    BackupError,
    backup_name,
    blocks_readable,
    build_manifest,
    component_of,
    entries_under,
    fact_differences,
    file_entry,
    key_fingerprint,
    read_manifest,
    refusal,
    utc_stamp,
    verify_files,
    write_manifest,
)

logger = logging.getLogger("stack.backup")

SECRETS_WARNING = (
    "WARNING: this backup holds the stack's secrets ({file}, mode 0600): the Prefect encryption "
    "key and every password. Keep it as private as the stack itself."
)


@dataclass
class Restored:
    """What a restore did, for the CLI to print and the tests to check."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped_blocks: list[str] = field(default_factory=list)


# -- shared ---------------------------------------------------------------------------------


def git_version(app_dir: Path) -> dict[str, Any] | None:
    try:
        commit = subprocess.run(
            ["git", "-C", str(app_dir), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        status = subprocess.run(
            ["git", "-C", str(app_dir), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def new_folder(into: Path, stack: str, now: datetime) -> tuple[Path, Path]:
    """(the folder to write, its final name): `<name>.partial` until the manifest is written."""
    into.mkdir(parents=True, exist_ok=True)
    taken = {p.name.removesuffix(".partial") for p in into.iterdir()}
    final = into / backup_name(stack, now, taken)
    partial = final.with_name(final.name + ".partial")
    partial.mkdir(mode=0o700)
    return partial, final


def finish(partial: Path, final: Path, manifest: dict[str, Any]) -> Path:
    write_manifest(partial, manifest)
    partial.rename(final)
    return final


def verified_manifest(backup: Path, stack: str | None = None) -> dict[str, Any]:
    """The manifest, once every file matches its checksum; BackupError naming each bad file."""
    manifest = read_manifest(backup)
    problems = verify_files(backup, manifest)
    if problems:
        raise BackupError(
            f"{backup}: refusing a corrupt backup: "
            + "; ".join(problems[:20])
            + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
        )
    if stack is not None and manifest["stack"] != stack:
        raise BackupError(
            f"{backup} is a backup of the {manifest['stack']} stack: it restores onto that stack"
        )
    return manifest


def same_kinds(manifest: dict[str, Any], target: dict[str, str]) -> None:
    """The target keeps each component in the same kind of store as the backup's stack."""
    for name, kind in target.items():
        found = component_of(manifest, name)
        if found is None:
            raise BackupError(f"the backup has no {name!r}: it cannot restore this stack")
        if found["kind"] != kind:
            raise BackupError(
                f"{name}: the backup holds a {found['kind']} store, this stack uses {kind}: "
                "restore onto a stack configured like the one backed up"
            )


def block_note(dropped: list[str]) -> str:
    names = ", ".join(b.removeprefix("block:") for b in dropped) or "none"
    return (
        "PREFECT_SERVER_ENCRYPTION_KEY differs from the backed-up stack's: its block documents "
        f"could not be decrypted and were dropped ({names}). The bootstrap saves ours again "
        "on start; re-create any other block, or restore with the old key in place"
    )


# -- native ---------------------------------------------------------------------------------


def native_module() -> Any:
    """stack.backup_native, which needs the virtualenv (the Docker stack's backup does not)."""
    try:
        from stack import backup_native
    except ModuleNotFoundError as error:
        raise BackupError(
            f"the native stack's backup needs the project's virtualenv ({error}): `make setup`"
        ) from error
    return backup_native


def backup_native(app_dir: Path, into: Path, *, with_secrets: bool = False) -> Path:
    native = native_module()

    stack = native.resolve(app_dir)
    now = datetime.now(UTC)
    partial, final = new_folder(into, "native", now)
    files: list[dict[str, Any]] = []
    facts: dict[str, Any] = {}
    versions: dict[str, Any] = package_versions()
    versions["sqlite"] = sqlite3.sqlite_version
    stores = native.stores(stack.env)
    for store in stores:
        logger.info("backing up %s (%s %s)", *store_label(store))
        entries, store_facts = native.back_up_store(store, stack.env, partial)
        if "server_version" in store_facts:
            versions["postgres"] = store_facts.pop("server_version")
        files += entries
        facts[store.component.name] = store_facts
    if with_secrets:
        files.append(native.write_secrets(partial, stack.env))
    versions["git"] = git_version(app_dir)
    secrets = {
        "included": with_secrets,
        "prefect_encryption_key_fingerprint": key_fingerprint(
            stack.env.get("PREFECT_SERVER_ENCRYPTION_KEY")
        ),
    }
    manifest = build_manifest(
        stack="native",
        created=now,
        components=[store.component for store in stores],
        files=files,
        versions=versions,
        facts=facts,
        secrets=secrets,
    )
    return finish(partial, final, manifest)


def restore_native(app_dir: Path, backup: Path, *, force: bool = False) -> Restored:
    native = native_module()

    manifest = verified_manifest(backup, "native")
    stack = native.resolve(app_dir)
    stores = native.stores(stack.env)
    same_kinds(manifest, {s.component.name: s.component.kind for s in stores})
    if reason := native.running_stack(stack):
        raise BackupError(reason)
    contents = {s.component.name: native.store_contents(s, stack.env) for s in stores}
    if reason := refusal(contents, force=force):
        raise BackupError(reason)
    done = Restored()
    stamp = utc_stamp(datetime.now(UTC))
    for store in stores:
        full = contents[store.component.name]
        if full and (note := native.clear_store(store, stack.env, stamp)):
            done.lines.append(f"{store.component.name}: {note}")
    done.lines.append(native.install_secrets(backup, manifest, stack.credentials_file))
    native.ensure_credentials(stack)
    stack = native.resolve(app_dir)  # now with this stack's own credentials
    for store in stores:
        logger.info("restoring %s (%s %s)", *store_label(store))
        native.restore_store(store, backup, manifest, stack.env)
    found = {s.component.name: native.store_facts(s, stack.env) for s in stores}
    done.warnings += fact_differences(manifest["facts"], found)
    readable = blocks_readable(
        manifest["secrets"].get("prefect_encryption_key_fingerprint"),
        key_fingerprint(stack.env.get("PREFECT_SERVER_ENCRYPTION_KEY")),
    )
    prefect = next(s for s in stores if s.component.name == "prefect")
    done.dropped_blocks = native.fix_prefect(prefect, drop_blocks=not readable)
    if not readable:
        done.lines.append(block_note(done.dropped_blocks))
    done.lines.append("restored; start the stack with `make run`")
    return done


def store_label(store: Any) -> tuple[str, str, str]:
    component = store.component
    return component.name, component.kind, component.source


def package_versions() -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version()}
    for name in ("prefect", "mlflow"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


# -- Docker ---------------------------------------------------------------------------------


def backup_docker(compose: docker.Compose, into: Path, *, with_secrets: bool = False) -> Path:
    docker.ensure_docker_tools(compose)
    if with_secrets and not compose.env_file.is_file():
        raise BackupError(f"{compose.env_file}: no such env file to copy the secrets from")
    for service in docker.DATA_SERVICES:
        if not compose.running(service):
            raise BackupError(f"the Docker stack's {service} is not running: `make up` first")
    now = datetime.now(UTC)
    partial, final = new_folder(into, "docker", now)
    logger.info("dumping databases %s", ", ".join(docker.DATABASES))
    facts, pg_version = docker.dump_all(compose, partial)
    files = [
        file_entry(partial, partial / f"{name}.dump", component=name, kind="pg-dump")
        for name in docker.DATABASES
    ]
    bucket_names = docker.buckets(compose)
    logger.info("copying buckets %s", ", ".join(bucket_names.values()))
    report = docker.s3_tool(
        compose, "download", list(bucket_names.values()), data=partial, writable=True
    )
    for name, bucket in bucket_names.items():
        folder = partial / "buckets" / bucket
        files += entries_under(partial, folder, component=name, kind="object")
        facts[name] = {"objects": report["buckets"][bucket]["objects"]}
    if with_secrets:
        envfile.write_private(partial / SECRETS_FILE, compose.env_file.read_text())
        files.append(
            file_entry(partial, partial / SECRETS_FILE, component="secrets", kind="secrets")
        )
    versions = {
        **report.get("versions", {}),
        "postgres": pg_version,
        "images": docker.image_versions(compose),
        "git": git_version(compose.project_dir),
    }
    secrets = {
        "included": with_secrets,
        "prefect_encryption_key_fingerprint": key_fingerprint(
            compose.setting("PREFECT_SERVER_ENCRYPTION_KEY")
        ),
    }
    manifest = build_manifest(
        stack="docker",
        created=now,
        components=docker.components(compose),
        files=files,
        versions=versions,
        facts=facts,
        secrets=secrets,
    )
    return finish(partial, final, manifest)


def restore_docker(compose: docker.Compose, backup: Path, *, force: bool = False) -> Restored:
    manifest = verified_manifest(backup, "docker")
    docker.ensure_docker_tools(compose)
    if running := docker.app_services_running(compose):
        raise BackupError(
            f"the Docker stack is running ({', '.join(running)}): `make down` first; the restore "
            "starts only the data services"
        )
    bucket_names = docker.buckets(compose)
    done = Restored()
    docker.ensure_platform_image(compose)
    logger.info("starting the data services: %s", ", ".join(docker.DATA_SERVICES))
    docker.start_data_services(compose)
    if force:
        docker.drop_databases(compose, docker.DATABASES)
    docker.run_one_shots(compose)
    contents = docker.target_contents(compose, bucket_names)
    if reason := refusal(contents, force=force):
        raise BackupError(reason)
    if force and any(contents[name] for name in bucket_names):
        docker.s3_tool(compose, "empty", list(bucket_names.values()))
    for name in docker.DATABASES:
        logger.info("restoring database %s", name)
        sql.pg_restore(docker.ComposePostgres(compose, name, role=name), backup / f"{name}.dump")
    # Each bucket from the backup's folder of it (its name then; the same unless RAW_BUCKET /
    # MLFLOW_ARTIFACTS_BUCKET changed since).
    specs = [
        f"{bucket}={component_of(manifest, name)['source'].removeprefix('s3://')}"
        for name, bucket in bucket_names.items()
    ]
    logger.info("restoring buckets %s", ", ".join(specs))
    report = docker.s3_tool(compose, "upload", specs, data=backup)
    found = {
        name: sql.pg_facts(docker.ComposePostgres(compose, name), sql.FACT_QUERIES[name])
        for name in docker.DATABASES
    }
    for name, bucket in bucket_names.items():
        found[name] = {"objects": report["buckets"][bucket]["objects"]}
    done.warnings += fact_differences(manifest["facts"], found)
    readable = blocks_readable(
        manifest["secrets"].get("prefect_encryption_key_fingerprint"),
        key_fingerprint(compose.setting("PREFECT_SERVER_ENCRYPTION_KEY")),
    )
    prefect = docker.ComposePostgres(compose, "prefect", role="prefect")
    done.dropped_blocks = sql.pg_fix_prefect(prefect, drop_blocks=not readable)
    if not readable:
        done.lines.append(block_note(done.dropped_blocks))
    done.lines.append("restored; start the whole stack with `make up`")
    return done
