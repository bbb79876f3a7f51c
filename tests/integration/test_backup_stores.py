"""Backups of the configured stores, without the whole stack: Postgres databases and S3
buckets, and the Docker stack's backup logic.

1. The native stack on Postgres and S3: a real Prefect server on a throwaway cluster holds a
   block and a flow run, moto holds the buckets; backup, restore into fresh databases and another
   S3 endpoint, and the Prefect server starts on the restored database with another key and
   saves its block again. The Docker stack's pg_restore (as the superuser, objects owned by the
   database's role) and its psql wrapper run here too, through a stand-in for `compose exec`.
2. stack.backup_docker end to end on a stand-in for docker and compose
   (tests/e2e/docker_backup.STAND_IN; the Docker end-to-end test drives the real one).

The whole native drill (`make run`, backup, wipe, restore) is tests/e2e/test_native_backup.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from cryptography.fernet import Fernet
from prefect import flow
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.settings import PREFECT_API_URL, temporary_settings

from stack import backup_docker, backup_sql, backup_stacks
from stack.backup_manifest import BackupError, human_bytes, read_manifest
from stack.backup_stacks import backup_native, restore_native
from tests.e2e import docker_backup
from tests.servers import (
    REPO_ROOT,
    S3Endpoint,
    free_port,
    moto_s3_server,
    postgres_cluster,
    prefect_server,
)

pytestmark = [pytest.mark.integration]


# -- the configured stores: Postgres and S3 ------------------------------------------------------


def create_owned_database(admin: backup_sql.PgTool, name: str, role: str) -> None:
    """A database owned by its own login role, as the Docker stack's `databases` job makes."""
    statements = [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
        f"THEN CREATE ROLE {role} LOGIN; END IF; END $$",
        f"CREATE DATABASE {name} OWNER {role}",
    ]
    backup_sql.psql(admin, statements, transaction=False)


def fake_compose(port: int, root: Path) -> backup_docker.Compose:
    """`compose exec -T postgres CMD...` run here against the cluster: CMD as the container
    would run it, with the postgres service's environment."""
    script = 'shift 3; exec "$@"'  # drop `exec -T postgres`
    env = {**os.environ, "POSTGRES_USER": "app", "POSTGRES_PASSWORD": "unused", "PGPORT": str(port)}
    return backup_docker.Compose(["sh", "-c", script, "compose"], root, root / "no.env", env)


def s3_objects(s3: S3Endpoint, bucket: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=s3.url, **client_keys(s3))
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing
    }


def client_keys(s3: S3Endpoint) -> dict[str, str]:
    return {
        "aws_access_key_id": s3.access_key,
        "aws_secret_access_key": s3.secret_key,
        "region_name": s3.region,
    }


def stack_env(home: Path, port: int, suffix: str, s3: S3Endpoint, key: str) -> dict[str, str]:
    return {
        "NYCTAXI_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            f"postgresql+asyncpg://prefect:pw@127.0.0.1:{port}/prefect{suffix}"
        ),
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://mlflow:pw@127.0.0.1:{port}/mlflow{suffix}",
        "S3_ENDPOINT_URL": s3.url,
        **s3.client_env(),
        "PREFECT_SERVER_ENCRYPTION_KEY": key,
        "PREFECT_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "PREDICT_PORT": str(free_port()),
    }


MLFLOW_TABLES = [
    "CREATE TABLE experiments (experiment_id integer)",
    "CREATE TABLE runs (run_uuid text)",
    "CREATE TABLE registered_models (name text)",
    "CREATE TABLE model_versions (name text, version integer)",
    "CREATE TABLE registered_model_aliases (alias text, version integer, name text)",
    "INSERT INTO experiments VALUES (0), (1)",
    "INSERT INTO runs VALUES ('r1')",
    "INSERT INTO registered_models VALUES ('nyc-taxi-duration')",
    "INSERT INTO model_versions VALUES ('nyc-taxi-duration', 1)",
    "INSERT INTO registered_model_aliases VALUES ('champion', 1, 'nyc-taxi-duration')",
]


