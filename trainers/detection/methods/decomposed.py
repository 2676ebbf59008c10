"""Decomposed cross-modal distillation for RGB temporal action detection (Lee et al., CVPR 2023).

    --set method=decomposed --set 'teachers=[{features: FLOW, detector: "models:/D-detector-flow/1"}]'

The student reads RGB snippet features (B, C, T) and builds (abstract: "separately learn RGB and
motion representations, which are in turn combined"):

  motion branch      1D temporal projection (Conv1d k3, ReLU, Conv1d k3) of width W, trained to
                     mimic the frozen flow teacher (feature-mimic loss) and by its detection loss;
  appearance branch  a second projection of the same form and width, trained by its detection loss
                     only (the asymmetric objectives: motion is transferred into one branch while
                     the other keeps the RGB information intact);
  shared head        ONE detector (models.Detector: projection, local-attention encoder, pyramid,
                     neck, classification + regression head) applied to both branches, each with its
                     own detection loss, so both branches speak the same language and neither
                     collapses into the other;
  local attentive    for each time step t and direction (appearance <- motion, motion <- appearance):
  fusion             w_tj = sigma((W_q f_target_t) . (W_k f_ref_j) / sqrt(W)) for j in a window around t,
                     f'_t = f_target_t + sum_j w_tj f_ref_j / |window|; both directions concatenated
                     (2W) into a joint head (a Detector of its own), trained by a detection loss.

Inference is RGB only: both projections, the fusion and the joint head (the branch heads are
training signals and are skipped in eval mode). Loss (the method's terms, each logged):
    mimic_weight * teacher.weight * mimic(motion, teacher)
  + motion_weight * L_det(shared_head(motion)) + appearance_weight * L_det(head_a(appearance))
  + joint_weight * L_det(joint_head(fusion(appearance, motion)))

Choices the abstract leaves open, and why:
- Mimic target: the frozen flow teacher detector's embedding (its first 1D-conv projection of the
  flow features, `Detector.embed`), the layer that corresponds to where a branch enters the
  student's shared head; it is the flow representation a detector found useful for localisation.
  Without a teacher detector the target is the teacher stream's snippet features themselves.
  W is the target's width, so no regressor stands between branch and teacher.
- Mimic loss: L2 (mean squared error over channels and valid time steps) by default. Detection
  needs per-step evidence of *how much* motion there is: the teacher's embedding is a ReLU output
  whose magnitude is high where something moves and near zero in background, and cosine would
  discard exactly that magnitude. `mimic=cosine` (1 - cos, computed as half the squared distance
  of the unit vectors so that two zero vectors count as equal) is offered for features whose
  scale is arbitrary. The teacher side is detached (it is computed under no_grad anyway).
- The teacher is detached and frozen; it is never updated nor re-registered.
- Gate: one sigmoid per (t, j) pair, not a softmax over the window: the abstract's aim is to keep
  *local* discriminability, and independent gates can switch off every neighbour (a softmax must
  spend a total weight of 1 on the window); the aggregate is averaged over the window's valid
  positions so its scale does not grow with the window; the residual (target + aggregate) keeps
  each branch's own features when the gates close. The dot product is scaled by 1/sqrt(W) as in
  scaled dot-product attention, so the gates do not saturate at initialisation.
- Window: 5 snippets by default (+-2 snippets = +-0.8 s at stride 4, 10 fps), shorter than the
  synthetic actions, so the fusion stays local; `fusion_window` is tunable.
- Ablations: `fusion=concat` (the two branches concatenated into the joint head, no gates:
  "without the fusion"), `shared_head=false` (each branch its own detector head).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vidistill.trainers.detection.methods import (DetectionMethod, StudentSpec, TeacherBatch,
                                                  register_detection_method)
from vidistill.trainers.detection.models import create_detector, detection_loss
from vidistill.trainers.schema import ConfigError, Schema


def mimic_target(teacher: TeacherBatch) -> torch.Tensor:
    """(B, T, D): the frozen teacher detector's embedding, or the teacher stream's features."""
    target = teacher.embedding if teacher.embedding is not None else teacher.features.transpose(1, 2)
    return target.detach()


def target_width(spec: StudentSpec) -> int:
    if not spec.teacher_channels:
        raise ValueError("a feature-mimic method needs one teacher stream (teachers=[{features: ...}])")
    return spec.teacher_dims[0] or spec.teacher_channels[0]


def mimic_loss(student: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean over valid time steps of the per-step distance of (B, T, D) features; 0 where they are equal."""
    if kind == "l2":
        per_step = ((student - target) ** 2).mean(-1)
    else:  # 1 - cos(s, t) = |s/|s| - t/|t||^2 / 2 for non-zero vectors; two zero vectors give 0
        per_step = 0.5 * ((F.normalize(student, dim=-1) - F.normalize(target, dim=-1)) ** 2).sum(-1)
    return per_step[mask].mean() if mask.any() else per_step.sum() * 0


def projection(in_channels: int, width: int) -> nn.Sequential:
    """A branch: two 1D temporal convolutions (k=3); the last is linear so it can reach any target."""
    return nn.Sequential(nn.Conv1d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, width, 3, padding=1))


