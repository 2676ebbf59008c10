"""Teacher -> student -> evaluation on Ray Train with 2 CPU workers, tracked in MLflow (SQLite)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import mlflow
import pytest
import torch

from trainers_fixtures import tiny_overrides
from vidistill.trainers import tracking
from vidistill.trainers.config import load_config
from vidistill.trainers.evaluate import evaluate
from vidistill.trainers.teacher import TeacherMismatchError, state_digest
from vidistill.trainers.train import TAG_TEACHER_AT_END, TAG_TEACHER_AT_START, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(trainer_home, tiny_dataset):
    return train(load_config(overrides=tiny_overrides(tiny_dataset, "role=teacher")))


@pytest.fixture(scope="module")
def student(teacher, tiny_dataset):
    client = tracking.configure()
    client.set_registered_model_alias(teacher.registered_name, "champion", teacher.model_version)
    uri = f"models:/{teacher.registered_name}@champion"
    return train(load_config(overrides=tiny_overrides(tiny_dataset, "role=distill", f"distill.teacher={uri}")))


def test_teacher_trains_on_two_workers_and_is_registered(teacher):
    client = tracking.store_client()
    assert teacher.registered_name == "tiny-teacher-flow" and teacher.model_version == "1"
    run = client.get_run(teacher.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["role"] == "teacher" and run.data.params["num_workers"] == "2"
    assert run.data.params["optim.lr"] == "0.01" and run.data.params["model.attention"] == "prob-atten"
    for metric in ("train_loss", "train_ce", "train_prior_kl", "val_loss", "val_accuracy", "lr",
                   "train_clips_per_second"):
        assert [m.step for m in client.get_metric_history(teacher.run_id, metric)] == [0, 1], metric
    # The FLOPs of one training clip's step (TFLOP/s per epoch are logged on a GPU only).
    from vidistill.trainers.flops import step_flops_per_clip
    from vidistill.trainers.models import create_teacher

    flops = step_flops_per_clip(create_teacher("i3d_tiny", num_classes=4), (2, 8, 64, 64))
    assert float(run.data.params["train_step_gflop_per_clip"]) == round(flops / 1e9, 3) > 0
    assert "train_tflops" not in run.data.metrics
    images = [a.path for a in client.list_artifacts(teacher.run_id, "attention")]
    assert images == ["attention/epoch_000.png", "attention/epoch_001.png"]
    # Where its own map looks, each epoch, on the validation clips (the synthetic set knows where
    # the actor is): a mass ratio against a uniform map, between 0 and the grid's H*W.
    mass = client.get_metric_history(teacher.run_id, "val_actor_mass_ratio_motion")
    assert [m.step for m in mass] == [0, 1] and all(0 < m.value < 64 for m in mass)
    version = client.get_model_version("tiny-teacher-flow", "1")
    assert version.run_id == teacher.run_id
    assert version.tags["vidistill.dataset_manifest"].startswith("sha256:")
    assert version.tags["vidistill.code_version"]
    model = mlflow.pytorch.load_model("models:/tiny-teacher-flow/1")
    assert model.in_channels == 2 and list(model.head.branches) == ["motion"]


def test_student_distils_from_the_teacher_by_registry_uri(student, teacher):
    client = tracking.store_client()
    assert student.registered_name == "tiny-student-rgb"
    version = client.get_model_version("tiny-student-rgb", student.model_version)
    # The alias is resolved to the exact version the student learned from.
    assert version.tags["vidistill.teacher"] == "models:/tiny-teacher-flow/1"
    assert version.tags["vidistill.objective"] == "attention"
    for metric in ("train_ce", "train_motion_kl", "train_prior_kl"):
        history = client.get_metric_history(student.run_id, metric)
        assert [m.step for m in history] == [0, 1] and all(m.value >= 0 for m in history), metric
    model = mlflow.pytorch.load_model(student.model_uri)
    assert model.in_channels == 3 and list(model.head.branches) == ["motion", "appearance"]
    # Its attention images show the teacher's map beside its own (drawn from paired clips).
    assert [a.path for a in client.list_artifacts(student.run_id, "attention")] == [
        "attention/epoch_000.png", "attention/epoch_001.png"]


def test_the_students_teacher_maps_are_the_live_teachers_and_the_run_says_so(student):
    # Issue 13, defect 1: the maps used are the teacher's own for the clips seen, checked in the run.
    client = tracking.store_client()
    run = client.get_run(student.run_id)
    assert run.data.tags["vidistill.teacher_maps"].startswith("exact: the teacher's own map of each clip")
    assert 1 <= run.data.metrics["teacher_map_kl_clips"] <= 8  # rank 0's first training clips
    assert 0 <= run.data.metrics["teacher_map_kl_live_used_max"] < 1e-4
    # The synthetic set knows where its actor is: the teacher's mass there against uniform (1.0).
    assert run.data.metrics["teacher_actor_mass_ratio"] > 0


def test_runs_validate_after_precise_bn_and_keep_their_best_validation_weights(teacher):
    # Issue 13, defect 3: BN statistics recomputed on every training video (12 of them, one
    # full-frame clip each, over both workers) before each validation; the registered weights
    # are the best validation epoch's, and the run says so.
    client = tracking.store_client()
    history = client.get_metric_history(teacher.run_id, "precise_bn_clips")
    assert [(m.step, m.value) for m in history] == [(0, 12.0), (1, 12.0)]
    accuracies = [m.value for m in client.get_metric_history(teacher.run_id, "val_accuracy")]
    best = client.get_run(teacher.run_id).data
    assert best.metrics["best_val_accuracy"] == max(accuracies)
    assert best.tags["vidistill.kept_weights"] == f"best on validation: epoch {int(best.metrics['best_epoch']) + 1}"


def test_the_teacher_stays_bit_identical_through_distillation(student, teacher):
    run = tracking.store_client().get_run(student.run_id)
    registered = state_digest(mlflow.pytorch.load_model("models:/tiny-teacher-flow/1"))
    # Digests taken inside the rank-0 worker when it loaded the teacher and after the last epoch.
    assert run.data.tags[TAG_TEACHER_AT_START] == registered
    assert run.data.tags[TAG_TEACHER_AT_END] == registered


def test_evaluation_writes_video_level_metrics_and_the_fusion(student, teacher, tiny_dataset):
    config = load_config(overrides=tiny_overrides(tiny_dataset, "role=teacher"))
    results = evaluate([student.model_uri, teacher.model_uri], config.data, run_name="tiny evaluation")
    assert list(results) == [student.model_uri, teacher.model_uri, f"{student.model_uri} + {teacher.model_uri}"]
    for metrics in results.values():
        assert metrics.videos == 8  # 2 test videos per class, scores aggregated over 2 clips each
        assert sum(map(sum, metrics.confusion)) == 8
        assert 0.0 <= metrics.top1 <= metrics.top5 == 1.0  # 4 classes: top-5 holds every class
        assert metrics.clips_per_second > 0
    client = tracking.store_client()
    run = client.search_runs([tracking.experiment_id(client, "vidistill")], "tags.`vidistill.role` = 'evaluate'")[0]
    assert run.info.run_name == "tiny evaluation"
    assert {"model_0_top1", "model_1_top1", "fusion_top1", "model_0_mean_class_accuracy"} <= set(run.data.metrics)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["evaluation.json"]


def test_a_missing_teacher_is_refused_before_training(trainer_home, tiny_dataset):
    config = load_config(overrides=tiny_overrides(tiny_dataset, "role=distill", "distill.teacher=models:/nobody/7"))
    with pytest.raises(TeacherMismatchError, match="teacher models:/nobody/7 is not in the model registry"):
        train(config)


def test_a_teacher_without_an_attention_map_is_refused_before_training(trainer_home, tiny_dataset, teacher):
    plain = train(load_config(overrides=tiny_overrides(tiny_dataset, "role=teacher", "model.attention=none",
                                                       "epochs=1", "register=true", "data.name=plain")))
    config = load_config(overrides=tiny_overrides(tiny_dataset, "role=distill",
                                                  f"distill.teacher={plain.model_uri}"))
    started = time.monotonic()
    with pytest.raises(TeacherMismatchError, match="has 0 attention maps; attention distillation needs"):
        train(config)
    assert time.monotonic() - started < 10  # refused by the driver, no worker started


RESUMABLE = textwrap.dedent("""
    import sys
    from vidistill.trainers import tracking
    from vidistill.trainers.config import load_config
    from vidistill.trainers.train import train
    config = load_config(overrides=sys.argv[2:])
    run_id = sys.argv[1] if sys.argv[1] != "new" else tracking.create_run(config)
    print("RUN", run_id, flush=True)
    result = train(config, run_id=run_id)
    print("DONE", result.model_uri, flush=True)
