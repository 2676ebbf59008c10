"""Clear errors and non-zero exits for the CLI's bad inputs; what `vidistill ui` leaves behind (issue 12)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner

from vidistill.platform.cli.main import cli


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def test_check_models_on_cuda_without_cuda_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("check-models", "--device", "cuda", "--model", "i3d_tiny", "--frames", "8", "--size", "32")
    assert result.exit_code == 2
    assert "Invalid value for --device: cuda: this machine has no usable CUDA GPU" in result.output
    assert invoke("check-models", "--device", "gpu0").exit_code == 2


def test_ui_refuses_a_port_out_of_range_at_once():
    result = invoke("ui", "--port", "99999")
    assert result.exit_code == 2 and "Invalid value for '--port': 99999 is not in the range 1<=x<=65535" in result.output


def test_describe_warns_about_classes_without_videos(tmp_path):
    root = tmp_path / "thumos"
    for folder in ("annotations", "validation", "videos"):
        (root / folder).mkdir(parents=True)
    (root / "annotations" / "BaseballPitch_val.txt").write_text("video_validation_0000051 67.5 75.9\n")
    from datasets_fixtures import write_motion_video

    write_motion_video(root / "videos" / "a.avi", "move-up", 4, 25.0, (32, 32), "mpeg4")
    result = invoke("datasets", "describe", "--root", root, "--layout", "generic")
    assert result.exit_code == 0, result.output
    assert ("warning: 2 of 3 classes have no videos: annotations, validation. Is this a folder of class "
            "folders?") in result.output


def test_make_synthetic_quotes_the_next_command(tmp_path):
    out = tmp_path / "my data"
    result = invoke("datasets", "make-synthetic", out, "--classes", "2", "--videos-per-class", "1",
                    "--frames", "8", "--size", "32x32")
    assert result.exit_code == 0, result.output
    assert f"next: vidistill datasets prepare --root '{out}' --layout generic --out '{out}-frames'" in result.output


def test_a_yaml_error_in_the_train_config_names_the_file_field(tmp_path, cli_env):
    bad = tmp_path / "train.yaml"
    bad.write_text("optim:\n  lr: [0.1\n")
    (tmp_path / "src").mkdir()
    result = invoke("submit-job", "train-rgb", "--root", tmp_path / "src", "--train-config", bad)
    assert result.exit_code == 2
    assert f"field 'train_config': config file {bad} is not valid YAML" in result.output


def test_a_bad_setting_is_named_as_such_not_as_the_job_queue(cli_env, monkeypatch):
    monkeypatch.setenv("VIDISTILL_POLL_INTERVAL", "soon")
    for command in (["jobs", "list"], ["cluster", "status"], ["dispatcher"]):
        result = invoke(*command)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: invalid setting: VIDISTILL_POLL_INTERVAL='soon' is not a valid float")


def test_experiments_are_marked_as_model_training_for_the_mlflow_ui(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vidistill.trainers import tracking

    monkeypatch.setenv("VIDISTILL_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = tracking.configure()
    new = tracking.experiment_id(client, "fresh")
    old = client.create_experiment("made-before")  # e.g. by an older vidistill
    assert tracking.experiment_id(client, "made-before") == old
    for experiment in (new, old):
        assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    assert isinstance(client, MlflowClient)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ui_stopped_with_sigterm_stops_the_mlflow_server_it_started(tmp_path):
    from vidistill.platform.processes import descendants
    from vidistill.platform.ray_cluster import free_port

    port = free_port()
    env = dict(os.environ, VIDISTILL_HOME=str(tmp_path))
    env.pop("MLFLOW_TRACKING_URI", None)
    ui = subprocess.Popen([sys.executable, "-c", "from vidistill.platform.cli.main import cli; cli()", "ui",
                           "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    server_tree: list[int] = []
    try:
        deadline = time.monotonic() + 300  # a new store's migrations are slow on a loaded 2-core machine
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "the MLflow UI did not come up"
                time.sleep(0.5)
        server_tree = descendants(ui.pid)
        assert server_tree, "the UI runs its server as a child process"
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 0
        time.sleep(0.5)
        left = [pid for pid in server_tree if _running(pid)]
        assert left == []
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        for pid in [ui.pid, *server_tree]:
            try:
                os.killpg(pid, signal.SIGKILL)  # the UI's group, and the server's own
            except (ProcessLookupError, PermissionError):
                pass
