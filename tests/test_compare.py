"""`vidistill compare`: the paired tests' numbers, the table from runs in a real MLflow store,
a resumed study that queues nothing twice, and a --help that teaches. None of them trains."""
import csv
import io
import json
import math

import pytest

from platform_fixtures import run_cli
from vidistill.platform.study import ARMS
from vidistill.platform.study_report import format_rows, paired_test, read_accuracies, rows_csv, study_table


def test_paired_t_and_wilcoxon_match_hand_computed_values():
    # Accuracies on 8 test videos (exact binary fractions). Differences 2, 2, -1, 3 eighths:
    # mean 3/2 eighths, sample sd sqrt(9/3) = sqrt(3), so t = (3/2) / (sqrt(3) / 2) = sqrt(3), and with
    # 3 degrees of freedom the t CDF is closed form: two-sided p = 1/2 - 1/pi.
    baseline = {0: 0.5, 1: 0.625, 2: 0.75, 3: 0.5}
    arm = {0: 0.75, 1: 0.875, 2: 0.625, 3: 0.875}
    test = paired_test(arm, baseline)
    assert test.n == 4 and test.mean_difference == pytest.approx(0.1875)
    assert test.t == pytest.approx(math.sqrt(3))
    assert test.p_t == pytest.approx(0.5 - 1 / math.pi, abs=1e-9)
    # Five positive differences of distinct sizes: W- = 0, the most extreme of the 2^5 equally
    # likely sign patterns, so the exact two-sided p is 2 / 32.
    five = paired_test({s: 0.5 + (s + 1) / 8 for s in range(5)}, {s: 0.5 for s in range(5)})
    assert five.p_wilcoxon == pytest.approx(2 / 32)
    # Pairing is on the seed: a seed one arm lacks does not count; identical arms: p = 1.
    assert paired_test({0: 0.5, 1: 0.75, 7: 1.0}, {0: 0.5, 1: 0.75}).n == 2
    same = paired_test({0: 0.5, 1: 0.75}, {0: 0.5, 1: 0.75})
    assert (same.mean_difference, same.p_t, same.p_wilcoxon) == (0.0, 1.0, 1.0)


