"""Backups: names and timestamps, the manifest and its checksums, the empty-stack check, the
secrets' fingerprints, and a native backup -> restore round trip on small SQLite stores shaped
like Prefect's and MLflow's (hermetic: files under tmp_path, no server)."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from nyctaxi.credentials import parse_env_lines
from stack import backup_manifest as bm
from stack import backup_native, backup_s3, backup_sql
from stack.backup_manifest import BackupError
from stack.backup_stacks import backup_native as take_native_backup
from stack.backup_stacks import restore_native, verified_manifest
from stack.run import stack_environment
from stack.settings import LocalStackSettings
from tests.servers import free_port

NOON = datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)

# -- names and timestamps -------------------------------------------------------------------------


def test_timestamps_are_utc_sortable_and_refuse_a_naive_time() -> None:
    assert bm.utc_stamp(NOON) == "20261201T120005Z"
    paris = NOON.astimezone(timezone(timedelta(hours=1)))
    assert bm.utc_stamp(paris) == "20261201T120005Z"
    assert bm.utc_stamp(NOON + timedelta(seconds=1)) > bm.utc_stamp(NOON)
    with pytest.raises(ValueError, match="timezone-aware"):
        bm.utc_stamp(datetime(2026, 12, 1, 12, 0, 5))


def test_names_say_the_stack_and_the_time_and_never_collide() -> None:
    name = bm.backup_name("native", NOON)
    assert name == "nyctaxi-native-20261201T120005Z"
    assert bm.backup_name("native", NOON, taken=[name]) == f"{name}-2"
    assert bm.backup_name("native", NOON, taken=[name, f"{name}-2"]) == f"{name}-3"
    assert bm.parse_backup_name(f"{name}-2") == ("native", NOON)
    assert bm.parse_backup_name(bm.backup_name("docker", NOON)) == ("docker", NOON)
    assert bm.parse_backup_name("nyctaxi-native-yesterday") is None
    with pytest.raises(ValueError, match="stack must be"):
        bm.backup_name("kubernetes", NOON)


# -- the manifest and its checksums ---------------------------------------------------------------


def small_backup(folder: Path) -> dict:
    (folder / "artifacts" / "1").mkdir(parents=True)
    (folder / "prefect.db").write_bytes(b"prefect" * 100)
    (folder / "artifacts" / "1" / "model.ubj").write_bytes(b"\x00\x01model")
    files = [bm.file_entry(folder, folder / "prefect.db", component="prefect", kind="sqlite")]
    files += bm.entries_under(folder, folder / "artifacts", component="artifacts", kind="file")
    manifest = bm.build_manifest(
        stack="native",
        created=NOON,
        components=[bm.Component("prefect", "sqlite", "/state/prefect.db", "Prefect")],
        files=files,
        versions={"prefect": "3.8.8"},
        facts={"mlflow": {"model_versions": 2, "aliases": {"m@champion": "2"}}},
        secrets={"included": False, "prefect_encryption_key_fingerprint": None},
    )
    bm.write_manifest(folder, manifest)
    return manifest


def test_the_manifest_describes_every_file_with_its_size_and_checksum(tmp_path: Path) -> None:
    manifest = small_backup(tmp_path)
    assert manifest["format"] == bm.FORMAT and manifest["created"] == "2026-12-01T12:00:05Z"
    assert [f["path"] for f in manifest["files"]] == ["artifacts/1/model.ubj", "prefect.db"]
    assert manifest["total_bytes"] == 700 + 7
    assert manifest["components"][0]["kind"] == "sqlite"
    assert bm.read_manifest(tmp_path) == json.loads((tmp_path / bm.MANIFEST).read_text())
    assert bm.verify_files(tmp_path, manifest) == []


def test_a_corrupt_backup_is_refused_naming_each_bad_file(tmp_path: Path) -> None:
    manifest = small_backup(tmp_path)
    model = tmp_path / "artifacts" / "1" / "model.ubj"
    model.write_bytes(b"\x00\x01MODEL")  # same size, other bytes
    (tmp_path / "prefect.db").write_bytes(b"short")
    problems = bm.verify_files(tmp_path, manifest)
    assert problems == [
        "artifacts/1/model.ubj: sha256 differs from the manifest (corrupt or altered)",
        "prefect.db: 5 bytes, the manifest says 700",
    ]
    model.unlink()
    assert "artifacts/1/model.ubj: missing" in bm.verify_files(tmp_path, manifest)
    with pytest.raises(BackupError, match=r"refusing a corrupt backup: artifacts/1/model.ubj"):
        verified_manifest(tmp_path)


def test_manifest_paths_never_leave_the_backup(tmp_path: Path) -> None:
    manifest = {"files": [{"path": "../../etc/passwd", "bytes": 1, "sha256": "x"}]}
    assert bm.verify_files(tmp_path, manifest) == [
        "'../../etc/passwd': not a path inside the backup"
    ]
    assert not bm.safe_relative("/etc/passwd") and not bm.safe_relative("a//b")
    assert bm.safe_relative("buckets/mlflow-artifacts/1/models/m-1/MLmodel")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "no manifest.json"),
        ("{not json", "not valid JSON"),
        ('{"format": "other/9", "stack": "native"}', "format is not nyctaxi-backup/1"),
        ('{"format": "nyctaxi-backup/1", "stack": "native"}', "no 'components'"),
        ('{"format": "nyctaxi-backup/1", "stack": "k8s"}', "unknown stack"),
    ],
)
def test_what_is_not_a_complete_backup_is_refused(
    tmp_path: Path, content: str | None, error: str
) -> None:
    if content is not None:
        (tmp_path / bm.MANIFEST).write_text(content)
    with pytest.raises(BackupError, match=error):
        bm.read_manifest(tmp_path)
    with pytest.raises(BackupError, match="no such backup folder"):
        bm.read_manifest(tmp_path / "missing")


# -- facts, secrets, the empty-stack check --------------------------------------------------------


def test_fact_lines_and_their_differences() -> None:
    facts = bm.parse_fact_lines(
        ["runs=3", "alias:m@champion=2", "alias:m@challenger=3", "noise", "server_version=15.4"]
    )
    assert facts == {
        "runs": 3,
        "aliases": {"m@champion": "2", "m@challenger": "3"},
        "server_version": "15.4",
    }
    expected = {"mlflow": {"runs": 3, "aliases": {"m@champion": "2"}}, "prefect": {"flow_runs": 1}}
    found = {"mlflow": {"runs": 3, "aliases": {"m@champion": "3"}}, "prefect": {"flow_runs": 1}}
    assert bm.fact_differences(expected, found) == [
        "mlflow.aliases: backup {'m@champion': '2'}, restored {'m@champion': '3'}"
    ]
    assert bm.fact_differences(expected, expected) == []


def test_key_fingerprints_tell_keys_apart_without_showing_them() -> None:
    key = "kRUhGb3eCp6XhVdV6ZPgVN1VRrdOX6WrKTUMH5-ojTI="
    fingerprint = bm.key_fingerprint(key)
    assert fingerprint == bm.key_fingerprint(key) and len(fingerprint or "") == 16
    assert fingerprint not in key and key[:8] not in (fingerprint or "")
    assert bm.key_fingerprint(key[:-2] + "Y=") != fingerprint
    assert bm.key_fingerprint(None) is None and bm.key_fingerprint("") is None
    assert bm.blocks_readable(fingerprint, fingerprint)
    assert not bm.blocks_readable(fingerprint, bm.key_fingerprint("other"))
    assert bm.blocks_readable(None, None)  # Prefect's own key, stored in the restored database


def test_connection_urls_lose_their_password() -> None:
    url = "postgresql+asyncpg://prefect:s3cr%2Ft@db.internal:5432/prefect"
    assert bm.without_password(url) == "postgresql+asyncpg://prefect:***@db.internal:5432/prefect"
    assert bm.without_password("sqlite:////home/me/stack/prefect.db").endswith("prefect.db")


def test_a_stack_holding_data_is_refused_unless_forced() -> None:
    assert bm.refusal({"prefect": 0, "mlflow": 0, "raw": 0}, force=False) is None
    message = bm.refusal({"prefect": 35, "mlflow": 0, "artifacts": 12}, force=False) or ""
    assert "prefect: 35 item(s)" in message and "artifacts: 12 item(s)" in message
    assert "mlflow" not in message and "--force" in message
    assert bm.refusal({"prefect": 35}, force=True) is None


def test_sizes_for_people() -> None:
    assert bm.human_bytes(999) == "999 B"
    assert bm.human_bytes(12_345_678) == "12.3 MB"
    assert bm.human_bytes(3 * 10**12) == "3000.0 GB"


def test_object_keys_stay_inside_the_bucket_folder(tmp_path: Path) -> None:
    assert backup_s3.object_path(tmp_path, "raw/green/2023-01.parquet") == (
        tmp_path / "raw" / "green" / "2023-01.parquet"
    )
    for key in ("../escape", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(ValueError, match="cannot be stored"):
            backup_s3.object_path(tmp_path, key)


# -- SQLite ---------------------------------------------------------------------------------------


def test_sqlite_urls_of_every_driver() -> None:
    assert backup_sql.sqlite_path("sqlite+aiosqlite:////s/prefect.db") == Path("/s/prefect.db")
    assert backup_sql.sqlite_path("sqlite:////s/mlflow.db") == Path("/s/mlflow.db")
    assert backup_sql.sqlite_path("sqlite:///:memory:") is None
    assert backup_sql.sqlite_path("postgresql+psycopg2://u@h/db") is None


def test_a_snapshot_of_a_live_database_holds_what_was_committed(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    writer = sqlite3.connect(live)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE flow_run (id INTEGER)")
    writer.execute("INSERT INTO flow_run VALUES (1)")
    writer.commit()
    writer.execute("INSERT INTO flow_run VALUES (2)")  # in flight: not committed
    backup_sql.sqlite_snapshot(live, tmp_path / "copy.db")
    writer.rollback()
    writer.close()
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT id FROM flow_run").fetchall() == [(1,)]
    assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    copy.close()
    assert stat.S_IMODE((tmp_path / "copy.db").stat().st_mode) == 0o600
    with pytest.raises(BackupError, match="has the stack ever run"):
        backup_sql.sqlite_snapshot(tmp_path / "missing.db", tmp_path / "x.db")


# -- the native stack -----------------------------------------------------------------------------


def test_native_stores_follow_the_launchers_environment(tmp_path: Path) -> None:
    settings = LocalStackSettings(_env_file=None, nyctaxi_home=tmp_path)
    env = stack_environment(settings, {}, app_dir=tmp_path, venv_bin=tmp_path)
    found = {s.component.name: (s.component.kind, s.target) for s in backup_native.stores(env)}
    state = tmp_path / "stack"
    assert found == {
        "prefect": ("sqlite", str(state / "prefect" / "prefect.db")),
        "mlflow": ("sqlite", str(state / "mlflow" / "mlflow.db")),
        "mlflow_auth": ("sqlite", str(state / "mlflow" / "auth.db")),
        "artifacts": ("folder", str(state / "mlflow" / "artifacts")),
    }
    configured = {
        "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://p:pw@h:5432/prefect",
        "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://m:pw@h:5432/mlflow",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
    }
    settings = LocalStackSettings(_env_file=None, nyctaxi_home=tmp_path, s3_endpoint_url="http://x")
    env = stack_environment(settings, configured, app_dir=tmp_path, venv_bin=tmp_path)
    stores = {s.component.name: s.component for s in backup_native.stores(env)}
    assert stores["prefect"].kind == "postgres" and "pw" not in stores["prefect"].source
    assert (stores["artifacts"].kind, stores["artifacts"].source) == ("s3", "s3://mlflow-artifacts")
    assert (stores["raw"].kind, stores["raw"].source) == ("s3", "s3://nyctaxi-raw")


def test_processes_holding_the_state_open_are_found(tmp_path: Path) -> None:
    proc, state = tmp_path / "proc", tmp_path / "home" / "stack"
    (state / "prefect").mkdir(parents=True)
    for pid, target, command in [
        ("101", state / "prefect" / "prefect.db", b"prefect\0server"),
        ("102", tmp_path / "elsewhere.db", b"other"),
    ]:
        (proc / pid / "fd").mkdir(parents=True)
        (proc / pid / "fd" / "3").symlink_to(target)
        (proc / pid / "cmdline").write_bytes(command)
    assert backup_native.open_files_under(state, proc) == ["pid 101 (prefect server)"]


PREFECT_SCHEMA = [
    "CREATE TABLE flow_run (id TEXT, infrastructure_document_id TEXT)",
    "CREATE TABLE deployment (id TEXT, infrastructure_document_id TEXT, storage_document_id TEXT)",
    "CREATE TABLE automation (id TEXT)",
    "CREATE TABLE block_type (id TEXT, slug TEXT)",
    "CREATE TABLE block_document (id TEXT, name TEXT, block_type_id TEXT, is_anonymous BOOLEAN)",
    "CREATE TABLE block_document_reference (parent_block_document_id TEXT)",
    "CREATE TABLE concurrency_limit_v2 (name TEXT, active_slots INTEGER)",
    "INSERT INTO flow_run VALUES ('run-1', 'b1'), ('run-2', NULL)",
    "INSERT INTO deployment VALUES ('dep-1', NULL, NULL)",
    "INSERT INTO block_type VALUES ('t1', 'webhook')",
    "INSERT INTO block_document VALUES ('b1', 'nyctaxi-notify', 't1', 0)",
    "INSERT INTO concurrency_limit_v2 VALUES ('nyctaxi-promotion', 1)",
]
MLFLOW_SCHEMA = [
    "CREATE TABLE experiments (id INTEGER)",
    "CREATE TABLE runs (id TEXT)",
    "CREATE TABLE registered_models (name TEXT)",
    "CREATE TABLE model_versions (name TEXT, version INTEGER)",
    "CREATE TABLE registered_model_aliases (name TEXT, alias TEXT, version INTEGER)",
    "INSERT INTO experiments VALUES (0), (1)",
    "INSERT INTO runs VALUES ('r1'), ('r2')",
    "INSERT INTO registered_models VALUES ('nyc-taxi-duration')",
    "INSERT INTO model_versions VALUES ('nyc-taxi-duration', 1), ('nyc-taxi-duration', 2)",
    "INSERT INTO registered_model_aliases VALUES ('nyc-taxi-duration', 'champion', 2)",
]


def make_state(home: Path) -> None:
    """A stopped native stack's state, shaped like the real one (only the tables we read)."""
    state = home / "stack"
    for path, schema in [
        (state / "prefect" / "prefect.db", PREFECT_SCHEMA),
        (state / "mlflow" / "mlflow.db", MLFLOW_SCHEMA),
        (
            state / "mlflow" / "auth.db",
            ["CREATE TABLE users (id INTEGER)", "INSERT INTO users VALUES (1)"],
        ),
    ]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            for statement in schema:
                db.execute(statement)
        db.close()
    model = state / "mlflow" / "artifacts" / "1" / "models" / "m-1" / "artifacts" / "MLmodel"
    model.parent.mkdir(parents=True)
    model.write_text("flavors: {}\n")


