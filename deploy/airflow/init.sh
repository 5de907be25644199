#!/usr/bin/env bash
# One-shot Airflow initialisation (the `airflow-init` service, run as root like the init of
# Airflow's official docker-compose):
#   * migrate the metadata database;
#   * the admin login for Airflow 3's default SimpleAuthManager: users are declared by
#     AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS, their passwords live in a JSON file; writing it
#     from .env on every start keeps .env the single source of truth (otherwise the API server
#     would generate a random password and print it once);
#   * the `newswatch_fetch` pool the fetch tasks run in;
#   * a config check, so a bad newswatch config fails here and not in the first task;
#   * hand the shared volumes to the Airflow user (uid $AIRFLOW_UID, gid 0).
# Airflow and newswatch commands go through the image's /entrypoint, as in the official init:
# it waits for the database and sets up the environment for running as root.
set -euo pipefail

AIRFLOW_UID=${AIRFLOW_UID:-50000}
PASSWORDS_FILE=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}
ADMIN=${AIRFLOW_ADMIN_USERNAME:?}
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD must be set in .env}"

mkdir -p /opt/airflow/logs /opt/airflow/newswatch-data "$(dirname "$PASSWORDS_FILE")"

/entrypoint airflow db migrate

python3 - "$PASSWORDS_FILE" "$ADMIN" <<'PY'
import json, os, sys
path, user = sys.argv[1], sys.argv[2]
with open(path, "w", encoding="utf-8") as handle:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, handle)
    handle.write("\n")
PY
chmod 600 "$PASSWORDS_FILE"

/entrypoint airflow pools set newswatch_fetch "${NEWSWATCH_FETCH_POOL_SLOTS:-4}" "outbound fetching"

/entrypoint python -c "from pipeline.settings import load_settings; s = load_settings(); \
print('newswatch config ok: store', s.store.url.split('@')[-1], '- search', s.search.url)"

chown -R "${AIRFLOW_UID}:0" /opt/airflow/logs /opt/airflow/newswatch-data \
  "$(dirname "$PASSWORDS_FILE")"
echo "airflow init done"