def _evaluation_run(client, results: dict[str, float]) -> str:
    """An evaluation run as trainers/evaluate.py leaves it: evaluation.json with top-1 by key."""
    import tempfile
    from pathlib import Path

    from vidistill.trainers import tracking

    run = client.create_run(tracking.experiment_id(client, "vidistill"), run_name="evaluate (test)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "evaluation.json"
        path.write_text(json.dumps({"classes": ["a", "b", "c", "d"],
                                    "results": {key: {"top1": value} for key, value in results.items()}}))
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_the_table_is_mean_and_std_over_seeds_of_the_evaluation_runs_in_mlflow(trainer_home):
    from vidistill.trainers import tracking

    client = tracking.configure()
    uris, runs = {}, {}
    per_seed = {  # seed -> (rgb-plain, prob-distill, teacher, prob-distill + teacher)
        0: (0.5, 0.75, 1.0, 1.0), 1: (0.625, 0.875, 1.0, 0.875), 2: (0.75, 0.625, 1.0, 1.0)}
    for seed, (rgb, student, teacher, fused) in per_seed.items():
        for arm in ("rgb-plain", "prob-distill", "flow-teacher"):
            uris[f"easy/{seed}/{arm}"] = f"models:/{arm}@job-{seed}"
        runs[f"easy/{seed}"] = _evaluation_run(client, {
            uris[f"easy/{seed}/rgb-plain"]: rgb, uris[f"easy/{seed}/prob-distill"]: student,
            uris[f"easy/{seed}/flow-teacher"]: teacher,
            f"{uris[f'easy/{seed}/prob-distill']} + {uris[f'easy/{seed}/flow-teacher']}": fused})
    arms = ["rgb-plain", "prob-distill", "prob-distill+flow", "logit"]  # logit: never run, no row
    rows = study_table(read_accuracies(client, runs, uris, arms), arms)
    assert [r.arm for r in rows] == ["rgb-plain", "prob-distill", "prob-distill+flow"]
    rgb, student, fusion = rows
    assert rgb.per_seed == {0: 0.5, 1: 0.625, 2: 0.75}
    assert (rgb.mean, rgb.std) == (pytest.approx(0.625), pytest.approx(0.125))
    assert (student.mean, student.std) == (pytest.approx(0.75), pytest.approx(0.125))
    assert fusion.mean == pytest.approx(2.875 / 3)
    assert fusion.std == pytest.approx(0.0721688, abs=1e-6)  # sd of (1, 0.875, 1)
    assert rgb.versus_rgb is None and student.versus_rgb.mean_difference == pytest.approx(0.125)
    markdown = format_rows(rows)
    assert "| easy | Prob-Distill (attention) | 0.750 +- 0.125 | 3 | 0.750 0.875 0.625 | +0.125 |" in markdown
    parsed = list(csv.DictReader(io.StringIO(rows_csv(rows))))
    assert parsed[1]["arm"] == "prob-distill" and float(parsed[1]["top1_mean"]) == 0.75
    assert float(parsed[1]["p_paired_t"]) == pytest.approx(student.versus_rgb.p_t, abs=1e-4)


def _compare(*args):
    result = run_cli("compare", "--no-wait", "--json", *args)
    return json.loads(result.stdout[result.stdout.index("{"):])["study"]


def test_a_resumed_study_queues_nothing_twice_and_retries_only_what_failed(cli_env):
    from vidistill.platform.queue import JobQueue

    queue = JobQueue(cli_env)
    first = _compare("--arms", "rgb-plain,prob-distill,prob-distill+flow", "--seeds", "0,1")
    jobs = first["jobs"]
    # prepare; per seed: teacher, rgb-plain, prob-distill, one evaluation of all three.
    assert len(first["submitted"]) == 9 and sorted(first["submitted"]) == sorted(jobs.values())
    evaluation = queue.get(jobs["easy/0/evaluate:flow-teacher+rgb-plain+prob-distill"])
    assert evaluation.dependency_ids == sorted(jobs[f"easy/0/{a}"] for a in ("flow-teacher", "rgb-plain",
                                                                                 "prob-distill"))
    assert evaluation.config["fuse"] == ["2+0"]  # the student with the teacher, on the same clips
    student = queue.get(jobs["easy/1/prob-distill"])
    assert student.config["teacher"] == first["models"]["easy/1/flow-teacher"]
    assert student.dependency_ids == [jobs["easy/1/flow-teacher"]]
    assert "seed=1" in student.config["set"] and "seed=1" in queue.get(jobs["easy/1/rgb-plain"]).config["set"]

    again = _compare("--arms", "rgb-plain,prob-distill,prob-distill+flow", "--seeds", "0,1")
    assert again["submitted"] == [] and again["retried"] == [] and sorted(again["kept"]) == sorted(jobs.values())

    queue.cancel(jobs["easy/1/rgb-plain"])
    retried = _compare("--arms", "rgb-plain,prob-distill,prob-distill+flow", "--seeds", "0,1")
    assert retried["submitted"] == [] and retried["retried"] == [jobs["easy/1/rgb-plain"]]
    assert queue.get(jobs["easy/1/rgb-plain"]).state == "queued"

    grown = _compare("--arms", "rgb-plain,prob-distill,prob-distill+flow", "--seeds", "0,1,2")
    assert len(grown["submitted"]) == 4  # seed 2 only: teacher, two arms, its evaluation
    assert len(queue.list_jobs()) == 13


def test_compare_help_teaches_and_bad_input_names_the_choices(cli_env):
    text = run_cli("compare", "--help").output
    for arm in ARMS:
        assert arm in text
    for words in ("paired", "Wilcoxon", "--report", "resumes", "easy, medium, hard", "vidistill compare --size small"):
        assert words in text
    refused = run_cli("compare", "--arms", "rgb-plain,prob-distil", ok=False)
    assert refused.exit_code == 2 and "'prob-distil'" in refused.output and "prob-distill" in refused.output
    missing = run_cli("compare", "--report", "--name", "nothing-here", ok=False)
    assert missing.exit_code == 2 and "no study named 'nothing-here'" in missing.output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the queue is only read here
def test_the_report_of_finished_jobs_writes_the_table_and_plots_and_logs_them_to_one_study_run(queue, trainer_home):
    from pathlib import Path

    from vidistill.platform.queue import Capacity, JobState
    from vidistill.platform.study import StudyRecord, study_folder
    from vidistill.platform.study_report import study_report
    from vidistill.trainers import tracking

    client = tracking.configure()
    experiment = tracking.experiment_id(client, "vidistill")
    everything = Capacity(total_cpus=100, total_gpus=0, max_worker_cpus=100, max_worker_gpus=0)

    def finished_job(run_id: str) -> int:
        job = queue.insert_job("evaluate", {}, num_workers=1, cpus_per_worker=1, gpus_per_worker=0)
        assert queue.claim_next_job("d", everything).id == job.id
        queue.set_mlflow_run_id(job.id, run_id)
        queue.finish(job.id, "d", JobState.SUCCEEDED)
        return job.id

    def training_run(val_accuracy: list[float], **last: float) -> str:
        run_id = client.create_run(experiment).info.run_id
        for epoch, value in enumerate(val_accuracy):
            client.log_metric(run_id, "val_accuracy", value, step=epoch)
        for name, value in last.items():
            client.log_metric(run_id, name, value)
        return run_id

    record = StudyRecord({"name": "known", "arms": ["rgb-plain", "prob-distill"], "seeds": [0, 1],
                          "difficulties": ["easy"], "size": "tiny"}, "digest")
    curves = {0: ([0.25, 0.5, 0.75], [0.25, 0.25, 0.5]), 1: ([0.25, 0.25, 0.25], [0.5, 0.75, 1.0])}
    top1 = {0: (0.5, 0.625), 1: (0.625, 0.875)}
    for seed in (0, 1):
        for i, arm in enumerate(("rgb-plain", "prob-distill")):
            extra = {"teacher_actor_mass_ratio": 1.5 + seed, "train_motion_kl": 0.4} if i else {}
            record.jobs[f"easy/{seed}/{arm}"] = finished_job(training_run(curves[seed][i], **extra))
            record.uris[f"easy/{seed}/{arm}"] = f"models:/known-{arm}@job-{seed}"
        evaluation = _evaluation_run(client, {record.uris[f"easy/{seed}/{a}"]: top1[seed][i]
                                              for i, a in enumerate(("rgb-plain", "prob-distill"))})
        key = f"easy/{seed}/evaluate:rgb-plain+prob-distill"
        record.jobs[key] = finished_job(evaluation)
        record.evaluations[key] = ["rgb-plain", "prob-distill"]
    record.save(study_folder(queue.settings, "known") / "study.json")

    report = study_report(queue, "known")
    rgb, student = report.rows
    assert (rgb.mean, student.mean) == (pytest.approx(0.5625), pytest.approx(0.75))
    # 4 classes: twice chance is 0.5, reached at epoch 2 (seed 0) and never (seed 1) by RGB.
    assert rgb.leaves_chance == {0: 2, 1: None} and student.leaves_chance == {0: 3, 1: 1}
    assert report.actor_mass == {"easy": pytest.approx(2.0)} and report.pending == []
    assert report.to_dict()["teacher_gate_passed"] == {"easy": False}  # 2x uniform: below the 3x gate
    assert "| easy | RGB I3D (plain) | 0.562 +- 0.088 | 2 | 0.500 0.625 |" in Path(report.files["markdown"]).read_text()
    logged = {f.path for f in client.list_artifacts(report.study_run)}
    assert {"table.csv", "table.md", "accuracy.png", "curves.png", "study.json"} <= logged
    assert Path(report.files["curves_plot"]).read_bytes()[:4] == b"\x89PNG"
    assert study_report(queue, "known").study_run == report.study_run  # one run per study, updated


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_warm_started_study_pretrains_once_and_every_arm_starts_from_the_exported_backbone(cli_env):
    from vidistill.platform.queue import JobQueue

    queue = JobQueue(cli_env)
    study = _compare("--arms", "rgb-plain,prob-distill", "--seeds", "0,1", "--warm-start", "--name", "warm")
    jobs = study["jobs"]
    # Once for the study: a separate set (seed 1000, twice the videos), its prepare, two
    # pretrainings and two exports; then per seed teacher, two arms and the evaluation.
    assert len(study["submitted"]) == 1 + 2 + 2 + 1 + 2 * 4
    source = cli_env.home / "studies" / "warm" / "warm-start" / "source"
    recorded = json.loads((source / "synthetic.json").read_text())
    assert (recorded["seed"], recorded["videos_per_class"]) == (1000, 8)
    export = queue.get(jobs["warm-start/export-rgb"])
    assert export.kind == "command" and export.dependency_ids == [jobs["warm-start/rgb"]]
    assert "-m vidistill.platform.warm_start models:/study-warm-warm-start-rgb-none@job-" in export.config["command"]
    for seed in (0, 1):
        for arm, modality in (("flow-teacher", "flow"), ("rgb-plain", "rgb"), ("prob-distill", "rgb")):
            job = queue.get(jobs[f"easy/{seed}/{arm}"])
            checkpoint = cli_env.home / "studies" / "warm" / "warm-start" / f"{modality}.pt"
            assert f"model.pretrained={checkpoint}" in job.config["set"]
            assert jobs[f"warm-start/export-{modality}"] in job.dependency_ids
    refused = run_cli("compare", "--no-wait", "--arms", "rgb-plain", "--name", "warm", ok=False)
    assert refused.exit_code == 2 and "--warm-start" in refused.output  # from scratch under the same name


def test_an_exported_backbone_loads_into_every_network_an_arm_builds(tmp_path):
    import torch

    from vidistill.platform.warm_start import backbone_state
    from vidistill.trainers.models import create_model, create_student, create_teacher

    torch.manual_seed(0)
    rgb = create_model("i3d_tiny", num_classes=4, attention="none")
    torch.save(backbone_state(rgb), tmp_path / "rgb.pt")
    flow = create_teacher("i3d_tiny", num_classes=4)
    torch.save(backbone_state(flow), tmp_path / "flow.pt")
    reference = next(iter(backbone_state(rgb).items()))
    for network in (create_model("i3d_tiny", num_classes=4, attention="soft-atten", pretrained=tmp_path / "rgb.pt"),
                    create_student("i3d_tiny", num_classes=4, pretrained=tmp_path / "rgb.pt")):
        assert torch.equal(backbone_state(network)[reference[0]], reference[1])
    teacher = create_teacher("i3d_tiny", num_classes=4, pretrained=tmp_path / "flow.pt")
    key, value = next(iter(backbone_state(flow).items()))
    assert torch.equal(backbone_state(teacher)[key], value)


def test_the_wide_size_is_the_set_whose_flow_teacher_looks_at_the_actor(cli_env):
    """`--size wide`: the frames, crop, actor and travel of the teacher that passed issue 13's
    actor-mass gate (README); changing any of them changes what the gate measured."""
    from vidistill.datasets.synthetic import DIFFICULTIES, SyntheticConfig
    from vidistill.platform.quickstart import SIZES
    from vidistill.platform.study import StudySpec

    wide = SIZES["wide"]
    config = SyntheticConfig(**{**wide.synthetic, **DIFFICULTIES["easy"]})
    assert (config.width, config.height, config.actor_size, config.travel) == (320, 256, 0.08, (0.12, 0.2))
    assert (config.classes, config.videos_per_class, config.frames, config.distractors, config.decoys) == (4, 24, 24, 1, 0)
    assert wide.prepare == {"flow": "farneback", "bound": 4.0, "width": 320, "height": 256}
    assert {"data.crop_size=256", "data.clip_length=16", "model.name=i3d_tiny", "epochs=20", "model.map_block=Mixed_5c",
            "model.gumbel_temperature_start=5"} <= set(wide.training)
    StudySpec(name="wide-easy", arms=["flow-teacher", "rgb-plain", "prob-distill"], seeds=[0], size="wide").check()
    assert "wide" in run_cli("compare", "--help").output
