"""Augmented-RGB (issue 16): its loss terms by hand, the contrastive loss learning, multi-teacher weights."""
import json
import math
from pathlib import Path

import pytest
import torch
from detection_fixtures import train_detector_through_the_queue
from platform_fixtures import environment
from test_detection_detector import write_feature_set

from vidistill.trainers.detection.methods.augmented_rgb import (AugmentedRGBHeads, AugmentedRGBOptions, TeacherView,
                                                                bernoulli_kl, boundary_loss, boundary_profile,
                                                                distillation_terms, global_relation_loss, info_nce,
                                                                relation_matrix)
from vidistill.trainers.detection.methods import (StudentSpec, TeacherBatch, get_detection_method,
                                                  list_detection_methods)
from vidistill.trainers.schema import ConfigError


def _batch(b=2, t=12, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, t, d, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 9:] = False  # a padded video
    return h, mask


def test_sequence_terms_are_zero_when_student_equals_teacher_and_scale_free():
    h, mask = _batch()
    for teacher in (h, 3 * h):  # cosines: the teacher's scale does not matter
        assert global_relation_loss(h, teacher, mask).item() == pytest.approx(0, abs=1e-6)
        assert boundary_loss(h, teacher, mask).item() == pytest.approx(0, abs=1e-6)
    other, _ = _batch(seed=1)
    assert global_relation_loss(h, other, mask).item() > 0.05
    assert boundary_loss(h, other, mask).item() > 0.5
    logits = torch.randn(2, 12, 3)
    assert bernoulli_kl(logits, logits, mask).item() == pytest.approx(0, abs=1e-6)
    assert bernoulli_kl(logits, -logits, mask).item() > 0.1


