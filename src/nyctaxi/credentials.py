"""The native stack's generated credentials, found by every command of ours.

`make run` writes `$NYCTAXI_HOME/credentials.env` once (mode 0600, `KEY=value` lines a shell can
source). Our CLIs call `load_native_credentials()` before they talk to a server, and the Makefile
includes the file, so nobody types a password. Values already in the environment win: a shell
variable or `.env` entry always overrides a generated one.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from nyctaxi import names
from nyctaxi.config import default_home


def credentials_path(environ: MutableMapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    home = Path(environ.get("NYCTAXI_HOME") or default_home()).expanduser()
    return home / names.CREDENTIALS_FILE


def parse_env_lines(text: str) -> dict[str, str]:
    """`KEY=value` lines (comments and blank lines skipped; no quoting is ever written)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def load_native_credentials(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set the variables of credentials.env that `environ` lacks; returns their names.

    Prefect reads its settings when it is imported: call this before importing it.
    """
    environ = os.environ if environ is None else environ
    path = credentials_path(environ)
    if not path.is_file():
        return []
    added = []
    for key, value in parse_env_lines(path.read_text()).items():
        if not environ.get(key):
            environ[key] = value
            added.append(key)
    return added
