"""The ML job kinds and `vidistill pipeline` at submission: what is stored, what is refused (no Ray)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from platform_fixtures import run_cli
from vidistill.platform.queue import JobQueue


@pytest.fixture
def env(cli_env):
    return cli_env


run = run_cli


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_training_job_stores_the_resolved_config_file_plus_overrides(env, tmp_path):
    file = tmp_path / "teacher.yaml"
    file.write_text("model: {name: i3d_small}\noptim: {lr: 0.02}\nepochs: 7\n")
    # Folders that exist (checked at submit), a prepared one with a video in its manifest.
    frames, src = tmp_path / "frames", tmp_path / "src"
    src.mkdir()
    frames.mkdir()
    (frames / "manifest.json").write_text(json.dumps({"videos": {"a/v0": {}}}))
    job = json.loads(run("submit-job", "train-teacher", "--prepared", frames, "--root", src,
                         "--train-config", file, "--set", "optim.lr=0.003", "--set", "num_workers=4",
                         "--set", "batch_size=32", "--json").stdout)
    resolved = job["config"]["resolved"]
    assert resolved["role"] == "teacher"
    assert (resolved["model"]["name"], resolved["optim"]["lr"], resolved["epochs"]) == ("i3d_small", 0.003, 7)
    assert resolved["data"]["prepared"] == str(frames) and resolved["data"]["root"] == str(src)
    # The workers are what the dispatcher admits: 4 x 1 CPU, no GPU.
    assert job["resources"] == {"num_workers": 4, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0,
                                "total_cpus": 4.0, "total_gpus": 0.0}
    # The file may change or vanish; the job runs what was submitted.
    file.unlink()
    assert JobQueue(env).get(job["id"]).config["resolved"] == resolved


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("args, message", [
    (["train-teacher", "--prepared", "p", "--root", "r", "--set", "optim.lrr=1"],
     "field 'optim.lrr': unknown field; known: lr, lr_decay, momentum, plateau_patience, weight_decay"),
    (["train-rgb", "--prepared", "p", "--root", "r", "--set", "model.attention=prob-res"],
     "field 'model.attention'"),
    (["train-rgb", "--root", "r"], "field 'data.prepared': the prepared data set folder is required"),
    (["distill", "--prepared", "p", "--root", "r"], "field 'distill.teacher': a student needs its teacher's"),
    (["train-teacher", "--prepared", "p", "--root", "r", "--set", "role=rgb"],
     "this kind trains role 'teacher'; remove role=rgb"),
    (["train-teacher", "--prepared", "p", "--root", "r", "--train-config", "/nowhere.yaml"],
     "field 'train_config': no such file /nowhere.yaml"),
    (["evaluate", "--prepared", "p", "--root", "r", "--models", "ucf101-student-rgb/1"],
     "field 'models': 'ucf101-student-rgb/1' is not a registry URI"),
    (["evaluate", "--prepared", "p", "--root", "r", "--models", "models:/a/1", "--models", "models:/b/1",
      "--fuse", "0+2"], "field 'fuse': '0+2': give two or more positions in --models (0 to 1)"),
    (["prepare", "--root", "r", "--out", "o", "--layout", "kinetics"], "field 'layout': unknown layout 'kinetics'"),
])
def test_a_bad_ml_job_config_is_refused_at_submission_with_the_field(env, args, message):
    result = run("submit-job", *args, ok=False)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert JobQueue(env).list_jobs() == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_resolved_config_is_not_an_option(env):
    text = run("submit-job", "distill", "--help").stdout
    assert "--teacher TEXT" in text and "--set TEXT" in text and "--train-config TEXT" in text
    assert "--resolved" not in text


def test_help_lists_the_fields_that_set_reaches_for_training_and_detectors():
    from vidistill.platform.cli.main import cli

    teacher = " ".join(CliRunner().invoke(cli, ["submit-job", "train-teacher", "--help"]).output.split())
    assert "Fields of --set NAME=VALUE" in teacher
    assert "optim.lr (float, default " in teacher and "data.val_fraction (float, default 0.15)" in teacher
    detector = " ".join(CliRunner().invoke(cli, ["submit-job", "train-detector", "--help"]).output.split())
    assert "Fields of --set NAME=VALUE:" in detector
    assert "epochs (int, default 30)" in detector and "head (str, default 'actionformer')" in detector
    assert "root (str, required)" in detector


def test_pipeline_submits_the_method_as_dependent_jobs(env, tmp_path):
    (tmp_path / "src").mkdir()  # the source must exist; the prepared folder is the prepare job's to make
    out = json.loads(run("pipeline", "--root", tmp_path / "src", "--prepared", tmp_path / "frames", "--flow", "farneback",
                         "--set", "model.name=i3d_tiny", "--set", "data.name=demo", "--student-set",
                         "distill.lambda1=2", "--json").stdout)
    queue = JobQueue(env)
    jobs = {kind: queue.get(out[key]) for kind, key in
            (("prepare", "prepare"), ("teacher", "teacher"), ("student", "student"), ("rgb", "rgb"),
             ("evaluate", "evaluate"))}
    assert [j.kind for j in jobs.values()] == ["prepare", "train-teacher", "distill", "train-rgb", "evaluate"]
    assert jobs["prepare"].config["flow"] == "farneback"
    assert jobs["teacher"].dependency_ids == [jobs["prepare"].id]
    assert jobs["rgb"].dependency_ids == [jobs["prepare"].id]
    assert jobs["student"].dependency_ids == [jobs["teacher"].id]
    assert sorted(jobs["evaluate"].dependency_ids) == sorted([jobs["student"].id, jobs["teacher"].id,
                                                              jobs["rgb"].id])
    # The student names the teacher by the alias its job will give the registered version.
    teacher_uri = f"models:/demo-teacher-flow@job-{jobs['teacher'].id}"
    assert out["teacher_uri"] == teacher_uri
    assert jobs["student"].config["resolved"]["distill"]["teacher"] == teacher_uri
    assert jobs["student"].config["resolved"]["distill"]["lambda1"] == 2.0
    assert jobs["teacher"].config["resolved"]["distill"]["lambda1"] == 1.0  # --student-set is the student's
    assert jobs["rgb"].config["resolved"]["model"]["attention"] == "none"
    assert jobs["evaluate"].config["models"] == [out["student_uri"], teacher_uri, out["rgb_uri"]]
    assert jobs["evaluate"].config["fuse"] == ["0+1", "2+1"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pipeline_with_a_bad_override_submits_nothing(env):
    result = run("pipeline", "--root", "r", "--prepared", "p", "--student-set", "distill.objective=magic", ok=False)
    assert result.exit_code == 2
    assert "field 'distill.objective': must be one of attention, feature, generative, logit" in result.output
    assert JobQueue(env).list_jobs() == []