""")


def test_a_killed_run_resumes_from_its_checkpoint_in_the_same_mlflow_run(trainer_home, tiny_dataset, tmp_path):
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE)
    overrides = tiny_overrides(tiny_dataset, "role=rgb", "epochs=6", "data.name=resume")
    env = {**os.environ, "VIDISTILL_HOME": str(trainer_home), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first-attempt.log"
    with open(log, "w") as output:  # a file, not a pipe: nobody has to keep reading it
        first = subprocess.Popen([sys.executable, str(script), "new", *overrides], stdout=output,
                                 stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while "RUN " not in log.read_text() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    run_id = log.read_text().split("RUN ", 1)[1].split()[0] if "RUN " in log.read_text() else None
    assert run_id, "the first attempt never started:\n" + log.read_text()[-3000:]
    snapshot = trainer_home / "ray_results" / run_id / "checkpoint_manager_snapshot.json"

    def committed_epochs():  # the checkpoints Ray Train has recorded as complete
        try:
            return [r["metrics"]["epoch"] for r in json.loads(snapshot.read_text())["checkpoint_results"]]
        except (OSError, ValueError, KeyError):
            return []

    # Ray Train can take over a minute to start its worker group on a loaded 2-core machine.
    deadline = time.monotonic() + 240
    while not committed_epochs() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    # Ray processes outside the killed group may record a checkpoint a moment later: read the
    # committed state once the snapshot has stopped changing.
    settled, last_seen = time.monotonic() + 30, None
    while time.monotonic() < settled:
        seen = snapshot.stat().st_mtime_ns
        if seen == last_seen:
            break
        last_seen = seen
        time.sleep(2)
    last_committed = max(committed_epochs())
    client = tracking.store_client()
    logged_before = {m.step for m in client.get_metric_history(run_id, "val_loss")}
    assert client.get_run(run_id).info.status == "RUNNING"  # killed: nobody closed it

    second = subprocess.run([sys.executable, str(script), run_id, *overrides], capture_output=True, text=True,
                            env=env, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    resumed_at = int(second.stdout.split("resuming " + run_id + " at epoch ")[1].split("/")[0]) - 1
    assert resumed_at == last_committed + 1  # straight after the last complete checkpoint
    assert "DONE models:/resume-rgb-prob-atten/1" in second.stdout
    steps = [m.step for m in client.get_metric_history(run_id, "val_loss")]
    assert set(steps) == set(range(6)) and logged_before <= set(steps)
    # Only epochs that ran after that checkpoint, and were redone, can be logged twice.
    repeated = {step for step in steps if steps.count(step) > 1}
    assert all(step > last_committed for step in repeated)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_model_version("resume-rgb-prob-atten", "1").run_id == run_id


class CoarseGridTeacher(torch.nn.Module):
    """A flow teacher whose maps lie on a grid twice as coarse as an I3D student's."""

    in_channels = 2

    def __init__(self):
        super().__init__()
        from vidistill.trainers.models import create_teacher

        self.inner = create_teacher("i3d_tiny", num_classes=4)
        self.head = self.inner.head

    def forward_features(self, x):
        phi, features = self.inner.forward_features(x)
        return torch.nn.functional.max_pool3d(phi, (1, 2, 2), ceil_mode=True), features

    def forward(self, x):
        return self.inner.forward_head(*self.forward_features(x))


def test_a_teacher_on_another_attention_grid_is_refused_before_training(trainer_home, tiny_dataset):
    tracking.configure()
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(CoarseGridTeacher(), name="model", serialization_format="pickle",
                                        registered_model_name="coarse-teacher-flow", pip_requirements=[])
    config = load_config(overrides=tiny_overrides(tiny_dataset, "role=distill",
                                                  "distill.teacher=models:/coarse-teacher-flow/1"))
    with pytest.raises(TeacherMismatchError) as err:
        train(config)
    # 8 x 64 x 64 clips: the student's maps are 2 x 4 x 4, the coarse teacher's 2 x 2 x 2.
    assert str(err.value) == ("models:/coarse-teacher-flow/1's attention grid (2, 2, 2) does not match the "
                              "student's (2, 4, 4) for 8x64x64 clips: use a teacher with the student's backbone")
    assert info.registered_model_version == 1
