"""Distillation methods are plug-ins: one file registers a method, the rest of the platform finds it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from platform_fixtures import environment, wait_until
from trainers_fixtures import tiny_overrides

from vidistill.platform.queue import JobQueue
from vidistill.trainers.config import load_config
from vidistill.trainers.methods import get_method, list_methods
from vidistill.trainers.schema import ConfigError

TOY = "toy_method"  # tests/toy_method.py


def test_the_three_methods_of_the_paper_are_registered_with_their_signals():
    assert {"attention", "feature", "logit"} <= set(list_methods())
    assert get_method("attention").signals == ("maps",) and get_method("attention").map_cache
    assert get_method("feature").signals == ("features",) and get_method("logit").signals == ("logits",)


def test_a_plug_in_method_is_found_checked_and_named_through_the_registry(monkeypatch):
    from vidistill.trainers.tracking import registered_name

    monkeypatch.setenv("VIDISTILL_METHOD_MODULES", TOY)
    required = ["data.prepared=/p/tiny", "data.root=/r", "distill.teacher=models:/t/1", "distill.objective=toy"]
    config = load_config(overrides=required + ["distill.options.weight=2"])
    assert get_method("toy").parse_options(config.distill.options).weight == 2.0
    assert registered_name(config) == "tiny-student-rgb-toy"
    with pytest.raises(ConfigError, match=r"distill.options.weight: must be > 0"):
        load_config(overrides=required + ["distill.options.weight=-1"])
    with pytest.raises(ConfigError, match=r"distill.options.wieght: unknown field; known: weight"):
        load_config(overrides=required + ["distill.options.wieght=1"])


def distill_and_tune_through_the_queue(ray_settings, dispatchers, tiny_dataset, tmp_path, method: list[str],
                                       distill_only: list[str], space: str, *, max_concurrent: int = 1):
    """Submit a distill job (`method` + `distill_only` overrides) and a 2-trial tune over `space` with the
    CLI, run them on one dispatcher, check both succeeded; (queue, distill id, tune id)."""
    from test_tune import register_random_teacher

    from vidistill.platform.cli.main import cli

    teacher = register_random_teacher(tiny_dataset)
    common = tiny_overrides(tiny_dataset, "num_workers=1", "batch_size=4", "epochs=1", "model.attention=none", *method)
    sets = [arg for item in common + distill_only for arg in ("--set", item)]
    submitted = CliRunner().invoke(cli, ["submit-job", "distill", "--teacher", teacher, *sets, "--json"])
    assert submitted.exit_code == 0, submitted.output
    distill_id = json.loads(submitted.stdout)["id"]
    space_file = tmp_path / "space.yaml"
    space_file.write_text(space)
    sets = [arg for item in common for arg in ("--set", item)]
    submitted = CliRunner().invoke(cli, ["submit-job", "tune", "--teacher", teacher, "--space", str(space_file),
                                         "--trials", "2", "--max-concurrent", str(max_concurrent), *sets, "--json"])
    assert submitted.exit_code == 0, submitted.output
    tune_id = json.loads(submitted.stdout)["id"]
    queue = JobQueue(ray_settings)
    dispatchers.start(1)
    wait_until(lambda: all(queue.get(i).job_state.is_finished for i in (distill_id, tune_id)), timeout=1200,
               interval=1, message=f"the {method} jobs to finish")
    for job_id in (distill_id, tune_id):
        job = queue.get(job_id)
        assert job.state == "succeeded", Path(job.log_path).read_text()[-4000:]
    return queue, distill_id, tune_id


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_toy_method_in_one_file_trains_through_submit_job_distill_and_a_tune_search(
        ray_settings, dispatchers, tiny_dataset, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vidistill.trainers import tracking

    monkeypatch.setenv("VIDISTILL_METHOD_MODULES", TOY)  # the dispatcher, its jobs and their workers
    with environment(VIDISTILL_HOME=str(ray_settings.home), VIDISTILL_DB_URL=ray_settings.db_url,
                     VIDISTILL_AUTOSTART_DISPATCHER="0", MLFLOW_TRACKING_URI=None):
        queue, distill_id, tune_id = distill_and_tune_through_the_queue(
            ray_settings, dispatchers, tiny_dataset, tmp_path, ["distill.objective=toy"], ["distill.options.weight=3"],
            "distill.options.weight: [0.5, 2]\n", max_concurrent=2)

        client = MlflowClient(tracking.tracking_uri(), registry_uri=tracking.tracking_uri())
        trained = client.get_run(queue.get(distill_id).mlflow_run_id)
        assert trained.data.params["distill.objective"] == "toy"
        assert "train_toy_logit_mse" in trained.data.metrics  # the toy's own loss term was trained
        versions = client.search_model_versions("name='tiny-student-rgb-toy'")
        by_alias = {alias: v for v in versions for alias in client.get_model_version(v.name, v.version).aliases}
        assert {f"job-{distill_id}", f"job-{tune_id}"} <= set(by_alias)
        best = client.get_model_version("tiny-student-rgb-toy", by_alias[f"job-{tune_id}"].version)
        assert float(best.tags["vidistill.tune.distill.options.weight"]) in (0.5, 2.0)  # searched by the tuner
