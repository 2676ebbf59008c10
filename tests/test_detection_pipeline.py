"""`vidistill pipeline --task detection` and the detection kinds at submission (no Ray)."""
from __future__ import annotations

import json

import pytest
from platform_fixtures import run_cli as run
from vidistill.platform.queue import JobQueue


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_detection_pipeline_submits_dependent_jobs(cli_env, tmp_path):
    data = tmp_path / "data"  # the sources must exist at submission; the prepared folders need not
    (data / "untrimmed").mkdir(parents=True)
    (data / "motion").mkdir()
    out = json.loads(run("pipeline", "--task", "detection", "--root", f"{data}/untrimmed", "--prepared", f"{data}/frames",
                         "--recognition-root", f"{data}/motion", "--flow", "farneback", "--set", "model.name=i3d_tiny",
                         "--set", "data.name=demo", "--detector-set", "epochs=7", "--json").stdout)
    queue = JobQueue(cli_env)
    kinds = {job_id: queue.get(job_id) for job_id in [out["prepare"], out["recognition_prepare"],
                                                       out["rgb_model_job"], out["flow_model_job"],
                                                       *out["extract"].values(), *out["detectors"].values(),
                                                       out["evaluate"]]}
    assert sorted(j.kind for j in kinds.values()) == sorted(
        ["prepare", "prepare", "train-rgb", "train-teacher", "extract-features", "extract-features",
         "train-detector", "train-detector", "train-detector", "evaluate-detectors"])
    flow_extract = queue.get(out["extract"]["flow"])
    assert flow_extract.config["model"] == f"models:/demo-teacher-flow@job-{out['flow_model_job']}"
    assert sorted(flow_extract.dependency_ids) == sorted([out["prepare"], out["flow_model_job"]])
    assert flow_extract.config["out"] == f"{data}/frames-features/flow" and flow_extract.config["stride"] == 4
    two_stream = queue.get(out["detectors"]["rgb+flow"])
    assert two_stream.config["features"] == [f"{data}/frames-features/rgb", f"{data}/frames-features/flow"]
    assert sorted(two_stream.dependency_ids) == sorted(out["extract"].values())
    assert two_stream.config["set"] == ["epochs=7"] and two_stream.config["layout"] == "thumos14"
    evaluate = queue.get(out["evaluate"])
    assert evaluate.config["models"] == [f"models:/untrimmed-detector-{s}@job-{out['detectors'][s]}"
                                         for s in ("rgb", "flow", "rgb+flow")]
    assert evaluate.config["protocol"] == "thumos14"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("args, message", [
    (["--detector-set", "head=nope"], "field 'head': unknown 'nope'; registered: actionformer, dense"),
    (["--detector-set", "epochs=0"], "field 'epochs'"),
    ([], "give both feature models (--rgb-model, --flow-model) or a trimmed set"),
])
def test_detection_pipeline_refuses_bad_configs_and_submits_nothing(cli_env, tmp_path, args, message):
    models = ["--rgb-model", "models:/r/1", "--flow-model", "models:/f/1"] if args else []
    result = run("pipeline", "--task", "detection", "--root", str(tmp_path), "--prepared", "p", *models, *args,
                 ok=False)
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert JobQueue(cli_env).list_jobs() == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_detection_pipeline_with_a_missing_trimmed_set_submits_nothing(cli_env, tmp_path):
    # The untrimmed set exists, the trimmed one does not: refused before the first prepare is queued.
    result = run("pipeline", "--task", "detection", "--root", str(tmp_path), "--prepared", "p",
                 "--recognition-root", str(tmp_path / "no-such-set"), ok=False)
    assert result.exit_code == 2 and f"field 'root': {tmp_path / 'no-such-set'} does not exist" in result.output
    assert JobQueue(cli_env).list_jobs() == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_extract_features_kind_refuses_a_non_registry_model(cli_env):
    result = run("submit-job", "extract-features", "--prepared", "p", "--out", "o", "--model", "runs:/abc/model",
                 ok=False)
    assert result.exit_code == 2 and "is not a registry URI" in result.output
