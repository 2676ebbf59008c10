"""Bad input refused at submission (issue 12): paths, registry entries, sizes, the tracking URI."""
from __future__ import annotations

import json
import types

import pytest

from platform_fixtures import run_cli
from vidistill.platform.queue import JobQueue

MISSING = "/nonexistent/vidistill-prepared"


@pytest.fixture
def env(cli_env, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return cli_env


def prepared_folder(path, videos: int = 1):
    """A prepared folder's manifest with `videos` videos (what the submit checks read)."""
    from vidistill.datasets.rawframes import Manifest, VideoRecord

    path.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(classes=["a", "b"], fps=24.0, width=64, height=48, flow_method="farneback",
                        flow_bound=20.0, jpeg_quality=95)
    for index in range(videos):
        video_id = f"a/v{index}"
        manifest.videos[video_id] = VideoRecord(video_id, 0, 16, 15, "farneback", 20.0, 64, 48,
                                                f"/videos/{video_id}.avi", 24.0, 16)
    manifest.save(path)
    return path


def no_jobs() -> bool:
    return json.loads(run_cli("jobs", "list", "--json").stdout) == []


@pytest.mark.parametrize("args", [
    ["train-rgb", "--prepared", MISSING],
    ["distill", "--prepared", MISSING, "--teacher", "models:/t-flow@champion"],
    ["evaluate", "--models", "models:/m@champion", "--prepared", MISSING],
])
def test_a_prepared_folder_that_does_not_exist_is_refused_at_submit(env, tmp_path, args):
    result = run_cli("submit-job", *args, "--root", tmp_path, ok=False)
    assert result.exit_code == 2
    assert f"field 'prepared': {MISSING} does not exist; prepare it first" in result.output
    assert no_jobs()


@pytest.mark.parametrize("kind", ["train-rgb", "evaluate"])
def test_a_prepared_folder_with_no_videos_is_refused(env, tmp_path, kind):
    folder = prepared_folder(tmp_path / "frames", videos=0)
    models = ["--models", "models:/m@x"] if kind == "evaluate" else []
    result = run_cli("submit-job", kind, *models, "--root", tmp_path, "--prepared", folder, ok=False)
    assert f"{folder} has no videos" in result.output
    assert no_jobs()


def test_prepare_and_pipeline_refuse_a_missing_source_folder_and_queue_nothing(env, tmp_path):
    result = run_cli("submit-job", "prepare", "--root", "/nonexistent/videos", "--out", tmp_path / "o", ok=False)
    assert "field 'root': /nonexistent/videos does not exist or is not a folder" in result.output
    result = run_cli("pipeline", "--root", "/nonexistent/videos", "--prepared", tmp_path / "frames", ok=False)
    assert "/nonexistent/videos does not exist or is not a folder" in result.output
    assert no_jobs()


def test_a_pinned_teacher_must_be_registered_but_an_alias_or_a_later_model_is_fine(env, tmp_path):
    from mlflow.tracking import MlflowClient

    folder = prepared_folder(tmp_path / "frames")
    result = run_cli("submit-job", "distill", "--root", tmp_path, "--prepared", folder, "--teacher", "models:/no-such-flow/3", ok=False)
    assert "field 'teacher': models:/no-such-flow/3 is not in the model registry" in result.output
    assert no_jobs()
    # Registered: accepted.
    uri = f"sqlite:///{env.home / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("real-flow")
    client.create_model_version("real-flow", source=str(tmp_path), run_id=None)
    assert run_cli("submit-job", "distill", "--root", tmp_path, "--prepared", folder, "--teacher", "models:/real-flow/1").stdout == "1\n"
    # An alias (a pipeline's earlier job registers it), or a version after another job: accepted.
    assert run_cli("submit-job", "distill", "--root", tmp_path, "--prepared", folder, "--teacher", "models:/x-flow@job-1").stdout == "2\n"
    assert run_cli("submit-job", "distill", "--after", "1", "--root", tmp_path, "--prepared", MISSING,
                   "--teacher", "models:/later-flow/1").stdout == "3\n"


@pytest.mark.parametrize("args, message", [
    (["--owner", "o" * 20000, "--", "true"], "field 'owner': is 20000 characters long; at most 128"),
    (["--", "echo " + "x" * 200000], "field 'command': the job's config is"),
    (["--priority", "9" * 20, "--", "true"], "field 'priority': 99999999999999999999 is out of range"),
    (["--cpus", "0", "--", "true"], "field 'cpus': must be more than 0"),
])
def test_sizes_priority_and_cpus_are_bounded_at_submit(env, args, message):
    result = run_cli("submit-job", "command", *args, ok=False)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output
    assert no_jobs()


def test_prepare_and_command_share_one_cpu_rule(env, tmp_path):
    tmp_path.joinpath("videos").mkdir()
    for kind, args in (("command", ["--", "true"]), ("prepare", ["--root", tmp_path / "videos", "--out", tmp_path])):
        result = run_cli("submit-job", kind, "--cpus", "0", *args, ok=False)
        assert "field 'cpus'" in result.output, result.output


def test_the_submitters_tracking_uri_is_recorded_and_handed_to_the_job(env, tmp_path, monkeypatch):
    from vidistill.platform.dispatcher import Dispatcher
    from vidistill.platform.kinds import get_kind

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    folder = prepared_folder(tmp_path / "frames")
    job_id = int(run_cli("submit-job", "evaluate", "--models", "models:/m@champion", "--root", tmp_path,
                         "--prepared", folder).stdout)
    job = JobQueue(env).get(job_id)
    assert job.to_dict()["mlflow_tracking_uri"] == "http://tracking.example:5000"
    # The dispatcher's environment names another store; the job gets the submitter's.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    kind = get_kind(job.kind)
    job.log_path = str(tmp_path / "job.log")
    _, job_env = Dispatcher._entrypoint(types.SimpleNamespace(settings=env), job, kind, kind.parse(job.config))
    assert job_env["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"
    # Unset: the SQLite store of the submitter's home.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    job_id = int(run_cli("submit-job", "command", "--", "true").stdout)
    assert JobQueue(env).get(job_id).mlflow_tracking_uri == f"sqlite:///{env.home / 'mlflow.db'}"


def test_a_tracking_uri_with_a_password_is_refused(env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://ana:s3cret@db.example/mlflow")
    result = run_cli("submit-job", "command", "--", "true", ok=False)
    assert "MLFLOW_TRACKING_URI" in result.output and "holds a password" in result.output
    assert "s3cret" not in result.output
    assert no_jobs()
