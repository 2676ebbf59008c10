"""Detection distillation methods (trainers/detection/methods): registry, decomposed distillation, queue."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from detection_fixtures import train_detector_through_the_queue
from platform_fixtures import environment
from test_detection_detector import write_feature_set

from vidistill.trainers.detection.methods import StudentSpec, TeacherBatch, get_detection_method, list_detection_methods
from vidistill.trainers.detection.methods.decomposed import LocalAttentiveFusion, mimic_loss
from vidistill.trainers.detection.models import create_detector, point_targets
from vidistill.trainers.detection.train import DetectorTrainConfig, train_detector
from vidistill.trainers.schema import ConfigError

DETECTOR = dict(dim=16, levels=2, stem=1, heads=4, window=5, neck="identity", head="actionformer", dropout=0.0)


def _spec(width=8, teacher_dim=16):
    return StudentSpec(width, 2, DETECTOR, (width,), (teacher_dim,))


def _batch(b=2, c=8, t=16):
    torch.manual_seed(0)
    x, mask = torch.randn(b, c, t), torch.ones(b, t, dtype=torch.bool)
    mask[1, 12:] = False
    targets = [point_targets(torch.tensor([[2.0, 9.0]]), torch.tensor([1]), t, 2, 2) for _ in range(b)]
    return x, mask, targets


def test_methods_are_registered_and_configs_checked():
    assert {"none", "feature", "decomposed"} <= set(list_detection_methods())
    with pytest.raises(ConfigError, match="method 'decomposed' needs 1 teacher stream"):
        DetectorTrainConfig(root="r", features=["f"], method="decomposed").check()
    with pytest.raises(ConfigError, match="unknown detection method 'nope'; registered: .*decomposed"):
        DetectorTrainConfig(root="r", features=["f"], method="nope").check()
    with pytest.raises(ConfigError, match="teachers.0.detector: 'runs:/x' is not a registry URI"):
        DetectorTrainConfig(root="r", features=["f"], method="feature",
                            teachers=[{"features": "g", "detector": "runs:/x"}]).check()
    with pytest.raises(ConfigError, match="method_options.fusion_window: must be odd"):
        DetectorTrainConfig(root="r", features=["f"], method="decomposed", teachers=[{"features": "g"}],
                            method_options={"fusion_window": 4}).check()


@pytest.mark.parametrize("kind", ["l2", "cosine"])
def test_mimic_terms_are_zero_when_the_student_equals_the_teacher(kind):
    x, mask, targets = _batch()
    target = torch.relu(torch.randn(2, 16, 16))
    target[0, :3] = 0  # ReLU features are often exactly zero: equal zero vectors must cost nothing
    assert mimic_loss(target.clone(), target, mask, kind).item() == pytest.approx(0.0, abs=1e-7)
    assert mimic_loss(target + 1, target, mask, kind).item() > 1e-3
    teacher = TeacherBatch(x, mask, 1.0, embedding=target)
    for name in ("decomposed", "feature"):
        method = get_detection_method(name)
        options = method.parse_options({"mimic": kind})
        student = method.build(_spec(), options).train()
        output = student(x, mask)
        key = "motion" if name == "decomposed" else "embedding"
        assert method.loss(output, targets, [teacher], options)["mimic"].item() > 0
        output[key] = target.clone()  # the student's representation is the teacher's
        terms = method.loss(output, targets, [teacher], options)
        assert terms["mimic"].item() == pytest.approx(0.0, abs=1e-7)
        assert all(v.item() > 0 for k, v in terms.items() if k != "mimic")  # detection terms still train


def test_the_shared_head_shares_its_weights():
    method = get_detection_method("decomposed")
    x, mask, targets = _batch()
    teacher = TeacherBatch(x, mask, 1.0, embedding=torch.zeros(2, 16, 16))
    for shared in (True, False):
        options = method.parse_options({"shared_head": shared, "mimic_weight": 0, "motion_weight": 0,
                                        "joint_weight": 0})  # only the appearance branch's detection loss
        student = method.build(_spec(), options).train()
        motion_params = list(student.motion_head.parameters())
        same = [a is b for a, b in zip(motion_params, student.appearance_head.parameters())]
        assert all(same) if shared else not any(same)
        before = [p.detach().clone() for p in motion_params]
        optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
        sum(method.loss(student(x, mask), targets, [teacher], options).values()).backward()
        optimizer.step()
        moved = any(not torch.equal(a, p) for a, p in zip(before, motion_params))
        assert moved == shared  # one update of the appearance loss moves the motion branch's head iff shared


def test_local_attentive_fusion_gate_shape_and_range():
    torch.manual_seed(0)
    fusion = LocalAttentiveFusion(width=8, window=5)
    a, m = torch.randn(2, 12, 8), torch.randn(2, 12, 8) * 5
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    gate, valid = fusion.gate(a, m, mask, 0)
    assert gate.shape == (2, 12, 5)
    assert ((gate > 0) & (gate < 1))[valid.bool()].all() and (gate[~valid.bool()] == 0).all()
    assert valid[0, 0].tolist() == [0, 0, 1, 1, 1] and valid[1, 8].tolist() == [1, 1, 1, 0, 0]
    fused, (gate_a, gate_m) = fusion(a, m, mask)
    assert fused.shape == (2, 12, 16) and gate_a.shape == gate_m.shape == (2, 12, 5)
    # Both directions: appearance <- motion in the first half, motion <- appearance in the second.
    assert not torch.allclose(fused[..., :8], a) and not torch.allclose(fused[..., 8:], m)


def test_inference_reads_rgb_only_and_skips_the_branch_heads():
    method = get_detection_method("decomposed")
    student = method.build(_spec(), method.parse_options({})).eval()
    x, mask, _ = _batch()
    out = student(x, mask)
    assert "motion_output" not in out and [o.shape[1] for o in out["logits"]] == [16, 8]


def _state_hash(model) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.cpu().numpy().tobytes())
    return digest.hexdigest()


def _files_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_decomposed_trains_and_registers_through_the_queue_and_the_teacher_stays_bit_identical(
        ray_settings, dispatchers, tmp_path):

    from vidistill.trainers import tracking
    from vidistill.trainers.detection.train import load_detector

    rgb, flow = write_feature_set(tmp_path, streams=("rgb", "flow"), videos=4)
    with environment(VIDISTILL_HOME=str(ray_settings.home), VIDISTILL_DB_URL=ray_settings.db_url,
                     VIDISTILL_AUTOSTART_DISPATCHER="0", MLFLOW_TRACKING_URI=None):
        tiny = dict(dim=16, levels=2, stem=1, epochs=2, batch_size=2)
        teacher = train_detector(DetectorTrainConfig(root=str(tmp_path), features=[flow], name="flow-teacher", **tiny))
        client = tracking.store_client()
        source = client.get_model_version("flow-teacher", "1").source
        artifacts = Path(client.get_model_version_download_uri("flow-teacher", "1").removeprefix("file://"))
        before = (_state_hash(load_detector(teacher.model_uri)[0]), _files_hash(artifacts))
        sets = [f"{k}={v}" for k, v in tiny.items()] + [
            "method=decomposed", "method_options.fusion_window=3",
            f'teachers=[{{features: "{flow}", detector: "{teacher.model_uri}"}}]']
        job = train_detector_through_the_queue(ray_settings, dispatchers, tmp_path, rgb, "distilled", sets)
        run = client.get_run(job.mlflow_run_id)
        assert {"train_mimic", "train_motion", "train_appearance", "train_joint"} <= set(run.data.metrics)
        version = client.get_model_version_by_alias("distilled", f"job-{job.id}")
        assert version.tags["vidistill.detection_method"] == "decomposed"
        assert json.loads(version.tags["vidistill.teachers"])[0]["detector"] == teacher.model_uri
        student, data = load_detector(f"models:/distilled/{version.version}")
        assert type(student).__name__ == "DecomposedStudent" and data["features"] == [rgb]  # RGB-only inference
        # The frozen teacher: same weights, same files, no new version.
        assert (_state_hash(load_detector(teacher.model_uri)[0]), _files_hash(artifacts)) == before
        assert [str(v.version) for v in client.search_model_versions("name='flow-teacher'")] == ["1"]
        assert client.get_model_version("flow-teacher", "1").source == source


@pytest.mark.parametrize("head, neck", [("actionformer", "fpn"), ("dense", "identity")])
def test_decomposed_is_agnostic_to_the_registered_head_and_neck(head, neck):
    import numpy as np

    from vidistill.trainers.detection.train import FeatureVideo, make_batch

    method = get_detection_method("decomposed")
    options = method.parse_options({})
    spec = StudentSpec(8, 2, {**DETECTOR, "head": head, "neck": neck}, (8,), (None,))
    student = method.build(spec, options).train()
    assert student.kind == ("dense" if head == "dense" else "segments")
    video = FeatureVideo("v", np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32),
                         np.array([[3.0, 9.0]]), np.array([1]), np.array([[1.0, 2.0]]), 10.0)
    x, mask, targets = make_batch([video], student, 2, None)
    x, flow = x.split([8, 8], dim=1)  # the teacher stream rides along as extra channels, as in training
    terms = method.loss(student(x, mask), targets, [TeacherBatch(flow, mask, 1.0)], options)
    assert set(terms) == {"mimic", "motion", "appearance", "joint"} and all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert student.motion[0].weight.grad.abs().sum() > 0
