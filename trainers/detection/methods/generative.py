"""Generative (CVAE) feature distillation for temporal action detection: the module of
trainers/methods/generative.py on the snippet features feeding the detector.

    --set method=generative --set 'teachers=[{features: FLOW}]'

The teacher stream's snippet features F_t (B, C_t, T) are what the generative module models (an
attention over channels and time + a CVAE with prior N(A, I)); the student side is the RGB
detector's embedding (its first 1D-conv projection, `Detector.embed`, the layer the other
detection methods mimic), mapped to C_t by a 1x1 conv adapter. A snippet is one cell: the
features enter the recognition module as (B, C, T, 1, 1).

Choices beyond the recognition method's (its docstring has those), with the reason:
- **Sequential phases counted in steps.** The detection registry has no phase-1 hook, so the
  student carries the module and its loss runs phase 1 for the first `phase1_steps` steps (the
  module's reconstruction + KL on the teacher features; the detector trains on its detection loss
  meanwhile), then phase 2: the module gets no more gradient (its terms read it through detached
  parameters and its own loss stops), and the two distillation terms start, the generative one
  ramped over `ramp_steps`. AdamW skips parameters without a gradient, so the module stays
  bit-identical from then on. A step counter is a buffer of the student, so it is checkpointed.
- **Masked means.** Padded snippets (mask 0) count in none of the terms.
- **Relative reconstruction errors**, as in recognition: the masked MSE divided by the variance of
  the teacher's features over the valid snippets (1 - R^2), so the weights mean the same whatever
  the feature scale of the teacher's stream.
- The module and adapter are part of the registered student (a few thousand parameters); inference
  runs the detector alone, so they cost nothing there.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field
from torch.func import functional_call

from vidistill.trainers.detection.methods import DetectionMethod, StudentSpec, TeacherBatch, register_detection_method
from vidistill.trainers.detection.models import create_detector, detection_loss
from vidistill.trainers.methods.generative import GenerativeModule, GenerativeWeights, kl_to_attention_prior


class GenerativeDetectionOptions(GenerativeWeights):
    phase1_steps: int = Field(50, ge=1, description="steps fitting the module to the teacher before distilling")
    ramp_steps: int = Field(50, ge=0, description="steps over which the generative weight ramps up after phase 1")


def build(spec: StudentSpec, options: GenerativeDetectionOptions) -> nn.Module:
    detector = create_detector(spec.in_channels, spec.num_classes, **spec.detector)
    channels = spec.teacher_channels[0]
    detector.generative = GenerativeModule(channels, options.reduction)
    detector.generative_adapter = nn.Conv1d(spec.detector["dim"], channels, 1)
    detector.register_buffer("generative_steps", torch.zeros((), dtype=torch.long))
    # The registry's loss(output, targets, teachers, options) does not get the student, and this
    # loss needs its module: the forward output carries it under STUDENT_KEY (decoding ignores it).
    detector.register_forward_hook(_expose_student)
    return detector


STUDENT_KEY = "generative_student"


def _expose_student(module: nn.Module, args, output: dict) -> dict:
    return {**output, STUDENT_KEY: module}


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid snippets: a, b (B, C, T, ...), mask (B, T)."""
    weights = mask.to(a.dtype).reshape(mask.shape[0], 1, mask.shape[1], *([1] * (a.dim() - 3)))
    return ((a - b) ** 2 * weights).sum() / (weights.sum() * a.shape[1]).clamp(min=1)


def _relative_masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked MSE / the masked variance of `target` (detached): 1 - R^2 over the valid snippets."""
    target_detached = target.detach()
    weights = mask.to(target.dtype).reshape(mask.shape[0], 1, mask.shape[1], *([1] * (target.dim() - 3)))
    count = (weights.sum() * target.shape[1]).clamp(min=1)
    mean = (target_detached * weights).sum() / count
    return _masked_mse(prediction, target, mask) / _masked_mse(target_detached, mean, mask).clamp(min=1e-8)


def loss(output: dict, targets: list, teachers: list[TeacherBatch], options: GenerativeDetectionOptions) -> dict:
    teacher, student = teachers[0], output[STUDENT_KEY]
    features = teacher.features.float()[..., None, None] * teacher.mask[:, None, :, None, None]  # (B, C, T, 1, 1)
    module = student.generative
    terms = {"detection": detection_loss(output, targets)[0]}
    step = int(student.generative_steps)
    if student.training:
        student.generative_steps += 1
    if step < options.phase1_steps:  # phase 1: the module learns the teacher's features
        reconstruction, mu, log_var, attention = module(features)
        terms["reconstruction"] = _relative_masked_mse(reconstruction, features, teacher.mask)
        terms["kl"] = options.kl_weight * kl_to_attention_prior(mu, log_var, attention)
        return terms
    frozen = {name: p.detach() for name, p in module.named_parameters()}  # phase 2: read, never moved
    with torch.no_grad():
        teacher_attention = functional_call(module.attention, {k[len("attention."):]: v for k, v in frozen.items()
                                                                if k.startswith("attention.")}, (features,))
    student_features = student.generative_adapter(output["embedding"].float().transpose(1, 2))[..., None, None]
    decoded, _, _, student_attention = functional_call(module, frozen, (student_features,), {"sample": False})
    ramp = 1.0 if options.ramp_steps == 0 else min(1.0, (step - options.phase1_steps + 1) / options.ramp_steps)
    terms["generative"] = (ramp * options.generative_weight * teacher.weight
                           * _relative_masked_mse(decoded, features, teacher.mask))
    terms["attention"] = options.attention_weight * teacher.weight * ((student_attention - teacher_attention) ** 2).mean()
    return terms


GENERATIVE = register_detection_method(DetectionMethod(
    "generative", "generative (CVAE) feature distillation: the RGB detector's embedding, decoded by a frozen "
                  "attention + CVAE module fitted to the teacher's snippet features, reconstructs them",
    build, loss, GenerativeDetectionOptions, min_teachers=1))
