"""Training objectives: recognition, attention distillation (Eq. 8) and the baselines it is compared with.

Every objective returns `LossTerms`: the total to back-propagate and each term
unweighted, so runs can log and compare them one by one.

- `recognition_loss`: CE plus the uniform prior of Eq. 3 on probabilistic maps;
  trains the flow teacher and the RGB baselines of Table 1.
- `attention_distillation_loss`: Eq. 8, the student's loss (Prob-Distill).
- `feature_distillation_loss`: block-5 feature regression, as FeatMatch and MARS do.
- `logit_distillation_loss`: Hinton et al. (2015), softened logits with a temperature.

The teacher reaches a loss as `TeacherSignals` (its motion map, block-5 features,
logits), so a trainer may compute them live or read them from a cache.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidistill.trainers.models import ModelOutput

MOTION, APPEARANCE = "motion", "appearance"


@dataclass
class LossTerms:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]  # unweighted, e.g. {"ce": ..., "motion_kl": ..., "prior_kl": ...}

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), **{k: float(v.detach()) for k, v in self.terms.items()}}


@dataclass
class TeacherSignals:
    """What a frozen teacher contributes to a student's loss, for one batch."""

    motion_log_probs: torch.Tensor | None = None  # (batch, T, H, W), log of the teacher's expected map
    features: torch.Tensor | None = None  # block-5 features
    logits: torch.Tensor | None = None

    @classmethod
    def from_output(cls, output: ModelOutput) -> "TeacherSignals":
        if len(output.attention) > 1:
            raise ValueError(f"a teacher has one attention map, this one has {sorted(output.attention)}")
        maps = list(output.attention.values())
        return cls(maps[0].log_probs if maps else None, output.features, output.logits)


def sliced_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """sum_t KL[p(t) || q(t)] between (batch, T, H, W) maps, averaged over the batch.

    Each time slice is a distribution over H x W. Cells where p is 0 contribute 0.
    """
    log_p, log_q = log_p.float(), log_q.float()
    p = log_p.exp()
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return kl.flatten(2).sum(-1).sum(1).mean()


def uniform_prior_kl(log_probs: torch.Tensor) -> torch.Tensor:
    """Eq. 3: sum_t KL[A(t) || U], U uniform over H x W; averaged over the batch."""
    b, t, h, w = log_probs.shape
    log_u = torch.full_like(log_probs, -math.log(h * w), dtype=torch.float32)
    return sliced_kl(log_probs, log_u)


