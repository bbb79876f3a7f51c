#!/usr/bin/env bash
# Runs once, when the postgres volume is first initialised (/docker-entrypoint-initdb.d of the
# official image): one database and one login role each for Prefect and MLflow, each role owning
# only its database, and no one else allowed to connect to either. Passwords come from the
# container's environment (PREFECT_DB_PASSWORD, MLFLOW_DB_PASSWORD; see .env.example).
# Re-running it changes nothing that exists. To apply new passwords to an existing volume, use
# ALTER ROLE ... PASSWORD (README, troubleshooting) or start over with `docker compose down -v`.
set -euo pipefail

: "${PREFECT_DB_PASSWORD:?PREFECT_DB_PASSWORD must be set for the postgres service}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set for the postgres service}"

create_database() {  # NAME PASSWORD: role NAME owning database NAME
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" --no-password \
        --set name="$1" --set password="$2" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')
\gexec
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT ALL ON DATABASE :"name" TO :"name";
SQL
    echo "init-databases: database and role $1 ready"
}

create_database prefect "$PREFECT_DB_PASSWORD"
create_database mlflow "$MLFLOW_DB_PASSWORD"
