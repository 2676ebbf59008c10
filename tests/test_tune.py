"""Ray Tune search with ASHA: search spaces, the `tune` job kind through a real queue, dispatcher and Ray head."""
from __future__ import annotations

import csv
import io
import os
import re
import signal
from pathlib import Path

import numpy
import pytest

from platform_fixtures import driver_pid, environment, wait_until
from trainers_fixtures import tiny_overrides
from vidistill.platform.kinds.config import ConfigError
from vidistill.platform.queue import JobQueue
from vidistill.trainers.config import ConfigError as TrainConfigError
from vidistill.trainers.config import load_config
from vidistill.trainers.search_space import default_space, load_space, parse_space, trial_config
from vidistill.platform.submission import submit_job

# 4 sampled trials (seed 0) of 2 epochs, one Ray Train worker each. With this space and seed the
# two trials sampled with a high learning rate end epoch 1 at val accuracy 0 while the first
# two reached 0.25: ASHA (grace 1 epoch, reduction 2) stops them at its first rung.
SPACE = """\
lr: {loguniform: [0.0001, 0.3]}
lambda1: {loguniform: [0.1, 10]}
lambda2: [0.5, 2]          # multiples of 1/(T*H*W)
attention: [soft-atten, prob-atten]
"""
TRIAL = ["num_workers=1", "batch_size=4", "epochs=2"]


def fake_data(*extra):
    return ["data.prepared=/nowhere/prepared", "data.root=/nowhere/source", "data.name=tiny", *extra]


# -- search spaces (no training) -----------------------------------------------------------


def test_space_files_yaml_and_toml_give_the_same_typed_space(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE + "optim.weight_decay: 0.001\n")
    (tmp_path / "space.toml").write_text(
        'lr = {loguniform = [0.0001, 0.3]}\nlambda1 = {loguniform = [0.1, 10]}\nlambda2 = [0.5, 2]\n'
        'attention = ["soft-atten", "prob-atten"]\n[optim]\nweight_decay = 0.001\n')
    yaml_space, toml_space = load_space(tmp_path / "space.yaml"), load_space(tmp_path / "space.toml")
    assert yaml_space == toml_space
    assert yaml_space.to_dict() == {
        "optim.lr": {"loguniform": [0.0001, 0.3]}, "distill.lambda1": {"loguniform": [0.1, 10.0]},
        "distill.lambda2": {"choice": [0.5, 2]}, "model.attention": {"choice": ["soft-atten", "prob-atten"]},
        "optim.weight_decay": 0.001}
    assert yaml_space.searched == ["optim.lr", "distill.lambda1", "distill.lambda2", "model.attention"]
    assert parse_space(yaml_space.to_dict()) == yaml_space  # what a job stores is what it runs


def test_the_default_space_searches_the_methods_knobs():
    assert default_space("distill").searched == ["distill.lambda1", "distill.lambda2", "model.attention",
                                                 "optim.lr", "model.gumbel_temperature"]
    assert default_space("distill").to_dict()["model.attention"] == {"choice": ["soft-atten", "soft-res",
                                                                                "prob-atten"]}
    assert "distill.lambda1" not in default_space("teacher").searched  # Eq. 8's weights only weigh a student


def test_lambda2_is_searched_in_units_of_one_over_the_attention_grid():
    base = load_config(overrides=fake_data("role=rgb"))
    config = trial_config(base, {"distill.lambda2": 2, "optim.lr": 0.05, "model.attention": "soft-res"},
                          lambda2_unit=1 / 32)
    assert (config.distill.lambda2, config.optim.lr, config.model.attention) == (2 / 32, 0.05, "soft-res")