@flow(name="backup-drill")
def _drill_flow() -> None:
    return None


@pytest.mark.timeout(600)
def test_postgres_and_s3_stores_round_trip_onto_other_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, measurement: Callable[[str], None]
) -> None:
    with (
        postgres_cluster() as pg,
        moto_s3_server(tmp_path / "s3-a") as s3_a,
        moto_s3_server(tmp_path / "s3-b") as s3_b,
    ):
        admin = backup_sql.HostPostgres(
            f"postgresql://app@127.0.0.1:{pg.port}/postgres", "postgres"
        )
        for suffix in ("", "_target"):
            create_owned_database(admin, f"prefect{suffix}", "prefect")
            create_owned_database(admin, f"mlflow{suffix}", "mlflow")
        create_owned_database(admin, "prefect_docker", "prefect")
        old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        source = stack_env(tmp_path / "home-a", pg.port, "", s3_a, old_key)
        target = stack_env(tmp_path / "home-b", pg.port, "_target", s3_b, new_key)
        backup_sql.psql(
            backup_sql.HostPostgres(source["MLFLOW_BACKEND_STORE_URI"], "mlflow"), MLFLOW_TABLES
        )
        auth_db = tmp_path / "home-a" / "stack" / "mlflow" / "auth.db"
        auth_db.parent.mkdir(parents=True)
        backup_sql.sqlite_execute(auth_db, ["CREATE TABLE users (id integer)"])
        s3_a.create_bucket("mlflow-artifacts")
        s3_a.create_bucket("nyctaxi-raw")
        objects = {
            "1/models/m-1/artifacts/MLmodel": b"flavors: {}\n",
            "1/r1/artifacts/report.md": b"# r",
        }
        raw = {"raw/green/2023-01.parquet": os.urandom(2048)}
        for bucket, items in (("mlflow-artifacts", objects), ("nyctaxi-raw", raw)):
            client = boto3.client("s3", endpoint_url=s3_a.url, **client_keys(s3_a))
            for key, body in items.items():
                client.put_object(Bucket=bucket, Key=key, Body=body)

        prefect_url = source["PREFECT_API_DATABASE_CONNECTION_URL"]
        with (
            prefect_server(
                tmp_path / "prefect-a", database_url=prefect_url, encryption_key=old_key
            ) as api,
            temporary_settings(updates={PREFECT_API_URL: api}),
            get_client(sync_client=True) as client,
        ):
            Webhook(method="POST", url="http://127.0.0.1:9/hook").save("nyctaxi-notify")
            run_id = client.create_flow_run(_drill_flow).id
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name="nyctaxi-promotion", limit=1, active_slots=1)
            )
            for key, value in source.items():
                monkeypatch.setenv(key, value)
            started = time.monotonic()
            backup = backup_native(tmp_path, tmp_path / "backups")
            backup_seconds = time.monotonic() - started
        manifest = read_manifest(backup)
        kinds = {c["name"]: c["kind"] for c in manifest["components"]}
        assert kinds == {
            "prefect": "postgres",
            "mlflow": "postgres",
            "mlflow_auth": "sqlite",
            "artifacts": "s3",
            "raw": "s3",
        }
        assert "pw@" not in json.dumps(manifest)
        assert manifest["facts"]["prefect"]["flow_runs"] == 1
        assert manifest["facts"]["mlflow"]["aliases"] == {"nyc-taxi-duration@champion": "1"}
        assert manifest["versions"]["postgres"].startswith("15")

        # The bucket tool as the Docker stack runs it: a script, the keys in its environment.
        report = tmp_path / "s3-report.json"
        subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "stack" / "backup_s3.py"),
                "count",
                "--bucket",
                "mlflow-artifacts",
                "--bucket",
                "nyctaxi-raw",
                "--report",
                str(report),
            ],
            env={**os.environ, **source},
            check=True,
            capture_output=True,
        )
        counted = json.loads(report.read_text())
        assert {b: c["objects"] for b, c in counted["buckets"].items()} == {
            "mlflow-artifacts": 2,
            "nyctaxi-raw": 1,
        }

        for key in source:
            monkeypatch.delenv(key)
        for key, value in target.items():
            monkeypatch.setenv(key, value)
        started = time.monotonic()
        done = restore_native(tmp_path, backup)
        restore_seconds = time.monotonic() - started
        assert done.warnings == []
        assert done.dropped_blocks == ["block:webhook/nyctaxi-notify"]
        assert s3_objects(s3_b, "mlflow-artifacts") == objects
        assert s3_objects(s3_b, "nyctaxi-raw") == raw
        with pytest.raises(BackupError, match="refusing to restore onto a stack that holds data"):
            restore_native(tmp_path, backup)

        target_url = target["PREFECT_API_DATABASE_CONNECTION_URL"]
        with (
            prefect_server(
                tmp_path / "prefect-b", database_url=target_url, encryption_key=new_key
            ) as api,
            temporary_settings(updates={PREFECT_API_URL: api}),
            get_client(sync_client=True) as client,
        ):
            Webhook(method="POST", url="http://127.0.0.1:9/hook").save(
                "nyctaxi-notify", overwrite=True
            )
            assert client.read_flow_run(run_id).flow_id is not None
            limit = client.read_global_concurrency_limit_by_name("nyctaxi-promotion")
            assert limit.active_slots == 0

        # The Docker stack's way: as the superuser in the postgres container, objects owned by
        # the database's role, the password from the container's environment.
        compose = fake_compose(pg.port, tmp_path)
        docker_db = backup_docker.ComposePostgres(compose, "prefect_docker", role="prefect")
        backup_sql.pg_restore(docker_db, backup / "prefect.dump")
        assert (
            backup_sql.pg_facts(docker_db, backup_sql.FACT_QUERIES["prefect"])
            == manifest["facts"]["prefect"]
        )
        assert backup_sql.psql(docker_db, [backup_sql.LIST_BLOCKS]) == [
            "block:webhook/nyctaxi-notify"
        ]
        owners = backup_sql.psql(
            docker_db, ["SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"]
        )
        assert owners == ["prefect"]
        backup_sql.psql(docker_db, backup_sql.DROP_BLOCKS)
        assert backup_sql.pg_facts(docker_db, backup_sql.FACT_QUERIES["prefect"])["flow_runs"] == 1
        backup_docker.drop_databases(compose, ["prefect_docker"])
        assert "prefect_docker" not in backup_sql.psql(admin, ["SELECT datname FROM pg_database"])

    measurement(
        f"native backup on Postgres + S3: {human_bytes(manifest['total_bytes'])} in "
        f"{backup_seconds:.1f}s, restored into fresh databases and buckets in "
        f"{restore_seconds:.1f}s"
    )