@pytest.fixture
def native_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The launcher's inputs as a user's shell has them: a home, free ports, nothing else."""
    for key in (
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "MLFLOW_BACKEND_STORE_URI",
        "S3_ENDPOINT_URL",
        "MLFLOW_AUTH_DATABASE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
        "PREFECT_HOME",
        "PREFECT_SERVER_ENCRYPTION_KEY",
        "MLFLOW_TRACKING_URI",
    ):
        monkeypatch.delenv(key, raising=False)
    for port in ("PREFECT_PORT", "MLFLOW_PORT", "PREDICT_PORT"):
        monkeypatch.setenv(port, str(free_port()))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_native_round_trip_onto_an_empty_home_with_other_secrets(
    native_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = native_env / "source"
    make_state(source)
    (source / "credentials.env").write_text("PREFECT_SERVER_ENCRYPTION_KEY=old-key\n")
    monkeypatch.setenv("NYCTAXI_HOME", str(source))
    backup = take_native_backup(native_env, native_env / "backups")

    assert bm.parse_backup_name(backup.name)[0] == "native"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    manifest = verified_manifest(backup, "native")
    assert manifest["facts"]["mlflow"]["aliases"] == {"nyc-taxi-duration@champion": "2"}
    assert manifest["facts"]["prefect"]["flow_runs"] == 2
    assert manifest["facts"]["artifacts"] == {"files": 1}
    assert manifest["secrets"] == {
        "included": False,
        "prefect_encryption_key_fingerprint": bm.key_fingerprint("old-key"),
    }
    assert not (backup / bm.SECRETS_FILE).exists()
    assert "old-key" not in json.dumps(manifest)

    target = native_env / "target"
    monkeypatch.setenv("NYCTAXI_HOME", str(target))
    done = restore_native(native_env, backup)
    assert done.warnings == []
    assert done.dropped_blocks == ["block:webhook/nyctaxi-notify"]
    new_key = parse_env_lines((target / "credentials.env").read_text())
    assert new_key["PREFECT_SERVER_ENCRYPTION_KEY"] != "old-key"  # this home's own secrets
    prefect = sqlite3.connect(target / "stack" / "prefect" / "prefect.db")
    assert prefect.execute(
        "SELECT id, infrastructure_document_id FROM flow_run ORDER BY id"
    ).fetchall() == [
        ("run-1", None),
        ("run-2", None),
    ], "the flow runs stay; only their pointer at the dropped block goes"
    assert prefect.execute("SELECT count(*) FROM block_document").fetchone() == (0,)
    assert prefect.execute("SELECT active_slots FROM concurrency_limit_v2").fetchone() == (0,)
    prefect.close()
    model = target / "stack" / "mlflow" / "artifacts" / "1" / "models" / "m-1" / "artifacts"
    assert (model / "MLmodel").read_text() == "flavors: {}\n"
    auth = target / "stack" / "mlflow" / "auth.db"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600

    # Again onto the same home: it holds data now.
    with pytest.raises(
        BackupError, match=r"refusing to restore onto a stack that holds data \(prefect"
    ):
        restore_native(native_env, backup)
    forced = restore_native(native_env, backup, force=True)
    assert any("moved aside prefect.db" in line for line in forced.lines)
    assert list((target / "stack" / "prefect").glob("prefect.db.replaced-*"))


def test_same_secrets_keep_the_blocks_and_a_secrets_backup_is_private(
    native_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = native_env / "source"
    make_state(source)
    monkeypatch.setenv("NYCTAXI_HOME", str(source))
    monkeypatch.setenv("PREFECT_SERVER_ENCRYPTION_KEY", "same-key")
    backup = take_native_backup(native_env, native_env / "backups", with_secrets=True)
    secrets = backup / bm.SECRETS_FILE
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert "PREFECT_SERVER_ENCRYPTION_KEY=same-key" in secrets.read_text()

    monkeypatch.delenv("PREFECT_SERVER_ENCRYPTION_KEY")
    monkeypatch.setenv("NYCTAXI_HOME", str(native_env / "target"))
    done = restore_native(native_env, backup)
    assert done.dropped_blocks == []
    installed = native_env / "target" / "credentials.env"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o600
    assert parse_env_lines(installed.read_text())["PREFECT_SERVER_ENCRYPTION_KEY"] == "same-key"


def test_a_docker_backup_does_not_restore_onto_the_native_stack(
    native_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_state(native_env / "source")
    monkeypatch.setenv("NYCTAXI_HOME", str(native_env / "source"))
    backup = take_native_backup(native_env, native_env / "backups")
    manifest = json.loads((backup / bm.MANIFEST).read_text())
    manifest["stack"] = "docker"
    (backup / bm.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="backup of the docker stack"):
        restore_native(native_env, backup)
