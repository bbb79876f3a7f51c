"""The Docker stack's `.env`: created with random secrets, never with a published placeholder.

    python3 -m stack.envfile [--file .env] [--example .env.example]

What `make up` runs before `docker compose up`:
- no `.env`: copy `.env.example`, giving every secret (SECRETS below) a fresh random value;
- a `.env` already there: never change a value in it; append the secrets it lacks (a `.env`
  from an older release), each with a fresh random value;
- a `.env` that still holds a `change-me` value (a hand copy of `.env.example`): exit 1 naming
  the variables. The compose file refuses it too, through its one-shot `preflight` service.

Standard library only: it runs on the host's python3, before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

PLACEHOLDER = "change-me"
# A value that starts with the placeholder, bare or quoted.
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def random_password() -> str:
    # URL-safe characters only: the values go into Postgres URIs, make and shell unquoted.
    return secrets.token_urlsafe(24)


def prefect_auth_string() -> str:
    """`user:password` for Prefect's basic auth (the UI's login takes the whole string)."""
    return f"admin:{random_password()}"


def fernet_key() -> str:
    """A Fernet key (32 random bytes, URL-safe base64): Prefect encrypts block secrets with it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


# Every secret of the Docker stack and how a fresh one is made. The names are the .env variables.
SECRETS: dict[str, Callable[[], str]] = {
    "POSTGRES_PASSWORD": random_password,
    "PREFECT_DB_PASSWORD": random_password,
    "MLFLOW_DB_PASSWORD": random_password,
    "MLFLOW_AUTH_DB_PASSWORD": random_password,
    "MINIO_ROOT_PASSWORD": random_password,
    "PREFECT_API_AUTH_STRING": prefect_auth_string,
    "PREFECT_SERVER_ENCRYPTION_KEY": fernet_key,
    "MLFLOW_ADMIN_PASSWORD": random_password,
    "MLFLOW_TRAINER_PASSWORD": random_password,
    "MLFLOW_PREDICTOR_PASSWORD": random_password,
    "MLFLOW_FLASK_SERVER_SECRET_KEY": random_password,
}


def assignments(text: str) -> dict[str, str]:
    """`NAME=value` lines of an env file (comments skipped, surrounding quotes removed)."""
    found = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if match:
            found[match.group(1)] = match.group(2).strip().strip("'\"")
    return found


def placeholders(text: str) -> list[str]:
    """Names whose value is still a `change-me` placeholder, in file order."""
    return [name for name, value in assignments(text).items() if value.startswith(PLACEHOLDER)]


def from_example(example: str) -> str:
    """`.env.example` with every placeholder replaced by a fresh secret."""
    lines = []
    for line in example.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and not line.lstrip().startswith("#") and PLACEHOLDER in match.group(2):
            name = match.group(1)
            line = f"{name}={SECRETS.get(name, random_password)()}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def missing_secrets(text: str) -> list[str]:
    """Secrets the file does not set at all (an older `.env`)."""
    present = assignments(text)
    return [name for name in SECRETS if name not in present]


def write_private(path: Path, text: str, *, append: bool = False) -> None:
    """Write (or append to) a file only its owner can read: it holds passwords."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_EXCL)
    with os.fdopen(os.open(path, flags, 0o600), "w") as handle:
        handle.write(text)


def ensure_env_file(path: Path, example: Path) -> tuple[str, list[str]]:
    """Create or complete `path`; returns what was done ('created', 'completed', 'kept') and
    the secrets generated."""
    if not path.exists():
        text = from_example(example.read_text())
        text += missing_block(text)
        write_private(path, text)
        generated = [name for name in assignments(text) if name in SECRETS]
        return "created", generated
    text = path.read_text()
    block = missing_block(text)
    if not block:
        return "kept", []
    write_private(path, block if text.endswith("\n") else "\n" + block, append=True)
    return "completed", missing_secrets(text)


def missing_block(text: str) -> str:
    """Lines with a fresh value for each secret `text` lacks ('' when none is missing)."""
    missing = missing_secrets(text)
    if not missing:
        return ""
    block = "\n# Added by `make env` (python3 -m stack.envfile): secrets this file lacked.\n"
    return block + "".join(f"{name}={SECRETS[name]()}\n" for name in missing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m stack.envfile", description=__doc__)
    parser.add_argument("--file", type=Path, default=Path(".env"))
    parser.add_argument("--example", type=Path, default=Path(".env.example"))
    args = parser.parse_args(argv)
    action, generated = ensure_env_file(args.file, args.example)
    out = sys.stdout
    if action != "kept":
        names = ", ".join(generated)
        print(f"{action} {args.file} with random values for: {names}", file=out)  # noqa: T201
    left = placeholders(args.file.read_text())
    if left:
        print(  # noqa: T201 - the CLI's own output
            f"refusing to start: {args.file} still holds placeholder values for "
            f"{', '.join(left)}. Set your own values, or delete those lines and run `make up` "
            "again to generate them.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
