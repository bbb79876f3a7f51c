"""`make backup` / `make restore BACKUP=...`: back up a running stack, restore onto an empty one.

    python -m stack.backup backup  [--stack auto|native|docker] [--into backups] [--with-secrets]
    python -m stack.backup restore BACKUP [--force]
    python -m stack.backup verify  BACKUP

A backup is a folder BACKUP_DIR/nyctaxi-<stack>-<UTC timestamp>/ (mode 0700) with the stack's
databases, buckets or artifact folder and manifest.json (stack.backup_manifest): versions,
every file with its size and sha256, row counts and the model aliases. It is written as
`<name>.partial` and renamed when complete. A restore checks every checksum before it touches
anything, refuses a stack that holds data (unless --force) and checks the facts afterwards.

Secrets stay out of backups unless --with-secrets (secrets.env, mode 0600): see README,
"Backups". A restore onto a stack with other secrets works: MLflow's passwords are set again on
start (admin by services/mlflow, trainer and predictor by the bootstrap), and the Prefect block
documents, encrypted with the other PREFECT_SERVER_ENCRYPTION_KEY, are dropped (their names are
printed) and saved again by the bootstrap from its settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from stack import backup_docker as docker
from stack.backup_manifest import SECRETS_FILE, BackupError, human_bytes, read_manifest
from stack.backup_stacks import (
    SECRETS_WARNING,
    backup_docker,
    backup_native,
    restore_docker,
    restore_native,
    verified_manifest,
)

# -- the CLI --------------------------------------------------------------------------------


def compose_from_args(args: argparse.Namespace) -> docker.Compose:
    command = shlex.split(args.compose) if args.compose else docker.default_compose()
    return docker.Compose(command, Path.cwd(), args.env_file)


def detect_stack(args: argparse.Namespace) -> str:
    """docker when this project's postgres container runs, else native."""
    try:
        return "docker" if compose_from_args(args).running("postgres") else "native"
    except (OSError, BackupError):
        return "native"


def summary(path: Path, seconds: float) -> list[str]:
    manifest = read_manifest(path)
    aliases = manifest["facts"].get("mlflow", {}).get("aliases", {})
    lines = [
        f"backup: {path}",
        f"  {manifest['stack']} stack, {len(manifest['files'])} files, "
        f"{human_bytes(manifest['total_bytes'])}, {seconds:.1f}s",
        f"  aliases: {', '.join(f'{k} -> v{v}' for k, v in aliases.items()) or 'none'}",
    ]
    if manifest["secrets"]["included"]:
        lines.append("  " + SECRETS_WARNING.format(file=path / SECRETS_FILE))
    else:
        lines.append("  secrets: not included (the restored stack uses its own; README, Backups)")
    return lines


def run(args: argparse.Namespace) -> list[str]:
    started = time.monotonic()
    app_dir = Path.cwd()
    if args.action == "verify":
        manifest = verified_manifest(args.backup)
        return [f"{args.backup}: {len(manifest['files'])} files intact ({manifest['stack']} stack)"]
    if args.action == "backup":
        stack = detect_stack(args) if args.stack == "auto" else args.stack
        if stack == "native":
            path = backup_native(app_dir, args.into, with_secrets=args.with_secrets)
        else:
            path = backup_docker(compose_from_args(args), args.into, with_secrets=args.with_secrets)
        return summary(path, time.monotonic() - started)
    stack = read_manifest(args.backup)["stack"]
    if stack == "native":
        done = restore_native(app_dir, args.backup, force=args.force)
    else:
        done = restore_docker(compose_from_args(args), args.backup, force=args.force)
    lines = [f"restored {args.backup} in {time.monotonic() - started:.1f}s", *done.lines]
    return lines + [f"WARNING: {warning}" for warning in done.warnings]


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="python -m stack.backup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = main_parser.add_subparsers(dest="action", required=True)
    backup = actions.add_parser("backup", help="back up the running stack")
    backup.add_argument("--stack", choices=["auto", "native", "docker"], default="auto")
    backup.add_argument(
        "--into", type=Path, default=Path(os.environ.get("BACKUP_DIR") or "backups")
    )
    backup.add_argument(
        "--with-secrets", action="store_true", help="also copy the secrets (secrets.env, mode 0600)"
    )
    restore = actions.add_parser("restore", help="restore a backup onto an empty stack")
    restore.add_argument("backup", type=Path)
    restore.add_argument(
        "--force", action="store_true", help="replace what the stack holds (files are moved aside)"
    )
    verify = actions.add_parser("verify", help="check every file against the manifest")
    verify.add_argument("backup", type=Path)
    for sub in (backup, restore):
        sub.add_argument(
            "--compose",
            default=os.environ.get("COMPOSE_COMMAND"),
            help="the compose command (Docker stack), e.g. 'docker compose -f ...'",
        )
        sub.add_argument("--env-file", type=Path, default=Path(".env"))
    return main_parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parser().parse_args(argv)
    try:
        lines = run(args)
    except BackupError as error:
        print(f"{args.action} failed: {error}", file=sys.stderr)  # noqa: T201 - the CLI's output
        return 1
    print("\n".join(lines), flush=True)  # noqa: T201 - the CLI's own output
    return 0


if __name__ == "__main__":
    sys.exit(main())