class LocalAttentiveFusion(nn.Module):
    """Both directions of the gated local aggregation (module docstring); (B, T, W) x 2 -> (B, T, 2W)."""

    def __init__(self, width: int, window: int):
        super().__init__()
        self.window = window
        self.query = nn.ModuleList([nn.Linear(width, width), nn.Linear(width, width)])  # per direction
        self.key = nn.ModuleList([nn.Linear(width, width), nn.Linear(width, width)])

    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, window, D): the window centred on each step, zero-padded."""
        pad = self.window // 2
        return F.pad(x, (0, 0, pad, pad)).unfold(1, self.window, 1).transpose(2, 3)

    def gate(self, target: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, direction: int):
        """(B, T, window) sigmoid gates in (0, 1), 0 at padded / outside positions."""
        q = self.query[direction](target)
        k = self.neighbours(self.key[direction](reference))
        valid = self.neighbours(mask[..., None].float())[..., 0] * mask[..., None]
        return torch.sigmoid(torch.einsum("btd,btwd->btw", q, k) / math.sqrt(q.shape[-1])) * valid, valid

    def attend(self, target, reference, mask, direction: int):
        w, valid = self.gate(target, reference, mask, direction)
        aggregate = torch.einsum("btw,btwd->btd", w, self.neighbours(reference)) / valid.sum(-1, keepdim=True).clamp(min=1)
        return target + aggregate, w

    def forward(self, appearance: torch.Tensor, motion: torch.Tensor, mask: torch.Tensor):
        a, gate_a = self.attend(appearance, motion, mask, 0)  # appearance queries motion
        m, gate_m = self.attend(motion, appearance, mask, 1)  # motion queries appearance
        return torch.cat([a, m], dim=-1), (gate_a, gate_m)


class DecomposedStudent(nn.Module):
    def __init__(self, in_channels: int, width: int, num_classes: int, detector: dict, fusion: str = "attentive",
                 window: int = 5, shared_head: bool = True):
        super().__init__()
        self.motion = projection(in_channels, width)
        self.appearance = projection(in_channels, width)
        self.motion_head = create_detector(width, num_classes, **detector)
        # The shared head is the same module (same parameter objects), not a copy.
        self.appearance_head = self.motion_head if shared_head else create_detector(width, num_classes, **detector)
        self.fusion = LocalAttentiveFusion(width, window) if fusion == "attentive" else None
        self.joint_head = create_detector(2 * width, num_classes, **detector)

    @property
    def kind(self) -> str:
        return self.joint_head.kind

    @property
    def levels(self) -> int:
        return self.joint_head.levels

    @property
    def length_multiple(self) -> int:
        return self.joint_head.length_multiple

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict:
        m = self.motion(x).transpose(1, 2) * mask[..., None]  # (B, T, W)
        a = self.appearance(x).transpose(1, 2) * mask[..., None]
        if self.fusion is not None:
            fused, gates = self.fusion(a, m, mask)
        else:
            fused, gates = torch.cat([a, m], dim=-1), None
        out = {**self.joint_head(fused.transpose(1, 2), mask), "motion": m, "appearance": a, "gates": gates}
        if self.training:  # the branch heads are training signals only: inference is the joint head
            out["motion_output"] = self.motion_head(m.transpose(1, 2), mask)
            out["appearance_output"] = self.appearance_head(a.transpose(1, 2), mask)
        return out


class DecomposedOptions(Schema):
    """`--set method_options.KEY=VALUE` of method decomposed."""

    mimic: Literal["l2", "cosine"] = Field("l2", description="feature-mimic loss of the motion branch")
    mimic_weight: float = Field(1.0, ge=0, description="weight of the feature-mimic loss")
    motion_weight: float = Field(1.0, ge=0, description="weight of the motion branch's detection loss")
    appearance_weight: float = Field(1.0, ge=0, description="weight of the appearance branch's detection loss")
    joint_weight: float = Field(1.0, ge=0, description="weight of the joint (fused) head's detection loss")
    fusion: Literal["attentive", "concat"] = Field("attentive", description=
        "attentive: local attentive fusion; concat: the branches concatenated (ablation 'without fusion')")
    fusion_window: int = Field(5, ge=1, description="snippets each step's gates look at (odd)")
    shared_head: bool = Field(True, description="one detection head for both branches (false: ablation)")

    def check(self) -> None:
        if self.fusion_window % 2 == 0:
            raise ConfigError("fusion_window", f"must be odd (centred on the step), got {self.fusion_window}")


def build(spec: StudentSpec, options: DecomposedOptions) -> DecomposedStudent:
    return DecomposedStudent(spec.in_channels, target_width(spec), spec.num_classes, spec.detector,
                             options.fusion, options.fusion_window, options.shared_head)


def loss(output: dict, targets: list, teachers: list[TeacherBatch], options: DecomposedOptions) -> dict:
    teacher = teachers[0]
    return {
        "mimic": options.mimic_weight * teacher.weight * mimic_loss(output["motion"], mimic_target(teacher),
                                                                    teacher.mask, options.mimic),
        "motion": options.motion_weight * detection_loss(output["motion_output"], targets)[0],
        "appearance": options.appearance_weight * detection_loss(output["appearance_output"], targets)[0],
        "joint": options.joint_weight * detection_loss(output, targets)[0],
    }


DECOMPOSED = register_detection_method(DetectionMethod(
    "decomposed", "decomposed cross-modal distillation (Lee et al., CVPR 2023): motion + appearance branches, "
    "shared head, local attentive fusion; RGB-only inference", build, loss, DecomposedOptions, min_teachers=1))