@pytest.mark.parametrize("text, message", [
    ("lr: {loguniform: [0, 0.1]}\n", "space.lr: loguniform needs low > 0"),
    ("lr: {normal: [0, 1]}\n", "space.lr: unknown distribution 'normal'"),
    ("lambda3: [1, 2]\n", "space.lambda3: cannot be searched"),
    ("data.prepared: [a, b]\n", "space.data.prepared: cannot be searched"),
    ("optim.lrr: [0.1]\n", "space.optim.lrr: unknown parameter"),
    ("gumbel_temperature: {uniform: [1.0, 0.5]}\n", "space.gumbel_temperature: uniform needs low < high"),
    ("lambda2: [-1, 1]\n", "space.lambda2: multiples of 1/(T*H*W) must be numbers >= 0"),
])
def test_a_bad_space_is_refused_naming_its_key(tmp_path, text, message):
    (tmp_path / "space.yaml").write_text(text)
    with pytest.raises(TrainConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        load_space(tmp_path / "space.yaml")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_job_tune_refuses_a_bad_space_file_with_its_key_and_resolves_a_good_one(queue, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: {loguniform: [0.001, 0.1]}\nattention: [soft-atten, bogus]\n")
    # Folders that exist and a teacher alias: what submit checks besides the space (test_submission).
    (tmp_path / "src").mkdir()
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "manifest.json").write_text('{"videos": {"a/v0": {}}}')
    data = [f"data.prepared={tmp_path / 'frames'}", f"data.root={tmp_path / 'src'}", "data.name=tiny"]
    config = {"space": str(bad), "trials": 4, "teacher": "models:/tiny-teacher-flow@best", "set": data}
    with pytest.raises(ConfigError) as refused:
        submit_job(queue, "tune", config)
    assert refused.value.field == "space"
    assert "attention: value 'bogus' is refused" in refused.value.reason and str(bad) in refused.value.reason
    with pytest.raises(ConfigError, match="field 'trials': must be at least 1"):
        submit_job(queue, "tune", {**config, "space": None, "trials": 0})

    good = tmp_path / "good.yaml"
    good.write_text(SPACE)
    job = submit_job(queue, "tune", {**config, "space": str(good), "max_concurrent": 3, "trial_gpus": 0.5,
                                "set": [*data, *TRIAL, "num_workers=2", "batch_size=4"]})
    good.write_text("lr: [0.5]\n")  # the job keeps what was submitted
    assert job.config["resolved_space"]["model.attention"] == {"choice": ["soft-atten", "prob-atten"]}
    assert job.config["resolved"]["distill"]["teacher"] == "models:/tiny-teacher-flow@best"
    # 3 concurrent trials of 2 workers, each worker half a GPU.
    assert (job.num_workers, job.cpus_per_worker, job.gpus_per_worker) == (6, 1.0, 0.5)


# -- a search through the queue ----------------------------------------------------------


def register_random_teacher(dataset) -> str:
    """A registered flow teacher with random weights: enough to distil from in a test of the search."""
    from vidistill.trainers import tracking
    from vidistill.trainers.data import open_splits
    from vidistill.trainers.models import create_teacher

    config = load_config(overrides=tiny_overrides(dataset, "role=teacher"))
    run_id = tracking.create_run(config)
    version = tracking.register_model(run_id, create_teacher("i3d_tiny", num_classes=4), config,
                                      open_splits(config.data).content_hash)
    tracking.configure().set_terminated(run_id)
    return f"models:/{version.name}/{version.version}"


def submit_search(queue: JobQueue, dataset, tmp_path: Path, *, max_concurrent: int = 1) -> int:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    teacher = register_random_teacher(dataset)
    return submit_job(queue, "tune", {"space": str(space), "trials": 4, "teacher": teacher, "max_concurrent": max_concurrent,
                                 "set": tiny_overrides(dataset, *TRIAL)}, max_attempts=2).id


def trial_runs(client, parent: str) -> list:
    from vidistill.trainers import tracking

    return client.search_runs([tracking.experiment_id(client, "vidistill")], f"tags.`mlflow.parentRunId` = '{parent}'")


def check_search(queue: JobQueue, job_id: int, *, trials_in_order: bool = True) -> None:
    """The search finished: 4 child runs under the tuning run, those ASHA stopped killed, the best registered."""

    from vidistill.trainers import tracking

    job = queue.get(job_id)
    log = Path(job.log_path).read_text()
    assert job.state == "succeeded", log[-4000:]
    client = tracking.store_client()
    parent = client.get_run(job.mlflow_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["vidistill.tune.name"] == f"tune-job-{job_id}"
    assert parent.data.params["tune.space.optim.lr"] == "loguniform[0.0001, 0.3]"

    children = trial_runs(client, parent.info.run_id)
    trials = sorted(run.data.tags["vidistill.tune.trial_id"] for run in children)
    assert len(trials) == 4 and len(set(trials)) == 4, trials  # one child run per trial, none started twice
    for run in children:
        assert run.data.params["role"] == "distill" and run.data.params["distill.teacher"].startswith("models:/")
        assert run.data.params["model.attention"] in ("soft-atten", "prob-atten")
        assert float(run.data.params["distill.lambda2"]) in (0.5 / 32, 2 / 32)  # 8x64x64 clips: a 2x4x4 grid
        assert client.get_metric_history(run.info.run_id, "val_accuracy"), "each trial logs its curve"
    stopped = [run for run in children if run.data.tags.get("vidistill.tune.stopped_early") == "true"]
    if trials_in_order:
        # Trials ran one at a time, so they reached ASHA's rung (epoch 1 of 2) in start order:
        # each one is stopped exactly when its score is below the median of the earlier ones'
        # (reduction factor 2). Whether any is stopped depends on the scores, not on timing.
        from vidistill.trainers.tune import _score

        earlier, expected = [], []
        for run in sorted(children, key=lambda run: run.info.start_time):
            first = {name: client.get_metric_history(run.info.run_id, name)[0].value
                     for name in ("val_accuracy", "val_loss")}
            score = _score(first["val_accuracy"], first["val_loss"])
            if earlier and score < float(numpy.percentile(earlier, 50)):
                expected.append(run.info.run_id)
            earlier.append(score)
        assert sorted(run.info.run_id for run in stopped) == sorted(expected), "ASHA's rule, trial by trial"
    # A stopped trial's run ends KILLED, also when it is the best one and gets registered
    # (registering once reopened and FINISHED it).
    assert {run.info.status for run in stopped} <= {"KILLED"}
    finished_runs = [run for run in children if run not in stopped]
    assert finished_runs and {run.info.status for run in finished_runs} == {"FINISHED"}
    for run in finished_runs:
        assert sorted({m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")}) == [0, 1]
    assert parent.data.metrics["trials_stopped_early"] == len(stopped)

    best_run = parent.data.tags["vidistill.tune.best_run_id"]
    assert parent.data.tags["vidistill.tune.best_model"] == "models:/tiny-student-rgb/1"
    version = client.get_model_version("tiny-student-rgb", "1")
    assert version.run_id == best_run
    assert version.aliases == [f"job-{job_id}"]
    assert version.tags["vidistill.tune.run_id"] == parent.info.run_id
    best_params = client.get_run(best_run).data.params
    for key in ("optim.lr", "distill.lambda1", "distill.lambda2", "model.attention"):
        assert version.tags[f"vidistill.tune.{key}"] == best_params[key], key
    assert version.tags["vidistill.tune.lambda2_multiple"] in ("0.5", "2")

    artifacts = sorted(a.path for a in client.list_artifacts(parent.info.run_id))
    assert artifacts == ["tune_results.csv", "tune_results.md", "tune_space.json"]
    rows = list(csv.DictReader(io.StringIO(Path(client.download_artifacts(
        parent.info.run_id, "tune_results.csv")).read_text())))
    assert sorted(r["run_id"] for r in rows) == sorted(run.info.run_id for run in children)
    assert sum(r["status"] == "stopped early" for r in rows) == len(stopped)
    # the table, printed at the end
    assert re.search(r"\|\s*trial\s*\|\s*status\s*\|\s*epochs\s*\|\s*val_accuracy\s*\|", log)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_tune_job_of_four_trials_runs_through_the_queue_with_asha_and_registers_the_best(
        ray_settings, dispatchers, tiny_dataset, tmp_path):
    with environment(VIDISTILL_HOME=str(ray_settings.home), MLFLOW_TRACKING_URI=None):
        queue = JobQueue(ray_settings)
        job_id = submit_search(queue, tiny_dataset, tmp_path)
        job = queue.get(job_id)
        assert (job.num_workers, job.cpus_per_worker, job.gpus_per_worker) == (1, 1.0, 0.0)
        dispatchers.start(1)
        wait_until(lambda: queue.get(job_id).job_state.is_finished, timeout=900, interval=1,
                   message="the tune job to finish")
        assert queue.get(job_id).attempts == 1
        check_search(queue, job_id)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_killed_tune_job_resumes_its_experiment_in_the_same_tuning_run(
        ray_settings, dispatchers, tiny_dataset, tmp_path):

    from vidistill.trainers import tracking

    with environment(VIDISTILL_HOME=str(ray_settings.home), MLFLOW_TRACKING_URI=None):
        queue = JobQueue(ray_settings)
        job_id = submit_search(queue, tiny_dataset, tmp_path)
        dispatchers.start(1)
        client = tracking.store_client()
        parent = wait_until(lambda: queue.get(job_id).mlflow_run_id, timeout=120, interval=0.5,
                            message="the tuning run")
        # Kill the driver once the first trial has finished and Tune has recorded it.
        state = Path(ray_settings.home) / "ray_results" / f"tune-job-{job_id}"

        def first_trial_recorded():
            done = [r for r in trial_runs(client, parent) if r.info.status == "FINISHED"]
            files = list(state.glob("experiment_state*.json"))
            return done and any("TERMINATED" in f.read_text() for f in files)

        wait_until(first_trial_recorded, timeout=240, interval=1, message="a finished trial")
        before = {r.data.tags["vidistill.tune.trial_id"]: r.info.run_id for r in trial_runs(client, parent)}
        pid = driver_pid(job_id, 1)
        assert pid, "the job's driver process was not found"
        os.kill(pid, signal.SIGKILL)

        wait_until(lambda: queue.get(job_id).job_state.is_finished, timeout=900, interval=1,
                   message="the retried tune job to finish")
        job = queue.get(job_id)
        log = Path(job.log_path).read_text()
        assert job.attempts == 2, log[-4000:]
        assert job.mlflow_run_id == parent  # the same tuning run
        assert "resuming the tuning experiment" in log
        after = {r.data.tags["vidistill.tune.trial_id"]: r.info.run_id for r in trial_runs(client, parent)}
        assert all(after[trial] == run for trial, run in before.items())  # trials kept their child runs
        check_search(queue, job_id, trials_in_order=False)  # resumed: some trials restarted
