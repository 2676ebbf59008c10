"""Generative (CVAE) feature distillation (trainers/methods/generative.py): its two phases on tiny
networks, and one run through the queue, the registry and a Tune search."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidistill.trainers.config import load_config
from vidistill.trainers.losses import TeacherSignals
from vidistill.trainers.methods import AuxiliarySetup, MethodContext, get_method
from vidistill.trainers.methods.generative import (GenerativeModule, GenerativeOptions, build, fit_representation,
                                                   kl_to_attention_prior)
from vidistill.trainers.models import create_model, create_teacher
from vidistill.trainers.teacher import TeacherMismatchError, check_teacher_fits, state_digest

CLIP = (8, 64, 64)


def test_the_kl_is_zero_exactly_when_the_posterior_is_its_prior_centred_on_the_attention():
    torch.manual_seed(0)
    attention = torch.rand(2, 6, 3)  # (B, C, T)
    mu = attention[..., None, None].expand(2, 6, 3, 4, 4).clone()
    log_var = torch.zeros_like(mu)
    assert float(kl_to_attention_prior(mu, log_var, attention)) == 0.0
    assert float(kl_to_attention_prior(mu + 0.1, log_var, attention)) == pytest.approx(0.5 * 0.01, rel=1e-4)
    assert float(kl_to_attention_prior(mu, log_var + 0.5, attention)) > 0
    # A posterior at N(0, I) is not at the prior: the KL is centred on the attention, not on 0.
    assert float(kl_to_attention_prior(torch.zeros_like(mu), log_var, attention)) > 0.05


def test_the_reconstruction_error_is_one_minus_r_squared_in_recognition_and_detection():
    # 0 for a perfect decode, exactly 1 for the mean feature (no better than knowing nothing),
    # whatever the teacher's feature scale: the generative weight means the same for any teacher.
    from vidistill.trainers.detection.methods.generative import _relative_masked_mse
    from vidistill.trainers.methods.generative import relative_mse

    torch.manual_seed(0)
    features = 40 * torch.randn(2, 8, 4, 3, 3) + 7
    mean = features.mean().expand_as(features)
    assert relative_mse(features, features).item() == 0
    assert relative_mse(mean, features).item() == pytest.approx(1.0, abs=1e-6)
    assert relative_mse(mean / 40, features / 40).item() == pytest.approx(1.0, abs=1e-6)
    snippets = 40 * torch.randn(2, 6, 10) + 7  # (batch, channels, time), every snippet valid
    mask = torch.ones(2, 10, dtype=torch.bool)
    assert _relative_masked_mse(snippets, snippets, mask).item() == 0
    assert _relative_masked_mse(snippets.mean().expand_as(snippets), snippets, mask).item() == pytest.approx(1.0, abs=1e-5)


def test_phase_1_reconstruction_falls_on_a_tiny_set():
    torch.manual_seed(0)
    # Block-5-like features: non-negative, low rank over channels, varying over time and space.
    basis = torch.rand(3, 16)
    batches = [torch.relu(torch.einsum("kc,bkthw->bcthw", basis, torch.randn(4, 3, 2, 3, 3))) for _ in range(3)]
    module = GenerativeModule(16)
    history = fit_representation(module, lambda epoch: iter(batches), epochs=60, lr=3e-3, kl_weight=0.1)
    first, last = history[0]["reconstruction_mse"], history[-1]["reconstruction_mse"]
    assert last < 0.3 * first, (first, last)
    assert history[-1]["kl"] < history[0]["kl"] or history[-1]["kl"] < 0.5


class _Batches:
    """The training loader's interface that phase 1 uses: set_epoch and iteration."""

    def __init__(self, batches):
        self.batches, self.epochs = batches, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(self.batches)


def _paired_batches(n=2, batch=2):
    g = torch.Generator().manual_seed(1)
    return [{"rgb": torch.randn(batch, 3, *CLIP, generator=g), "flow": torch.randn(batch, 2, *CLIP, generator=g),
             "label": torch.randint(0, 4, (batch,), generator=g)} for _ in range(n)]


@pytest.mark.parametrize("setting", ["cross-modal", "compression"])
def test_phase_2_trains_the_student_and_leaves_teacher_and_generative_module_bit_identical(setting):
    torch.manual_seed(0)
    if setting == "cross-modal":  # flow teacher, RGB student of the same width
        teacher, key = create_teacher("i3d_tiny", num_classes=4, attention="none"), "flow"
        student = create_model("i3d_tiny", in_channels=3, num_classes=4, attention="none")
    else:  # a wider RGB teacher, a lighter RGB student: an adapter maps the widths
        teacher, key = create_model("i3d_small", in_channels=3, num_classes=4, attention="none"), "rgb"
        student = create_model("i3d_tiny", in_channels=3, num_classes=4, attention="none")
    teacher.eval().requires_grad_(False)
    check_teacher_fits(teacher, student, CLIP, "generative")
    batches = _paired_batches()
    config = load_config(overrides=["data.prepared=/p/tiny", "data.root=/r", "distill.teacher=models:/t/1",
                                    "distill.objective=generative", "distill.options.phase1_epochs=2"])
    options = get_method("generative").parse_options(config.distill.options)
    loader = _Batches(batches)
    distiller = build(AuxiliarySetup(teacher=teacher, student=student, teacher_input=lambda b: b[key],
                                     student_input=lambda b: b["rgb"], loader=loader, device="cpu", config=config,
                                     options=options, state=None))
    assert loader.epochs == [0, 1]  # phase 1 ran its passes over the training clips
    assert not any(p.requires_grad for p in distiller.generative.parameters())
    adapter = [p for p in distiller.parameters() if p.requires_grad]
    assert bool(adapter) == (setting == "compression")
    teacher_before, module_before = state_digest(teacher), state_digest(distiller.generative)
    student_before = state_digest(student)
    adapter_before = [p.detach().clone() for p in adapter]
    optimizer = torch.optim.SGD(list(student.parameters()) + adapter, lr=0.1, momentum=0.9)
    method = get_method("generative")
    student.train()
    for epoch in range(2):
        for batch in batches:
            with torch.no_grad():
                signals = TeacherSignals.from_output(teacher(batch[key]))
            terms = method.loss(student(batch["rgb"]), batch["label"], signals, config, options,
                                context=MethodContext(distiller, epoch, 2))
            assert set(terms.terms) >= {"ce", "generative_mse", "attention_mse"}
            optimizer.zero_grad()
            terms.total.backward()
            optimizer.step()
    assert state_digest(teacher) == teacher_before
    assert state_digest(distiller.generative) == module_before
    assert state_digest(student) != student_before
    assert all(not torch.equal(a, b) for a, b in zip(adapter, adapter_before))


