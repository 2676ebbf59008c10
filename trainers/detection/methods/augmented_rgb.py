"""Augmented-RGB: atomic- and sequence-level cross-modal distillation for dense action detection.

Dai, Das, Bremond, "Learning an Augmented RGB Representation with Cross-Modal Knowledge
Distillation for Action Detection", ICCV 2021 (seeds/augmented-rgb-cross-modal-kd-detection-
abstract.txt). An RGB student detector learns, at training time only, from one or more teacher
modalities (flow by default); at inference it reads RGB snippet features alone.

    L = L_det + w_a L_atomic + w_g L_global + w_b L_boundary          (the abstract's total loss)

over the student's snippet embedding h_s (B, T, D) and each teacher's representation h_k:

- atomic (contrastive, InfoNCE): z_s = P_s^k(h_s), z_k = P_t^k(h_k), both L2-normalised;
  L = -1/N sum_i log exp(z_s,i . z_k,i / tau) / sum_j exp(z_s,i . z_k,j / tau), over the N
  valid snippets of the batch: the same time step of the same video is the positive, every
  other snippet of the batch (other videos and other times of the same video) a negative.
- global contextual relations: R(h)_ij = cos(h_i - mean h, h_j - mean h) over one video's
  snippets; L = mean_ij (R(h_s) - R(h_k))^2, averaged over videos.
- action boundary saliency: s_t = 1 - cos(h_t, h_t+1), the profile of change between
  consecutive snippets, standardised over the video (zero mean, unit std); L = mean_t
  (s_t(h_s) - s_t(h_k))^2, i.e. 2 (1 - Pearson correlation) of the two profiles.

Each term is a weighted mean over teachers, sum_k a_k L_k / sum_k a_k; every term is logged
apart. Two baselines live here as extra terms so that every row trains through the same loop:
plain feature distillation (`feature`: a linear map of h_s regressed onto h_k, MSE) and logit
distillation (`logit`: Bernoulli KL from the frozen teacher detector's frame probabilities).

Choices the abstract leaves open, and why:

- Temporal model: the local-attention encoder of issue 14 (``models.Detector`` with the
  ``dense`` head), not a separate dilated TCN. The baselines (RGB-only, teacher-only,
  two-stream) are the same network on other features, so a difference between rows is the
  distillation, not the architecture; and any registered head/neck can sit on top. The
  student embedding h_s is the neck's finest level, the input of the dense head.
- Teacher representation h_k: the frozen teacher detector's embedding (same place as h_s) when a
  teacher detector is given, else the teacher's raw snippet features. The paper distils from a
  trained teacher network; raw flow features are the fallback that needs no teacher training.
- Projection heads: one pair per teacher (student side and teacher side, each Linear-ReLU-
  Linear as in SimCLR), trained with the student and dropped at inference. Per teacher because
  each modality lives in its own space; the teacher side is trainable (its backbone stays frozen)
  so that the two spaces can meet; InfoNCE's negatives prevent collapse.
- Temperature tau = 0.1 (the common InfoNCE value, SimCLR / CRD range 0.07-0.2); an option.
- The InfoNCE sums over at most `max_contrast` snippets (a random subset when the batch has
  more): the similarity matrix is N x N.
- Relations are computed on per-video centred embeddings: post-ReLU features are all positive,
  so raw cosines sit near 1 and the matrix says little; centring keeps the structure. The
  student side uses h_s itself (relations are dimension-free; no projection needed).
- Boundary profiles are standardised per video because the student's and the teacher's spaces
  have different scales; what must match is *where* the representation changes.
- Multi-teacher weights are normalised (sum_k a_k = 1 inside each term) so that the term
  weights mean the same whatever the number of teachers; a teacher of weight 0 is switched off.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vidistill.trainers.detection.methods import DetectionMethod, register_detection_method
from vidistill.trainers.schema import ConfigError, Schema

NAME = "augmented-rgb"
TERMS = ("atomic", "global", "boundary", "feature", "logit")


class AugmentedRGBOptions(Schema):
    """`--set method_options.atomic=0` etc.; the three terms of the method and two baseline terms."""

    atomic: float = Field(1.0, ge=0, description="weight of the atomic-level InfoNCE")
    global_: float = Field(1.0, ge=0, alias="global", description="weight of the global contextual relations")
    boundary: float = Field(1.0, ge=0, description="weight of the action boundary saliency")
    feature: float = Field(0.0, ge=0, description="baseline: plain feature distillation (MSE) weight")
    logit: float = Field(0.0, ge=0, description="baseline: logit distillation (Bernoulli KL) weight")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature tau")
    projection_dim: int = Field(64, ge=4, description="width of the InfoNCE projection heads")
    max_contrast: int = Field(512, ge=2, description="most snippets in one InfoNCE (random subset above)")

    model_config = {**Schema.model_config, "populate_by_name": True}

    def weights(self) -> dict[str, float]:
        return {"atomic": self.atomic, "global": self.global_, "boundary": self.boundary,
                "feature": self.feature, "logit": self.logit}

    def check(self) -> None:
        if not any(self.weights().values()):
            raise ConfigError("method_options", "every distillation weight is 0; use method=none for a plain detector")


# --- the loss terms (each on (B, T, D) embeddings and a (B, T) mask of real snippets) ---------------

def info_nce(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float = 0.1,
             max_snippets: int | None = None) -> torch.Tensor:
    """Atomic-level InfoNCE over the valid snippets of a batch; inputs already projected."""
    zs = F.normalize(student[mask], dim=-1)
    zt = F.normalize(teacher[mask], dim=-1)
    if max_snippets is not None and len(zs) > max_snippets:
        keep = torch.randperm(len(zs), device=zs.device)[:max_snippets]
        zs, zt = zs[keep], zt[keep]
    logits = zs @ zt.T / temperature
    return F.cross_entropy(logits, torch.arange(len(zs), device=zs.device))


def relation_matrix(h: torch.Tensor) -> torch.Tensor:
    """(T, D) -> (T, T) cosine similarities of the video-centred snippet embeddings."""
    h = F.normalize(h - h.mean(0, keepdim=True), dim=-1)
    return h @ h.T


def global_relation_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    losses = [F.mse_loss(relation_matrix(s[m]), relation_matrix(t[m]))
              for s, t, m in zip(student, teacher, mask) if m.sum() > 1]
    return torch.stack(losses).mean() if losses else student.sum() * 0


def boundary_profile(h: torch.Tensor) -> torch.Tensor:
    """(T, D) -> (T-1,) standardised change between consecutive snippets, 1 - cos(h_t, h_t+1)."""
    change = 1 - F.cosine_similarity(h[1:], h[:-1], dim=-1)
    return (change - change.mean()) / (change.std(unbiased=False) + 1e-6)


def boundary_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    losses = [F.mse_loss(boundary_profile(s[m]), boundary_profile(t[m]))
              for s, t, m in zip(student, teacher, mask) if m.sum() > 2]
    return torch.stack(losses).mean() if losses else student.sum() * 0


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid (snippet, class) of KL(Bern(p_teacher) || Bern(p_student)): 0 when equal."""
    s, t = student_logits[mask], teacher_logits[mask]
    p = torch.sigmoid(t)
    return (F.binary_cross_entropy_with_logits(s, p) - F.binary_cross_entropy_with_logits(t, p))


