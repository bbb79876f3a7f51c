"""The databases of a backup: SQLite snapshots, Postgres dumps, the facts checked after a
restore and the fixes a restored Prefect database needs. Standard library only.

The same SQL runs on SQLite (native stack) and Postgres (Docker, or a configured native one):
each fact query prints one `key=value` line (stack.backup_manifest.parse_fact_lines).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from stack.backup_manifest import BackupError, parse_fact_lines

# Row counts and aliases a restore is checked against, per database.
FACT_QUERIES: dict[str, list[str]] = {
    "prefect": [
        "SELECT 'flow_runs=' || count(*) FROM flow_run",
        "SELECT 'deployments=' || count(*) FROM deployment",
        "SELECT 'automations=' || count(*) FROM automation",
        "SELECT 'block_documents=' || count(*) FROM block_document",
    ],
    "mlflow": [
        "SELECT 'experiments=' || count(*) FROM experiments",
        "SELECT 'runs=' || count(*) FROM runs",
        "SELECT 'registered_models=' || count(*) FROM registered_models",
        "SELECT 'model_versions=' || count(*) FROM model_versions",
        "SELECT 'alias:' || name || '@' || alias || '=' || version FROM registered_model_aliases",
    ],
    "mlflow_auth": ["SELECT 'users=' || count(*) FROM users"],
}

# Named block documents of a Prefect database, as `block:<type>/<name>` lines.
LIST_BLOCKS = (
    "SELECT 'block:' || t.slug || '/' || d.name FROM block_document d"
    " JOIN block_type t ON t.id = d.block_type_id WHERE d.is_anonymous = false ORDER BY 1"
)
# Block documents are encrypted with PREFECT_SERVER_ENCRYPTION_KEY. Restored onto a stack with
# another key they cannot be decrypted: every read of them (and the bootstrap's re-save, which
# reads the old value first) fails with a server error. They are dropped instead; the bootstrap
# saves ours again from its settings. Their foreign keys cascade on delete (a flow run or a
# deployment pointing at a block would go with it), so those pointers are cleared first.
DROP_BLOCKS = [
    "UPDATE flow_run SET infrastructure_document_id = NULL"
    " WHERE infrastructure_document_id IS NOT NULL",
    "UPDATE deployment SET infrastructure_document_id = NULL, storage_document_id = NULL"
    " WHERE infrastructure_document_id IS NOT NULL OR storage_document_id IS NOT NULL",
    "DELETE FROM block_document_reference",
    "DELETE FROM block_document",
]
# Prefect keeps concurrency leases in the server's memory: a slot held when the backup was taken
# would stay taken for ever on the restored stack, where no run holds it.
RESET_SLOTS = "UPDATE concurrency_limit_v2 SET active_slots = 0 WHERE active_slots <> 0"
SERVER_VERSION = "SELECT 'server_version=' || current_setting('server_version')"
COUNT_TABLES = (
    "SELECT 'tables=' || count(*) FROM information_schema.tables WHERE table_schema = 'public'"
)


# -- SQLite -----------------------------------------------------------------------------------


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL (any driver); None for other databases."""
    scheme, _, rest = url.partition("://")
    if not scheme.startswith("sqlite") or not rest.startswith("/"):
        return None
    path = rest[1:].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(path, timeout=30)
    try:
        yield connection
    finally:
        connection.close()