def test_the_teacher_check_takes_an_rgb_teacher_of_another_width_only_where_the_method_adapts():
    student = create_model("i3d_tiny", in_channels=3, num_classes=4, attention="none")
    rgb_teacher = create_model("i3d_small", in_channels=3, num_classes=4, attention="none")
    check_teacher_fits(rgb_teacher, student, CLIP, "generative")
    with pytest.raises(TeacherMismatchError, match="feature distillation needs the same width"):
        check_teacher_fits(rgb_teacher, student, CLIP, "feature")
    with pytest.raises(TeacherMismatchError, match="reads 2-channel flow$"):
        check_teacher_fits(create_model("i3d_tiny", in_channels=3, num_classes=4, attention="prob-atten"),
                           student, CLIP, "attention")


def test_the_options_are_checked_and_zero_weights_are_the_ablations():
    base = ["data.prepared=/p/tiny", "data.root=/r", "distill.teacher=models:/t/1", "distill.objective=generative"]
    config = load_config(overrides=base + ["distill.options.generative_weight=0"])
    assert get_method("generative").parse_options(config.distill.options).generative_weight == 0
    from vidistill.trainers.schema import ConfigError

    with pytest.raises(ConfigError, match=r"distill.options.phase1_epochs"):
        load_config(overrides=base + ["distill.options.phase1_epochs=0"])
    assert GenerativeOptions().ramp_epochs == 3


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_generative_distillation_trains_through_submit_job_distill_and_a_tune_search(
        ray_settings, dispatchers, tiny_dataset, tmp_path):
    from mlflow.tracking import MlflowClient
    from platform_fixtures import environment
    from test_methods import distill_and_tune_through_the_queue

    from vidistill.trainers import tracking
    from vidistill.trainers.train import TAG_TEACHER_AT_END, TAG_TEACHER_AT_START

    with environment(VIDISTILL_HOME=str(ray_settings.home), VIDISTILL_DB_URL=ray_settings.db_url,
                     VIDISTILL_AUTOSTART_DISPATCHER="0", MLFLOW_TRACKING_URI=None):
        queue, distill_id, tune_id = distill_and_tune_through_the_queue(
            ray_settings, dispatchers, tiny_dataset, tmp_path,
            ["distill.objective=generative", "distill.options.phase1_epochs=1"], ["distill.options.attention_weight=2"],
            "distill.options.generative_weight: [0.5, 2]\n")
        assert "generative phase 1 epoch 1/1" in Path(queue.get(distill_id).log_path).read_text()

        client = MlflowClient(tracking.tracking_uri(), registry_uri=tracking.tracking_uri())
        trained = client.get_run(queue.get(distill_id).mlflow_run_id)
        assert trained.data.params["distill.objective"] == "generative"
        assert {"train_generative_mse", "train_attention_mse"} <= set(trained.data.metrics)
        assert trained.data.tags[TAG_TEACHER_AT_START] == trained.data.tags[TAG_TEACHER_AT_END]
        versions = client.search_model_versions("name='tiny-student-rgb-generative'")
        by_alias = {alias: v for v in versions for alias in client.get_model_version(v.name, v.version).aliases}
        assert {f"job-{distill_id}", f"job-{tune_id}"} <= set(by_alias)
        best = client.get_model_version("tiny-student-rgb-generative", by_alias[f"job-{tune_id}"].version)
        assert float(best.tags["vidistill.tune.distill.options.generative_weight"]) in (0.5, 2.0)


def test_detection_generative_fits_the_module_then_freezes_it_while_the_detector_distils():
    from test_detection_distill import DETECTOR, _batch

    from vidistill.trainers.detection.methods import StudentSpec, TeacherBatch, get_detection_method

    method = get_detection_method("generative")
    options = method.parse_options({"phase1_steps": 3, "ramp_steps": 2})
    torch.manual_seed(0)
    student = method.build(StudentSpec(8, 2, DETECTOR, (8,), (None,)), options).train()
    x, mask, targets = _batch()
    teacher = TeacherBatch(torch.relu(torch.randn(2, 8, 16)), mask, 1.0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2, weight_decay=0.05)  # the detection loop's
    seen, digests = [], []
    for _ in range(6):
        terms = method.loss(student(x, mask), targets, [teacher], options)
        seen.append(set(terms))
        optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimizer.step()
        digests.append(state_digest(student.generative))
    assert seen[0] == {"detection", "reconstruction", "kl"} and seen[-1] == {"detection", "generative", "attention"}
    assert len(set(digests[:3])) == 3  # phase 1 moves the module at every step
    assert len(set(digests[2:])) == 1  # phase 2 leaves it bit-identical
    detector_only = {k: v for k, v in student.state_dict().items() if not k.startswith("generative")}
    assert detector_only and int(student.generative_steps) == 6