# --- teachers and the trainable heads of the method ----------------------------------------------

@dataclass
class TeacherView:
    """One teacher for one batch: its representation (B, T, C), weight, and frame logits if it has a detector."""

    representation: torch.Tensor
    weight: float = 1.0
    logits: torch.Tensor | None = None


def _mlp(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, out), nn.ReLU(), nn.Linear(out, out))


class AugmentedRGBHeads(nn.Module):
    """Per teacher: student and teacher InfoNCE projections and the feature-regression map (training only)."""

    def __init__(self, student_dim: int, teacher_dims: list[int], projection_dim: int = 64):
        super().__init__()
        self.student_proj = nn.ModuleList(_mlp(student_dim, projection_dim) for _ in teacher_dims)
        self.teacher_proj = nn.ModuleList(_mlp(d, projection_dim) for d in teacher_dims)
        self.regress = nn.ModuleList(nn.Linear(student_dim, d) for d in teacher_dims)


def teacher_mean(values: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum_k a_k L_k / sum_k a_k (teachers of weight 0 are not even computed by the caller)."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("teacher weights must not all be 0")
    return sum(w * v for w, v in zip(weights, values)) / total


def distillation_terms(embedding: torch.Tensor, frame_logits: torch.Tensor, mask: torch.Tensor,
                       teachers: list[TeacherView], heads: AugmentedRGBHeads,
                       options: AugmentedRGBOptions) -> dict[str, torch.Tensor]:
    """Unweighted terms whose weight is > 0, each a teacher-weighted mean; embedding (B, T, D)."""
    weights = options.weights()
    if weights["logit"] and any(t.logits is None for t in teachers if t.weight):
        raise ValueError("logit distillation needs a teacher detector for every teacher of weight > 0")
    per_term: dict[str, list[torch.Tensor]] = {name: [] for name in TERMS if weights[name]}
    used = []
    for k, teacher in enumerate(teachers):
        if not teacher.weight:
            continue
        used.append(teacher.weight)
        h_t = teacher.representation.detach()  # the teacher is frozen
        if "atomic" in per_term:
            per_term["atomic"].append(info_nce(heads.student_proj[k](embedding), heads.teacher_proj[k](h_t), mask,
                                               options.temperature, options.max_contrast))
        if "global" in per_term:
            per_term["global"].append(global_relation_loss(embedding, h_t, mask))
        if "boundary" in per_term:
            per_term["boundary"].append(boundary_loss(embedding, h_t, mask))
        if "feature" in per_term:
            per_term["feature"].append(F.mse_loss(heads.regress[k](embedding)[mask], h_t[mask]))
        if "logit" in per_term:
            per_term["logit"].append(bernoulli_kl(frame_logits, teacher.logits.detach(), mask))
    return {name: teacher_mean(values, used) for name, values in per_term.items()}


def embed(model, x: torch.Tensor, mask: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """A models.Detector's output and its student embedding (the neck's finest level, (B, T, D))."""
    features, masks = model.encoder(x, mask)
    neck = model.neck(features, masks)
    return model.head(neck, masks), neck[0]


# --- the registered method ---------------------------------------------------------------------

class AugmentedRGBStudent(nn.Module):
    """A models.Detector (the temporal model and its head) plus the training-only heads of the method.

    forward returns the detector's output with "embedding" = the neck's finest level (B, T, D), the
    representation every term reads, and "method_heads" (this module's heads) for the loss. At
    inference only the detector runs, on RGB features; the heads are a few small linear layers
    that are saved with the checkpoint but never called.
    """

    def __init__(self, detector: nn.Module, heads: AugmentedRGBHeads):
        super().__init__()
        self.detector, self.heads = detector, heads

    kind = property(lambda self: self.detector.kind)
    levels = property(lambda self: self.detector.levels)
    length_multiple = property(lambda self: self.detector.length_multiple)
    settings = property(lambda self: self.detector.settings)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict:
        output, embedding = embed(self.detector, x, mask)
        return {**output, "embedding": embedding, "method_heads": self.heads}


def teacher_representation(teacher) -> torch.Tensor:
    """(B, T, D_k): the frozen teacher detector's neck output if it has one, else its raw features."""
    if teacher.detector is None:
        return teacher.features.transpose(1, 2)
    with torch.no_grad():
        return embed(teacher.detector, teacher.features, teacher.mask)[1]


def build(spec, options: AugmentedRGBOptions) -> AugmentedRGBStudent:
    from vidistill.trainers.detection.models import create_detector

    detector = create_detector(spec.in_channels, spec.num_classes, **spec.detector)
    # The neck output has the detector's width `dim`; a teacher without detector is its raw features.
    widths = [dim if dim is not None else channels for dim, channels in zip(spec.teacher_dims, spec.teacher_channels)]
    return AugmentedRGBStudent(detector, AugmentedRGBHeads(spec.detector["dim"], widths, options.projection_dim))


def loss(output: dict, targets: list, teachers: list, options: AugmentedRGBOptions) -> dict[str, torch.Tensor]:
    from vidistill.trainers.detection.models import detection_loss

    if options.logit and "frame_logits" not in output:
        raise ValueError("logit distillation (method_options.logit) needs the dense head (head=dense)")
    mask = output["masks"][0]
    views = [TeacherView(teacher_representation(t), t.weight,
                         t.output.get("frame_logits") if t.output is not None else None) for t in teachers]
    terms = distillation_terms(output["embedding"], output.get("frame_logits"), mask, views,
                               output["method_heads"], options)
    weights = options.weights()
    return {"detection": detection_loss(output, targets)[0],
            **{name: weights[name] * value for name, value in terms.items()}}


AUGMENTED_RGB = register_detection_method(DetectionMethod(
    NAME, "Augmented-RGB (Dai et al., ICCV 2021): atomic InfoNCE + global relations + boundary saliency "
          "from one or more teacher streams; RGB only at inference",
    build, loss, AugmentedRGBOptions, min_teachers=1))