def test_relation_and_boundary_by_hand():
    # three snippets in 2-D: centred they are (-1, 0), (0, 0), (1, 0) -> the middle one is the zero vector
    h = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    r = relation_matrix(h)
    assert r[0, 2].item() == pytest.approx(-1) and r[0, 0].item() == pytest.approx(1) and r[1, 1].item() == 0
    # change profile 1 - cos: between (1,0),(0,1) it is 1; between (0,1),(0,1) it is 0 -> standardised +-1
    profile = boundary_profile(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    assert profile.tolist() == pytest.approx([1.0, -1.0], abs=1e-5)


def test_info_nce_is_at_its_minimum_when_student_equals_teacher():
    n, tau = 6, 0.1
    z = torch.eye(n)[None]  # orthonormal snippet embeddings, one video
    mask = torch.ones(1, n, dtype=torch.bool)
    at_teacher = info_nce(z, z, mask, tau).item()
    # diagonal logit 1/tau, the others 0: -log(e^{1/tau} / (e^{1/tau} + n - 1)) (float32: rel 1e-3).
    # InfoNCE is not exactly 0 at student == teacher (tilting away from the negatives lowers it a
    # little more); its value there is this, which goes to 0 as tau -> 0, and perturbations raise it.
    assert at_teacher == pytest.approx(math.log(1 + (n - 1) * math.exp(-1 / tau)), rel=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        moved = z + 0.3 * torch.randn(z.shape, generator=g)
        assert info_nce(moved, z, mask, tau).item() > at_teacher
    assert info_nce(z, z.flip(1), mask, tau).item() > 5  # every positive wrong


def test_contrastive_loss_falls_on_a_tiny_set():
    torch.manual_seed(0)
    h_t, mask = _batch(b=3, t=16, d=12)
    rgb = h_t @ torch.randn(12, 10) + 0.5 * torch.randn(3, 16, 10)  # the student sees a noisy mix of it
    student = torch.nn.Linear(10, 16)
    heads = AugmentedRGBHeads(16, [12], projection_dim=16)
    options = AugmentedRGBOptions(atomic=1.0, **{"global": 0.0}, boundary=0.0)
    optimizer = torch.optim.Adam([*student.parameters(), *heads.parameters()], lr=1e-2)
    losses = []
    for _ in range(150):
        terms = distillation_terms(student(rgb), torch.zeros(3, 16, 2), mask, [TeacherView(h_t)], heads, options)
        optimizer.zero_grad()
        terms["atomic"].backward()
        optimizer.step()
        losses.append(terms["atomic"].item())
    assert losses[0] > math.log(mask.sum().item()) * 0.8  # chance: log N
    assert losses[-1] < 0.3 * losses[0], losses[::30]


def test_multi_teacher_weights():
    h, mask = _batch()
    t1, _ = _batch(seed=1)
    t2, _ = _batch(b=2, t=12, d=5, seed=2)  # a second stream of another width
    torch.manual_seed(0)
    heads = AugmentedRGBHeads(8, [8, 5], projection_dim=8)
    options = AugmentedRGBOptions(feature=1.0, max_contrast=1000)
    logits = torch.zeros(2, 12, 3)

    def terms(views):
        return distillation_terms(h, logits, mask, views, heads, options)

    one = terms([TeacherView(t1, 1.0), TeacherView(t2, 0.0)])
    alone = terms([TeacherView(t1, 1.0)])
    second = terms([TeacherView(t1, 0.0), TeacherView(t2, 1.0)])
    both = terms([TeacherView(t1, 1.0), TeacherView(t2, 3.0)])
    assert set(both) == {"atomic", "global", "boundary", "feature"}
    for name in both:
        assert one[name].item() == pytest.approx(alone[name].item(), rel=1e-6)
        assert both[name].item() == pytest.approx((one[name].item() + 3 * second[name].item()) / 4, rel=1e-5)
        assert abs(one[name].item() - second[name].item()) > 1e-3  # the teachers really differ
    with pytest.raises(ValueError, match="weights must not all be 0"):
        terms([TeacherView(t1, 0.0)])
    with pytest.raises(ValueError, match="needs a teacher detector"):
        distillation_terms(h, logits, mask, [TeacherView(t1)], heads, AugmentedRGBOptions(logit=1.0))


def _spec(teacher_dims=(None,), teacher_channels=(6,)):
    return StudentSpec(5, 3, dict(dim=16, levels=2, stem=1, heads=2, window=5, neck="identity", head="dense"),
                       teacher_channels, teacher_dims)


def test_registered_method_weights_each_term_and_is_zero_against_itself():
    assert "augmented-rgb" in list_detection_methods()
    method = get_detection_method("augmented-rgb")
    options = method.parse_options({"atomic": 2.0, "global": 0.5, "boundary": 3.0, "logit": 1.0})
    torch.manual_seed(0)
    student = method.build(_spec(teacher_dims=(16,)), options)
    x, mask = torch.randn(2, 5, 8), torch.ones(2, 8, dtype=torch.bool)
    targets = [torch.zeros(8, 3), torch.ones(8, 3)]
    output = student(x, mask)
    assert output["frame_logits"].shape == (2, 8, 3) and output["embedding"].shape == (2, 8, 16)
    # the student's own detector as the frozen teacher on the same features: every term is 0 but InfoNCE
    itself = TeacherBatch(x, mask, 1.0, student.detector, None, student.detector(x, mask))
    terms = method.loss(output, targets, [itself], options)
    assert set(terms) == {"detection", "atomic", "global", "boundary", "logit"}
    for name in ("global", "boundary", "logit"):
        assert terms[name].item() == pytest.approx(0, abs=1e-5), name
    unweighted = distillation_terms(output["embedding"], output["frame_logits"], mask,
                                    [TeacherView(output["embedding"].detach(), 1.0, output["frame_logits"].detach())],
                                    student.heads, options)
    assert terms["atomic"].item() == pytest.approx(2.0 * unweighted["atomic"].item(), rel=1e-5)
    # raw teacher features (no detector): terms against a different stream are not 0
    plain = method.parse_options({})
    raw_student = method.build(_spec(), plain)
    raw = method.loss(raw_student(x, mask), targets, [TeacherBatch(torch.randn(2, 6, 8), mask, 1.0)], plain)
    assert set(raw) == {"detection", "atomic", "global", "boundary"} and raw["global"].item() > 0.01


def test_options_are_checked():
    method = get_detection_method("augmented-rgb")
    with pytest.raises(ConfigError, match="every distillation weight is 0"):
        method.parse_options({"atomic": 0.0, "global": 0.0, "boundary": 0.0})
    with pytest.raises(ConfigError, match="method_options.temperature"):
        method.parse_options({"temperature": 0.0})
    assert method.parse_options({"global": 0.0}).global_ == 0.0


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_augmented_rgb_trains_through_the_queue_with_two_teachers_and_registers(ray_settings, dispatchers, tmp_path):

    from vidistill.trainers import tracking
    from vidistill.trainers.detection.methods.augmented_rgb import AugmentedRGBStudent
    from vidistill.trainers.detection.train import DetectorTrainConfig, load_detector, train_detector

    rgb, flow, depth = write_feature_set(tmp_path, streams=("rgb", "flow", "depth"), videos=4)
    with environment(VIDISTILL_HOME=str(ray_settings.home), VIDISTILL_DB_URL=ray_settings.db_url,
                     VIDISTILL_AUTOSTART_DISPATCHER="0", MLFLOW_TRACKING_URI=None):
        tiny = dict(dim=16, levels=1, stem=1, epochs=2, batch_size=2, head="dense")
        teacher = train_detector(DetectorTrainConfig(root=str(tmp_path), features=[flow], name="flow-teacher", **tiny))
        # flow through its frozen detector (weight 2), a second stream as raw features (weight 1)
        sets = [f"{k}={v}" for k, v in tiny.items()] + [
            "method=augmented-rgb", "method_options.temperature=0.2",
            f'teachers=[{{features: "{flow}", detector: "{teacher.model_uri}", weight: 2.0}}, '
            f'{{features: "{depth}", weight: 1.0}}]']
        job = train_detector_through_the_queue(ray_settings, dispatchers, tmp_path, rgb, "augmented", sets)
        client = tracking.store_client()
        metrics = client.get_run(job.mlflow_run_id).data.metrics
        assert {"train_detection", "train_atomic", "train_global", "train_boundary", "frame_mAP"} <= set(metrics)
        version = client.get_model_version_by_alias("augmented", f"job-{job.id}")
        assert version.tags["vidistill.detection_method"] == "augmented-rgb"
        assert [t["weight"] for t in json.loads(version.tags["vidistill.teachers"])] == [2.0, 1.0]
        student, data = load_detector(f"models:/augmented/{version.version}")
        assert isinstance(student, AugmentedRGBStudent) and data["features"] == [rgb]  # RGB only at inference
        out = student(torch.randn(1, 8, 12), torch.ones(1, 12, dtype=torch.bool))
        assert out["frame_logits"].shape == (1, 12, 2)
        assert [str(v.version) for v in client.search_model_versions("name='flow-teacher'")] == ["1"]  # not re-registered
