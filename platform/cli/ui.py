"""`vidistill ui`: the MLflow UI on the store the trainers log to."""
from __future__ import annotations

import os
import sys

import click


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 exposes it to the network).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Port to listen on.")
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
    sys.exit(run_server(command))


def run_server(command: list[str], grace: float = 10.0) -> int:
    """Run the MLflow server until it ends or this process gets SIGTERM/SIGINT; its exit code.

    `mlflow ui` starts a server process with workers of its own; a signal to `mlflow ui`
    alone leaves them running (orphaned, holding the port). So the server runs in its own
    process group, a signal here is passed to that group, and whatever of it is left after
    `grace` seconds (or after the server ended) is killed.
    """
    import signal
    import subprocess
    import time

    from vidistill.platform.processes import descendants, kill_all

    server = subprocess.Popen(command, start_new_session=True)
    stop_at: list[float] = []

    def stop(_signum, _frame):
        stop_at.append(time.monotonic())
        _signal_group(server.pid, signal.SIGTERM)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = server.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop_at and time.monotonic() - stop_at[0] > grace:
                    kill_all([server.pid, *descendants(server.pid)])
    finally:
        kill_all(descendants(server.pid))
        _signal_group(server.pid, signal.SIGKILL)  # workers left behind by a server that ended
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if stop_at else code


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
