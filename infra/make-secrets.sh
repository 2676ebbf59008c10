#!/bin/sh
# Create infra/secrets/: random passwords and the URLs and files built from them, readable by
# their owner only. Run once, as the user the containers run as (uid 1000, `ray`, in the
# vidistill image), or chown the folder to it:  sh infra/make-secrets.sh
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
keep() { [ -s "secrets/$1" ] || printf '%s\n' "$2" > "secrets/$1"; }

keep postgres_password "$(random)"
pw="$(tr -d '\n' < secrets/postgres_password)"
keep vidistill_db_url "postgresql+psycopg://vidistill:${pw}@postgres:5432/vidistill"
keep mlflow_db_url "postgresql+psycopg://vidistill:${pw}@postgres:5432/mlflow"
keep mlflow_auth_db_url "postgresql+psycopg://vidistill:${pw}@postgres:5432/mlflow_auth"
keep mlflow_admin_password "$(random)"
keep mlflow_flask_secret "$(random)"
keep ray_auth_token "$(random)"
admin_pw="$(tr -d '\n' < secrets/mlflow_admin_password)"
# Read by MLflow clients (the jobs on every node) as ~/.mlflow/credentials.
keep mlflow_credentials "$(printf '[mlflow]\nmlflow_tracking_username = admin\nmlflow_tracking_password = %s' "$admin_pw")"
ls -l secrets
