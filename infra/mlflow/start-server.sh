#!/bin/sh
# The MLflow tracking server of infra/compose.yaml: PostgreSQL backend store, artifacts
# proxied to /mlartifacts, basic-auth on. Every credential is read from a secret file into
# this process's environment (never onto its command line, where `ps` would show it).
set -eu
secret() { tr -d '\n' < "/run/secrets/$1"; }

export MLFLOW_BACKEND_STORE_URI="$(secret mlflow_db_url)"
export MLFLOW_AUTH_ADMIN_PASSWORD="$(secret mlflow_admin_password)"
export MLFLOW_FLASK_SERVER_SECRET_KEY="$(secret mlflow_flask_secret)"
# The basic-auth app keeps its users in a database of its own, named in its config file.
umask 077
MLFLOW_AUTH_CONFIG_PATH="$(mktemp -t basic_auth.XXXXXX.ini)"
export MLFLOW_AUTH_CONFIG_PATH
sed "s|^database_uri = .*|database_uri = $(secret mlflow_auth_db_url)|" \
    /opt/vidistill/infra/mlflow/basic_auth.ini > "$MLFLOW_AUTH_CONFIG_PATH"

exec mlflow server \
    --app-name basic-auth \
    --host 0.0.0.0 --port 5000 --workers 2 \
    --artifacts-destination /mlartifacts \
    --allowed-hosts "mlflow,mlflow:5000,localhost,localhost:5000,127.0.0.1,127.0.0.1:5000,${MLFLOW_PUBLIC_HOST:-localhost}"
