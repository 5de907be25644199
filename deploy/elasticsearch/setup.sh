#!/usr/bin/env bash
# One-shot setup for the single Elasticsearch node, after Elastic's own docker-compose example:
#   1. a CA and a node certificate (elasticsearch-certutil) in the shared `es-certs` volume,
#      so the node serves HTTPS and clients verify it with certs/ca/ca.crt;
#   2. once the node answers, the `kibana_system` password (Kibana logs in with it);
#   3. a least-privilege role and login for the pipeline: `newswatch` may manage index
#      templates and everything under `newswatch-*`, nothing else (never the `elastic` superuser).
# Idempotent: existing certificates are kept, passwords and the role are (re)set every run.
# Runs in the Elasticsearch image as root (working directory /usr/share/elasticsearch).
set -euo pipefail

CERTS=config/certs
ES_URL=${ES_URL:-https://elasticsearch:9200}
SAFE='^[A-Za-z0-9_-]{8,}$'  # passwords go into JSON and URLs unquoted: keep them plain

for name in ELASTIC_PASSWORD KIBANA_PASSWORD NEWSWATCH_ES_PASSWORD; do
  value=${!name:-}
  if [[ ! $value =~ $SAFE ]]; then
    echo "$name must be at least 8 characters of A-Z a-z 0-9 _ - (set it in .env)" >&2
    exit 1
  fi
done

if [[ ! -f $CERTS/ca/ca.crt ]]; then
  echo "creating the CA"
  bin/elasticsearch-certutil ca --silent --pem --out $CERTS/ca.zip
  unzip -o -q $CERTS/ca.zip -d $CERTS
fi
if [[ ! -f $CERTS/elasticsearch/elasticsearch.crt ]]; then
  echo "creating the node certificate"
  cat > $CERTS/instances.yml <<'YAML'
instances:
  - name: elasticsearch
    dns: [elasticsearch, localhost]
    ip: [127.0.0.1]
YAML
  bin/elasticsearch-certutil cert --silent --pem --out $CERTS/certs.zip \
    --in $CERTS/instances.yml --ca-cert $CERTS/ca/ca.crt --ca-key $CERTS/ca/ca.key
  unzip -o -q $CERTS/certs.zip -d $CERTS
fi
# Group 0 may read: Elasticsearch (uid 1000), Kibana (uid 1000) and Airflow (uid
# $AIRFLOW_UID) all run with gid 0. The CA key stays root-only.
chown -R root:root $CERTS
find $CERTS -type d -exec chmod 750 {} \;
find $CERTS -type f -exec chmod 640 {} \;
chmod 600 $CERTS/ca/ca.key

es() {  # es METHOD PATH [JSON]: an authenticated call as `elastic`; fails on HTTP errors
  local args=(--silent --show-error --fail --cacert "$CERTS/ca/ca.crt"
              -u "elastic:${ELASTIC_PASSWORD}" -H 'Content-Type: application/json'
              -X "$1" "${ES_URL}$2")
  if [[ $# -ge 3 ]]; then args+=(-d "$3"); fi
  curl "${args[@]}"
}

echo "waiting for Elasticsearch at ${ES_URL}"
until curl --silent --cacert $CERTS/ca/ca.crt "${ES_URL}" | grep -q "missing authentication credentials"; do
  sleep 5
done
until es GET /_cluster/health >/dev/null 2>&1; do sleep 5; done

echo "setting the kibana_system password"
es POST /_security/user/kibana_system/_password "{\"password\":\"${KIBANA_PASSWORD}\"}" >/dev/null

echo "creating role newswatch_writer and user newswatch"
es PUT /_security/role/newswatch_writer '{
  "cluster": ["monitor", "manage_index_templates"],
  "indices": [{"names": ["newswatch-*"], "privileges": ["all"]}]
}' >/dev/null
es PUT /_security/user/newswatch "{
  \"password\": \"${NEWSWATCH_ES_PASSWORD}\",
  \"roles\": [\"newswatch_writer\"],
  \"full_name\": \"newswatch pipeline\"
}" >/dev/null

echo "elasticsearch setup done"