# -- the Docker stack's backup logic, on a stand-in for compose ---------------------------------


@pytest.mark.timeout(600)
def test_docker_backup_and_restore_logic_on_a_stand_in_compose(tmp_path: Path) -> None:
    """stack.backup_docker end to end with compose replaced by docker_backup.STAND_IN (the real
    pg tools, init-databases.sh, services.buckets and backup_s3.py, on this machine): the
    backup, the wipe, the refusals, the restore onto other secrets, a forced restore."""
    with postgres_cluster() as pg, moto_s3_server(tmp_path / "s3") as s3:
        s3_env = {**s3.client_env(), "S3_ENDPOINT_URL": s3.url}
        s3_env |= {"RAW_BUCKET": "nyctaxi-raw", "MLFLOW_ARTIFACTS_BUCKET": "mlflow-artifacts"}
        old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        env_file = tmp_path / "stack.env"
        env_file.write_text(f"PREFECT_SERVER_ENCRYPTION_KEY={old_key}\n")
        compose = docker_backup.stand_in_compose(tmp_path, pg.port, s3_env, env_file)
        compose.run("run", "--rm", "--no-deps", "-T", "databases")  # roles and databases
        compose.run("run", "--rm", "--no-deps", "-T", "buckets")
        url = f"postgresql+asyncpg://prefect@127.0.0.1:{pg.port}/prefect"
        with (
            prefect_server(tmp_path / "prefect", database_url=url, encryption_key=old_key) as api,
            temporary_settings(updates={PREFECT_API_URL: api}),
            get_client(sync_client=True) as client,
        ):
            Webhook(method="POST", url="http://127.0.0.1:9/hook").save("nyctaxi-notify")
            client.create_flow_run(_drill_flow)
        for name, statements in (
            ("mlflow", MLFLOW_TABLES),
            ("mlflow_auth", ["CREATE TABLE users (id integer)", "INSERT INTO users VALUES (1)"]),
        ):
            role_url = f"postgresql://{name}@127.0.0.1:{pg.port}/{name}"
            backup_sql.psql(backup_sql.HostPostgres(role_url, name), statements)
        artifacts = {"1/models/m-1/artifacts/MLmodel": b"flavors: {}\n"}
        client = boto3.client("s3", endpoint_url=s3.url, **client_keys(s3))
        client.put_object(
            Bucket="mlflow-artifacts", Key=next(iter(artifacts)), Body=b"flavors: {}\n"
        )
        client.put_object(Bucket="nyctaxi-raw", Key="raw/green/2023-01.parquet", Body=b"PAR1")

        with pytest.raises(BackupError, match="postgres is not running"):
            backup_stacks.backup_docker(compose, tmp_path / "backups")
        docker_backup.set_running(compose, ["postgres", "minio", "prefect-server", "mlflow"])
        backup = backup_stacks.backup_docker(compose, tmp_path / "backups")
        manifest = read_manifest(backup)
        assert manifest["facts"]["prefect"]["flow_runs"] == 1
        assert manifest["facts"]["mlflow"]["aliases"] == {"nyc-taxi-duration@champion": "1"}
        assert manifest["facts"]["artifacts"] == {"objects": 1}
        assert manifest["facts"]["raw"] == {"objects": 1}
        assert manifest["versions"]["images"]["minio"] == "stand-in/minio"
        assert manifest["versions"]["postgres"].startswith("15")
        assert (backup / "buckets" / "mlflow-artifacts" / next(iter(artifacts))).is_file()

        with pytest.raises(BackupError, match=r"running \(prefect-server, mlflow\).*make down"):
            backup_stacks.restore_docker(compose, backup)
        # The wipe (`down -v`), and a .env with other secrets.
        docker_backup.set_running(compose, [])
        backup_docker.drop_databases(compose, backup_docker.DATABASES)
        for bucket in ("mlflow-artifacts", "nyctaxi-raw"):
            for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
            client.delete_bucket(Bucket=bucket)
        env_file.write_text(f"PREFECT_SERVER_ENCRYPTION_KEY={new_key}\n")

        done = backup_stacks.restore_docker(compose, backup)
        assert done.warnings == [], done.warnings
        assert done.dropped_blocks == ["block:webhook/nyctaxi-notify"]
        assert s3_objects(s3, "mlflow-artifacts") == artifacts
        prefect = backup_docker.ComposePostgres(compose, "prefect")
        restored = backup_sql.pg_facts(prefect, backup_sql.FACT_QUERIES["prefect"])
        assert (restored["flow_runs"], restored["block_documents"]) == (1, 0)
        owners = backup_sql.psql(
            prefect, ["SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"]
        )
        assert owners == ["prefect"]

        with pytest.raises(BackupError, match=r"holds data \(prefect: \d+ item"):
            backup_stacks.restore_docker(compose, backup)
        forced = backup_stacks.restore_docker(compose, backup, force=True)
        assert forced.warnings == [] and s3_objects(s3, "nyctaxi-raw") == {
            "raw/green/2023-01.parquet": b"PAR1"
        }
