"""Tune on detectors (issue 15): a detector search space, the validation slice it selects on, and a
2-trial search of the decomposed method's mimic weight and fusion window through the real queue,
dispatcher, Ray head and MLflow."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from platform_fixtures import environment, wait_until
from test_detection_detector import write_feature_set

from vidistill.platform.kinds.config import ConfigError
from vidistill.platform.queue import JobQueue
from vidistill.platform.submission import submit_job
from vidistill.trainers.detection.train import DetectorTrainConfig, split_validation, train_detector
from vidistill.trainers.search_space import default_detection_space, parse_space, trial_config
from vidistill.trainers.tune import _score

TINY = dict(dim=16, levels=2, stem=1, epochs=2, batch_size=2)
SPACE = {"mimic_weight": {"loguniform": [0.1, 10.0]}, "fusion_window": [3, 5]}


def test_a_detector_space_reaches_the_methods_options_and_refuses_data_and_time_axis(tmp_path):
    space = parse_space({**SPACE, "lr": {"loguniform": [3e-4, 3e-3]}, "method_options": {"joint_weight": [1, 2]}},
                        "detection")
    assert space.searched == ["method_options.mimic_weight", "method_options.fusion_window", "lr",
                              "method_options.joint_weight"]
    assert default_detection_space("decomposed").searched == ["lr", "method_options.mimic_weight",
                                                              "method_options.fusion_window"]
    assert default_detection_space("none").searched == ["lr"]
    base = DetectorTrainConfig(root=str(tmp_path), features=["f"], method="decomposed",
                               teachers=[{"features": "g"}], method_options={"joint_weight": 2.0}, **TINY)
    config = trial_config(base, {"method_options.fusion_window": 9, "lr": 0.002})
    assert (config.method_options, config.lr) == ({"joint_weight": 2.0, "fusion_window": 9}, 0.002)
    for bad, message in ((({"epochs": [1, 2]}), "space.epochs: cannot be searched"),
                         ({"features": ["a"]}, "space.features: cannot be searched"),
                         ({"dimm": [8]}, "space.dimm: unknown parameter")):
        with pytest.raises(ConfigError, match=message):
            parse_space(bad, "detection")
    from vidistill.trainers.search_space import check_space

    with pytest.raises(ConfigError, match="space.fusion_window: value 4 is refused: .*must be odd"):
        check_space(base, parse_space({"fusion_window": [3, 4]}, "detection"))


def test_the_validation_slice_is_seeded_disjoint_and_scored_every_epoch(tmp_path):
    (rgb,) = write_feature_set(tmp_path, videos=4)
    from vidistill.trainers.detection.train import load_detection_data

    videos = load_detection_data(str(tmp_path), "thumos14", [rgb], "val").videos
    train, val = split_validation(videos, 0.25, seed=0)
    assert len(val) == 1 and not {v.video_id for v in train} & {v.video_id for v in val}
    assert [v.video_id for v in split_validation(videos, 0.25, seed=0)[1]] == [v.video_id for v in val]
    assert split_validation(videos, 0.0, 0) == (videos, [])
    with pytest.raises(ValueError, match="leaves none to train on"):
        split_validation(videos[:1], 0.5, 0)
    epochs = []
    train_detector(DetectorTrainConfig(root=str(tmp_path), features=[rgb], registry=False, val_fraction=0.25, **TINY),
                   on_epoch=epochs.append)
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(0 <= e["val_mAP"] <= 1 and math.isfinite(e["val_loss"]) for e in epochs)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_job_tune_detection_resolves_the_detector_and_refuses_recognition_options(queue, tmp_path):
    rgb, flow = write_feature_set(tmp_path, streams=("rgb", "flow"), videos=4)
    sets = [f"{k}={v}" for k, v in TINY.items()] + ["method=decomposed", f"teachers=[{{features: {flow}}}]"]
    config = {"task": "detection", "root": str(tmp_path), "features": [rgb], "set": sets, "trials": 2,
              "max_concurrent": 2}
    job = submit_job(queue, "tune", config)
    assert job.config["resolved_detector"]["method"] == "decomposed" and job.config["resolved"] is None
    assert job.config["resolved_space"] == {"lr": {"loguniform": [0.0003, 0.003]},
                                            "method_options.mimic_weight": {"loguniform": [0.1, 10.0]},
                                            "method_options.fusion_window": {"choice": [3, 5, 9]}}
    assert (job.num_workers, job.cpus_per_worker) == (2, 1.0)  # one process per concurrent trial
    with pytest.raises(ConfigError, match="field 'prepared': a detection search reads snippet features"):
        submit_job(queue, "tune", {**config, "prepared": str(tmp_path)})
    with pytest.raises(ConfigError, match="field 'features': a detection search needs --root"):
        submit_job(queue, "tune", {**config, "features": []})
    with pytest.raises(ConfigError, match="field 'features': feature folders are searched by --task detection"):
        submit_job(queue, "tune", {k: v for k, v in config.items() if k != "task"})


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_detector_search_of_two_trials_runs_through_the_queue_and_registers_the_best_on_validation(
        ray_settings, dispatchers, tmp_path):
    from vidistill.trainers import tracking

    rgb, flow = write_feature_set(tmp_path, streams=("rgb", "flow"), videos=5)
    with environment(VIDISTILL_HOME=str(ray_settings.home), VIDISTILL_DB_URL=ray_settings.db_url,
                     VIDISTILL_AUTOSTART_DISPATCHER="0", MLFLOW_TRACKING_URI=None):
        teacher = train_detector(DetectorTrainConfig(root=str(tmp_path), features=[flow], name="flow-teacher", **TINY))
        space = tmp_path / "space.yaml"
        space.write_text(json.dumps(SPACE))
        sets = [f"{k}={v}" for k, v in TINY.items()] + [
            "method=decomposed", f'teachers=[{{features: "{flow}", detector: "{teacher.model_uri}"}}]']
        queue = JobQueue(ray_settings)
        job_id = submit_job(queue, "tune", {"task": "detection", "root": str(tmp_path), "features": [rgb],
                                            "set": sets, "space": str(space), "trials": 2, "grace_period": 2},
                            max_attempts=1).id
        dispatchers.start(1)
        wait_until(lambda: queue.get(job_id).job_state.is_finished, timeout=500, interval=1,
                   message="the detector search")
        job = queue.get(job_id)
        log = Path(job.log_path).read_text()
        assert job.state == "succeeded", log[-4000:]

        client = tracking.store_client()
        parent = client.get_run(job.mlflow_run_id)
        assert parent.info.status == "FINISHED" and parent.data.tags["vidistill.tuned_role"] == "detector"
        assert parent.data.params["tune.metric"] == "val_mAP"
        assert parent.data.params["tune.space.method_options.fusion_window"] == "choice[3, 5]"
        children = client.search_runs([tracking.experiment_id(client, "vidistill-detection")],
                                      f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert len(children) == 2
        scores = {}
        for run in children:
            options = json.loads(run.data.params["method_options"])  # what the trial trained with
            assert options["fusion_window"] == int(run.data.tags["vidistill.tune.method_options.fusion_window"])
            assert options["fusion_window"] in (3, 5)
            assert math.isclose(options["mimic_weight"],
                                float(run.data.tags["vidistill.tune.method_options.mimic_weight"]))
            assert 0.1 <= options["mimic_weight"] <= 10
            assert json.loads(run.data.params["teachers"])[0]["detector"] == teacher.model_uri
            assert float(run.data.params["val_fraction"]) == 0.25  # held out by the search: none was set
            history = {m: client.get_metric_history(run.info.run_id, m) for m in ("val_mAP", "val_loss")}
            assert [m.step for m in history["val_mAP"]] == [0, 1]
            assert "mAP_avg" in run.data.metrics  # the test subset: evaluated, never selected on
            scores[run.info.run_id] = _score(history["val_mAP"][-1].value, history["val_loss"][-1].value)
        best_run = max(scores, key=scores.get)
        assert parent.data.tags["vidistill.tune.best_run_id"] == best_run

        version = client.get_model_version_by_alias(_name(client, best_run), f"job-{job_id}")
        assert version.run_id == best_run and version.tags["vidistill.detection_method"] == "decomposed"
        best_options = json.loads(client.get_run(best_run).data.params["method_options"])
        assert int(version.tags["vidistill.tune.method_options.fusion_window"]) == best_options["fusion_window"]
        assert parent.data.tags["vidistill.tune.best_model"] == f"models:/{version.name}/{version.version}"
        from vidistill.trainers.detection.train import load_detector

        student, data = load_detector(f"models:/{version.name}@job-{job_id}")
        assert type(student).__name__ == "DecomposedStudent" and data["features"] == [rgb]
        assert student.fusion.window == best_options["fusion_window"]
        assert [str(v.version) for v in client.search_model_versions("name='flow-teacher'")] == ["1"]
        assert "registered as models:/" in log and "val_mAP" in log


def _name(client, run_id: str) -> str:
    (version,) = client.search_model_versions(f"run_id = '{run_id}'")
    return version.name
