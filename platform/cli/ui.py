"""`vidistill ui`: the MLflow UI on the store the trainers log to."""
from __future__ import annotations

import os
import sys

import click


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 exposes it to the network).")
@click.option("--port", type=int, default=5000, show_default=True, help="Port to listen on.")
@click.option("--workers", type=int, default=1, show_default=True, help="Server worker processes.")
def ui(host, port, workers) -> None:
    """Browse runs, metrics and registered models in the MLflow UI.

    \b
    Uses the store the training jobs log to: MLFLOW_TRACKING_URI, or the SQLite
    store under $VIDISTILL_HOME (mlflow.db, artifacts in mlartifacts/). If
    MLFLOW_TRACKING_URI names a tracking server (http://...), that server
    already is the UI: its address is printed instead.
    """
    from vidistill.trainers import tracking

    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://")):
        click.echo(f"MLflow runs on a tracking server; open {uri}")
        return
    home = tracking.vidistill_home()
    home.mkdir(parents=True, exist_ok=True)
    artifacts = (home / "mlartifacts").as_uri()
    click.echo(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C stops it", err=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--registry-store-uri", uri,
               "--default-artifact-root", artifacts, "--host", host, "--port", str(port), "--workers", str(workers)]
    os.execv(sys.executable, command)  # the UI takes over this process: signals reach it directly