def sqlite_snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the backup API: one read transaction, so
    the servers may keep writing), then checked, as one self-contained file."""
    if not source.is_file():
        raise BackupError(f"{source}: no such database (has the stack ever run?)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _sqlite(source) as live, _sqlite(target) as copy:
        live.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # no -wal file beside the copy
        (result,) = copy.execute("PRAGMA quick_check").fetchone()
    if result != "ok":
        raise BackupError(f"{source}: the snapshot fails SQLite's check: {result}")
    target.chmod(0o600)


def sqlite_facts(path: Path, queries: Sequence[str]) -> dict:
    lines = []
    with _sqlite(path) as connection:
        for query in queries:
            try:
                lines += [row[0] for row in connection.execute(query)]
            except sqlite3.Error:
                continue  # a table this release lacks: no fact
    return parse_fact_lines(lines)


def sqlite_execute(path: Path, statements: Sequence[str]) -> list[str]:
    """Run statements in one transaction; the text rows they return."""
    rows: list[str] = []
    with _sqlite(path) as connection, connection:
        for statement in statements:
            rows += [str(row[0]) for row in connection.execute(statement) if row]
    return rows


def sqlite_has_table(path: Path, table: str) -> bool:
    with _sqlite(path) as connection:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return connection.execute(query, (table,)).fetchone() is not None


def sqlite_fix_prefect(path: Path, *, drop_blocks: bool) -> list[str]:
    """stack.backup_sql.pg_fix_prefect on a SQLite Prefect database."""
    dropped = sqlite_execute(path, [LIST_BLOCKS]) if drop_blocks else []
    statements = DROP_BLOCKS if drop_blocks else []
    if sqlite_has_table(path, "concurrency_limit_v2"):
        statements = [*statements, RESET_SLOTS]
    sqlite_execute(path, statements)
    return dropped


# -- Postgres ---------------------------------------------------------------------------------


class PgTool(Protocol):
    """Runs pg_dump / pg_restore / psql against one database (`database`), as `role` when set."""

    database: str
    role: str | None

    def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | int = subprocess.PIPE,
    ) -> subprocess.CompletedProcess[bytes]: ...


class HostPostgres:
    """The tools on this machine, connected by a SQLAlchemy-style URL; the password goes through
    PGPASSWORD, never an argument. (stack.backup_docker runs them in the Postgres container.)"""

    def __init__(self, url: str, database: str) -> None:
        parts = urlsplit(url)
        self.password = unquote(parts.password) if parts.password else None
        host = parts.hostname or ""
        netloc = (f"{unquote(parts.username)}@" if parts.username else "") + host
        netloc += f":{parts.port}" if parts.port else ""
        # postgresql+asyncpg / +psycopg2 are SQLAlchemy's; libpq wants postgresql://.
        self.dsn = urlunsplit(("postgresql", netloc, parts.path, "", ""))
        self.database = database
        self.role: str | None = None

    def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | int = subprocess.PIPE,
    ) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return subprocess.run(
            [tool, f"--dbname={self.dsn}", *args],
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
        )


def checked(result: subprocess.CompletedProcess[bytes], what: str) -> bytes:
    if result.returncode != 0:
        error = result.stderr.decode(errors="replace").strip()[-2000:]
        raise BackupError(f"{what} failed (exit {result.returncode}): {error}")
    return result.stdout or b""


def pg_dump(db: PgTool, target: Path) -> None:
    """Custom format (compressed; pg_restore picks what to restore); owners and grants are
    left to the target stack's roles."""
    with target.open("wb") as out:
        checked(db.run("pg_dump", ["--format=custom"], stdout=out), f"pg_dump {db.database}")
    target.chmod(0o600)


def pg_restore(db: PgTool, dump: Path) -> None:
    """Into an empty database, in one transaction: all of it or nothing. Objects are owned by
    the database's role (--no-owner, --role), grants are those of the target stack."""
    args = ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
    if db.role:
        args.append(f"--role={db.role}")
    with dump.open("rb") as source:
        checked(db.run("pg_restore", args, stdin=source), f"pg_restore {db.database}")


def psql(
    db: PgTool, statements: Sequence[str], *, transaction: bool = True, check: bool = True
) -> list[str]:
    """Run statements (in one transaction, stopping at the first error, unless told otherwise);
    the rows they print, one text line each."""
    args = ["--no-psqlrc", "--tuples-only", "--no-align", "--quiet"]
    if check:
        args.append("--set=ON_ERROR_STOP=1")
    if transaction:
        args.append("--single-transaction")
    if db.role:
        args.append(f"--command=SET ROLE {db.role}")
    args += [f"--command={statement}" for statement in statements]
    result = db.run("psql", args)
    out = checked(result, f"psql {db.database}") if check else result.stdout
    return [line for line in (out or b"").decode().splitlines() if line.strip()]


def pg_facts(db: PgTool, queries: Sequence[str]) -> dict:
    return parse_fact_lines(psql(db, queries, transaction=False, check=False))


def pg_table_count(db: PgTool) -> int:
    return int(parse_fact_lines(psql(db, [COUNT_TABLES])).get("tables", 0))


def pg_has_table(db: PgTool, table: str) -> bool:
    query = (
        f"SELECT 'found=' || count(*) FROM information_schema.tables WHERE table_name = '{table}'"
    )
    return bool(parse_fact_lines(psql(db, [query])).get("found"))


def pg_empty_schema(db: PgTool) -> None:
    """Drop everything in the public schema (a forced restore); the connecting user must own
    the schema or the database."""
    psql(db, ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public"])


def pg_fix_prefect(db: PgTool, *, drop_blocks: bool) -> list[str]:
    """After a restore: reset the concurrency slots; drop the block documents when they were
    encrypted with another key. Returns the names of the blocks dropped."""
    dropped = psql(db, [LIST_BLOCKS]) if drop_blocks else []
    statements = DROP_BLOCKS if drop_blocks else []
    if pg_has_table(db, "concurrency_limit_v2"):
        statements = [*statements, RESET_SLOTS]
    if statements:
        psql(db, statements)
    return dropped
