#!/usr/bin/env bash
# The one-shot compose service `databases`, on every `up`, against the running server (PGHOST,
# PGPASSWORD of the superuser): one database and one login role each for Prefect, MLflow's
# tracking store and MLflow's user store (mlflow_auth: users, password hashes and grants of the
# basic-auth app), each role owning only its database, and no one else allowed to connect to any
# of them. Passwords come from the environment (PREFECT_DB_PASSWORD, MLFLOW_DB_PASSWORD,
# MLFLOW_AUTH_DB_PASSWORD; see .env.example) and are set on every run: a volume from an older
# release gains the databases it lacks, and a password changed in .env takes effect on the next
# `make up` (the superuser's own, POSTGRES_PASSWORD, is read only when the volume is created).
set -euo pipefail

: "${PREFECT_DB_PASSWORD:?PREFECT_DB_PASSWORD must be set for the postgres service}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set for the postgres service}"
: "${MLFLOW_AUTH_DB_PASSWORD:?MLFLOW_AUTH_DB_PASSWORD must be set for the postgres service}"

create_database() {  # NAME PASSWORD: role NAME owning database NAME
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" --no-password \
        --set name="$1" --set password="$2" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')
\gexec
ALTER ROLE :"name" WITH LOGIN PASSWORD :'password';
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT ALL ON DATABASE :"name" TO :"name";
SQL
    echo "init-databases: database and role $1 ready"
}

create_database prefect "$PREFECT_DB_PASSWORD"
create_database mlflow "$MLFLOW_DB_PASSWORD"
create_database mlflow_auth "$MLFLOW_AUTH_DB_PASSWORD"
