"""MLflow in server mode, as deployed by infra/compose.yaml: `mlflow server` on PostgreSQL,
runs and models logged over HTTP, the registry page rendered by a real browser
(headless Chromium), and the basic-auth app refusing requests without credentials.

The registry page's screenshot is kept under test-artifacts/ at the repository root.
Chromium, like PostgreSQL (platform_fixtures), is installed with apt-get when it is
missing and this runs as root; in CI (CI=true) a missing browser is a failure, not a skip.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

from platform_fixtures import IN_CI, create_database, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


# -- Chromium -----------------------------------------------------------------------------


def _chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _chromium()
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True, env=env,
                           stdout=subprocess.DEVNULL)
        except subprocess.CalledProcessError as error:
            if IN_CI:
                pytest.fail(f"apt-get install chromium failed: {error}")
        path = _chromium()
    if path is None:
        if IN_CI:
            pytest.fail("Chromium is required in CI (CI=true) and could not be installed")
        pytest.skip("no Chromium (apt-get install chromium)")
    return path


def browse(chromium: str, url: str, *, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """The DOM of `url` after its scripts ran (`--dump-dom`); with `screenshot`, also a PNG."""
    profile = tempfile.mkdtemp(prefix="vd-chromium-")
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,800",
            f"--virtual-time-budget={budget_ms}"]
    try:
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        if screenshot is not None:
            shot = subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, text=True,
                                  timeout=120)
            assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
        return dom.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# -- an MLflow server ---------------------------------------------------------------------------


class MlflowServer:
    def __init__(self, backend_uri: str, workdir: Path, *, app_name: str | None = None, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"mlflow-{self.port}.log"
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
                   "--artifacts-destination", str(workdir / "artifacts"), "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", "1"]
        if app_name:
            command += ["--app-name", app_name]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                            env=dict(os.environ, **(env or {})), start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not come up:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def mlflow_server(postgres_server, tmp_path):
    backend = create_database(postgres_server, f"mlflow_{os.getpid()}_{tmp_path.name[-12:].replace('-', '_')}")
    server = MlflowServer(backend, tmp_path)
    yield server
    server.stop()


def http_status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # password hashing is slow on a busy CPU
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# -- tests --------------------------------------------------------------------------------------


def test_runs_and_registry_over_http_and_the_registry_page_in_a_browser(mlflow_server, chromium, tmp_path,
                                                                        monkeypatch):
    import torch

    from vidistill.trainers import tracking
    from vidistill.trainers.config import DataConfig, DistillConfig, ModelConfig, TrainConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("VIDISTILL_HOME", str(tmp_path / "home"))
    # A data path with credentials in it: logged as a param, it must lose them.
    data = DataConfig(prepared="https://ana:s3cret-pw@data.example/synth-frames", root="/data/synth", name="synth")
    teacher_config = TrainConfig(role="teacher", data=data, model=ModelConfig(name="i3d_tiny"), epochs=1)
    teacher_run = tracking.create_run(teacher_config)
    teacher = tracking.register_model(teacher_run, torch.nn.Linear(4, 2), teacher_config, dataset_hash="abc123")
    assert (teacher.name, teacher.version) == ("synth-teacher-flow", "1")

    student_config = TrainConfig(role="distill", data=data, model=ModelConfig(name="i3d_tiny"), epochs=1,
                                 distill=DistillConfig(teacher="models:/synth-teacher-flow/1"))
    student_run = tracking.create_run(student_config)  # resolves and pins the teacher over HTTP
    student = tracking.register_model(student_run, torch.nn.Linear(4, 2), student_config, dataset_hash="abc123")
    assert (student.name, student.version) == ("synth-student-rgb", "1")

    client = tracking.store_client(mlflow_server.url)
    params = client.get_run(student_run).data.params
    assert params["data.prepared"] == "https://ana:***@data.example/synth-frames"
    assert not any("s3cret-pw" in value for value in params.values())
    version = client.get_model_version("synth-student-rgb", "1")
    assert version.tags[tracking.TAG_TEACHER] == "models:/synth-teacher-flow/1"
    assert version.run_id == student_run
    # The artifacts went through the server (--artifacts-destination), not to a local path.
    assert client.get_run(student_run).info.artifact_uri.startswith("mlflow-artifacts:")

    ARTIFACTS.mkdir(exist_ok=True)
    shots = {"list": ARTIFACTS / "mlflow-registry.png", "model": ARTIFACTS / "mlflow-registry-student.png"}
    for shot in shots.values():
        shot.unlink(missing_ok=True)
    dom = browse(chromium, f"{mlflow_server.url}/#/models", screenshot=shots["list"])
    assert "synth-student-rgb" in dom and "synth-teacher-flow" in dom
    # The model's own page (the list page opens with MLflow's "new registry UI" notice over it).
    dom = browse(chromium, f"{mlflow_server.url}/#/models/synth-student-rgb", screenshot=shots["model"])
    assert "synth-student-rgb" in dom
    print(f"registry page screenshots: {', '.join(map(str, shots.values()))}")
    assert all(shot.stat().st_size > 10_000 for shot in shots.values())


def test_basic_auth_app_refuses_requests_without_valid_credentials(postgres_server, tmp_path, monkeypatch):
    """`mlflow server --app-name basic-auth`, configured like infra/compose.yaml: the admin's
    password from a secret file through MLFLOW_AUTH_ADMIN_PASSWORD, its user store in PostgreSQL."""
    from vidistill.trainers import tracking

    backend = create_database(postgres_server, f"mlflow_auth_{os.getpid()}")
    users = create_database(postgres_server, f"mlflow_users_{os.getpid()}")
    secret = tmp_path / "mlflow_admin_password"
    secret.write_text("adm1n-Pw-from-a-file\n")
    secret.chmod(0o600)
    config = tmp_path / "basic_auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {users}\nadmin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      "auth_cache_ttl_seconds = 60\n")  # one password hash per client, not per request
    server = MlflowServer(backend, tmp_path, app_name="basic-auth", env={
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret.read_text().strip(),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-secret-key",
    })
    try:
        api = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=5"
        assert http_status(api) == 401
        assert http_status(api, "admin", "wrong") == 401
        assert http_status(api, "admin", "adm1n-Pw-from-a-file") == 200

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "adm1n-Pw-from-a-file")
        client = tracking.store_client(server.url)
        run = client.create_run(client.create_experiment("auth-check"))
        client.log_param(run.info.run_id, "x", 1)
        assert client.get_run(run.info.run_id).data.params == {"x": "1"}
        assert "adm1n-Pw-from-a-file" not in server.log.read_text()
    finally:
        server.stop()