def attention_distillation_kl(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """Eq. 6: sum_t KL[A^M(t) || teacher A^M(t)]."""
    if student_log_probs.shape != teacher_log_probs.shape:
        raise ValueError(
            f"student motion map {tuple(student_log_probs.shape)} and teacher map "
            f"{tuple(teacher_log_probs.shape)} differ: both networks must see clips of the same size"
        )
    return sliced_kl(student_log_probs, teacher_log_probs)


def default_lambda2(grid: torch.Size | tuple[int, ...]) -> float:
    """1 / (T_phi * H_phi * W_phi) of the attention grid (Sec. 3.5)."""
    t, h, w = grid[-3:]
    return 1.0 / (t * h * w)


def _prior_term(output: ModelOutput, lambda2: float | None, exclude: tuple[str, ...] = ()):
    """(lambda2 * prior, prior): Eq. 3 summed over the probabilistic maps not supervised otherwise.

    lambda2 defaults to 1 / (T * H * W) of the attention grid; soft maps have no prior.
    """
    maps = [m for name, m in output.attention.items() if m.probabilistic and name not in exclude]
    if not maps:
        zero = output.logits.new_zeros((), dtype=torch.float32)
        return zero, zero
    prior = sum(uniform_prior_kl(m.log_probs) for m in maps)
    weight = default_lambda2(maps[0].log_probs.shape) if lambda2 is None else lambda2
    return weight * prior, prior


def recognition_loss(output: ModelOutput, labels: torch.Tensor, lambda2: float | None = None) -> LossTerms:
    """CE + lambda2 * sum_t KL[A(t) || U] for the probabilistic maps (Sec. 3.2)."""
    ce = F.cross_entropy(output.logits.float(), labels)
    weighted_prior, prior = _prior_term(output, lambda2)
    total = ce + weighted_prior
    return LossTerms(total, {"ce": ce, "prior_kl": prior})


def attention_distillation_loss(
    output: ModelOutput,
    labels: torch.Tensor,
    teacher: TeacherSignals,
    lambda1: float = 1.0,
    lambda2: float | None = None,
) -> LossTerms:
    """Eq. 8: CE + lambda1 * sum_t KL[A^M(t) || teacher A^M(t)] + lambda2 * sum_t KL[A^A(t) || U].

    lambda2 defaults to 1/(T*H*W) of the attention grid. The prior applies to the
    probabilistic maps other than the motion map, which the teacher regularises
    instead (for the student of Sec. 3.5: the appearance map).
    """
    if MOTION not in output.attention:
        raise ValueError(f"attention distillation needs a student with a {MOTION!r} map, got {sorted(output.attention)}")
    if teacher.motion_log_probs is None:
        raise ValueError("attention distillation needs the teacher's motion map")
    ce = F.cross_entropy(output.logits.float(), labels)
    motion_kl = attention_distillation_kl(output.attention[MOTION].log_probs, teacher.motion_log_probs)
    weighted_prior, prior = _prior_term(output, lambda2, exclude=(MOTION,))
    total = ce + lambda1 * motion_kl + weighted_prior
    return LossTerms(total, {"ce": ce, "motion_kl": motion_kl, "prior_kl": prior})


def feature_distillation_loss(
    output: ModelOutput,
    labels: torch.Tensor,
    teacher: TeacherSignals,
    weight: float = 50.0,
    lambda2: float | None = None,
) -> LossTerms:
    """CE + weight * MSE(student block-5 features, teacher block-5 features).

    The FeatMatch / MARS baseline: the student's features are regressed onto the
    flow teacher's (MARS weighs the regression by 50).
    """
    if teacher.features is None:
        raise ValueError("feature distillation needs the teacher's block-5 features")
    if output.features.shape != teacher.features.shape:
        raise ValueError(
            f"student features {tuple(output.features.shape)} and teacher features "
            f"{tuple(teacher.features.shape)} differ: use the same backbone width and clip size"
        )
    ce = F.cross_entropy(output.logits.float(), labels)
    mse = F.mse_loss(output.features.float(), teacher.features.float())
    weighted_prior, prior = _prior_term(output, lambda2)
    total = ce + weight * mse + weighted_prior
    return LossTerms(total, {"ce": ce, "feature_mse": mse, "prior_kl": prior})


def logit_distillation_loss(
    output: ModelOutput,
    labels: torch.Tensor,
    teacher: TeacherSignals,
    temperature: float = 4.0,
    alpha: float = 0.5,
    lambda2: float | None = None,
) -> LossTerms:
    """(1 - alpha) * CE + alpha * T^2 * KL[softmax(teacher / T) || softmax(student / T)] (Hinton et al. 2015).

    The T^2 factor keeps the soft term's gradients on the scale of the hard term's.
    """
    if teacher.logits is None:
        raise ValueError("logit distillation needs the teacher's logits")
    ce = F.cross_entropy(output.logits.float(), labels)
    soft = F.kl_div(
        F.log_softmax(output.logits.float() / temperature, dim=-1),
        F.log_softmax(teacher.logits.float() / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2
    weighted_prior, prior = _prior_term(output, lambda2)
    total = (1 - alpha) * ce + alpha * soft + weighted_prior
    return LossTerms(total, {"ce": ce, "logit_kl": soft, "prior_kl": prior})

