-- Run once by the postgres image on an empty volume (docker-entrypoint-initdb.d), as the
-- POSTGRES_USER it created together with the POSTGRES_DB `vidistill` (the job queue).
CREATE DATABASE mlflow;        -- MLflow's backend store and model registry
CREATE DATABASE mlflow_auth;   -- MLflow basic-auth users and permissions
