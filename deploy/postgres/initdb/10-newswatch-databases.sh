#!/usr/bin/env bash
# Creates the two databases of the stack on the FIRST start of an empty data volume (the
# postgres image runs /docker-entrypoint-initdb.d/* only then): `airflow` for Airflow's
# metadata and `newswatch` for the pipeline's records, each owned by its own login role so
# neither service can touch the other's tables. Passwords come from the environment
# (docker-compose.yml passes them from .env); psql's :'var' quoting keeps them literal.
# Changing a password in .env later does not change it here: run ALTER ROLE, or remove the
# postgres-data volume to start over.
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD must be set}"
: "${NEWSWATCH_DB_PASSWORD:?NEWSWATCH_DB_PASSWORD must be set}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v airflow_password="${AIRFLOW_DB_PASSWORD}" \
    -v newswatch_password="${NEWSWATCH_DB_PASSWORD}" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow ENCODING 'UTF8';
CREATE ROLE newswatch LOGIN PASSWORD :'newswatch_password';
CREATE DATABASE newswatch OWNER newswatch ENCODING 'UTF8';
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE newswatch FROM PUBLIC;
SQL
