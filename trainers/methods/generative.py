"""Generative (CVAE) feature distillation: "Generative Model-based Feature Knowledge Distillation
for Action Recognition" (AAAI 2024; seeds/generative-feature-kd-abstract.txt).

Two phases, as the paper organises it:

1. *Feature representation*: a generative-model-based attention module is fitted to the frozen
   teacher's features: an attention A (a gate over channels and time: a small conv stack ending in
   a sigmoid) and a conditional VAE that encodes [F, A] into (mu, log sigma^2) and decodes [z, A]
   back to F; its KL is centred on the attention (prior N(A, I)); loss = reconstruction + KL.
2. *Generative-based feature distillation*: the student's features go through the frozen module.
   Generative distillation: the decoded student features reconstruct the teacher's features (MSE).
   Attention distillation: MSE between the student's attention and the teacher's. Both are added
   to the task loss, the generative term ramped up linearly over the first `ramp_epochs` epochs.

Both settings use it: cross-modal (a flow teacher, as Prob-Distill) and compression (an RGB
teacher, e.g. full-width i3d, teaching i3d_small / i3d_tiny; train.teacher_input feeds it RGB).

Choices the abstract (and the incomplete public code) leave open, with the reason for each:

- **Sequential phases, not alternating per epoch.** Phase 1 runs to the end (`phase1_epochs` passes
  over the training clips) before the student's first epoch; then the module is frozen for good.
  The teacher is frozen, so the distribution the module models never changes: alternating (as the
  released code does) only re-fits a module to the same data while phase 2 chases a moving
  target, and spends a teacher pass per clip every epoch. Sequential also lets phase 2 prove the
  module stays bit-identical (tests/test_generative_method.py). Measured against alternating (one
  phase-1 epoch before each student epoch; benchmarks/bench_generative_distill.py, 5 seeds, README
  issue-17 section): the alternating module enters the student's first epoch decoding nothing
  (1 - R^2 0.7-1.0), and top-1 moved by -0.006 in compression (p = 0.94) and +0.094 cross-modally
  (p = 0.06): not beyond the noise, so sequential stays.
- **Which features: block 5 (Mixed_5c), the `features` signal.** The abstract says block 4/5; block
  5 is what the teacher signal carries and what the classifier pools, and it is what feature KD
  (the baseline) regresses, so the two compare on the same tensor.
- **Attention: (B, C, T), from spatially averaged features** through Conv1d(C, C/4, 3) - ReLU -
  Conv1d(C/4, C, 3) - sigmoid over time: "a gate over channels and time"; no spatial axis, so the
  prior N(A, I) is broadcast over H x W.
- **Latent: C channels per (t, h, w) cell**, so that its prior mean can be the attention (a latent
  of another size could not be centred on A). Encoder and decoder are 1x1x1 conv stacks
  (2C -> C/2 -> 2C and 2C -> C/2 -> C): per-cell, so the decoder cannot copy spatial structure
  from elsewhere, and without batch norm, whose running statistics would change a "frozen" module.
- **Reconstruction errors are relative: MSE / Var(F_t)** (`relative_mse`; the variance of the
  teacher features' elements in the batch, detached), i.e. 1 - R^2: 1 is no better than predicting
  the mean feature, whatever the teacher's width or feature scale. Measured reason: with a plain
  MSE, phase 1 ended at 94-180 on untrained teachers' block-5 features (benchmarks/
  bench_generative_distill.py, first reduced run), so a generative weight of 1 put a term 100x CE's
  size into the student's loss and the weight's meaning changed with the teacher. Normalised, the
  term starts near 1 (a student whose decoded features carry nothing of the teacher's) and
  `generative_weight` = 1 weighs it like CE at chance (ln 4 = 1.4 for 4 classes). Phase 1 uses the
  same normalisation, so `kl_weight` trades KL against a unit-free reconstruction error. The
  attention MSE needs none: A lies in (0, 1). The KL is a mean over elements, weighted by
  `kl_weight` (default 0.1, below).
- **Phase 1 samples z = mu + sigma * eps (reparameterisation); phase 2 decodes the posterior mean**:
  the student's target should not carry sampling noise.
- **Phase 1 optimiser: Adam, lr `phase1_lr`** (1e-3), independent of the student's SGD; the module is
  small and trained from scratch.
- **Phase 1 length and KL weight: `phase1_epochs` 10, `kl_weight` 0.1**, chosen by what phase 1
  achieves on the training clips (not by test accuracy): with 2 epochs and KL weight 1 the frozen
  module decoded the flow teacher's own block-5 features at 1 - R^2 = 0.92-1.06 (3 seeds, 28 Adam
  steps; README, issue-17 section), i.e. it had learnt nothing, so the generative term could not
  fall (0.98 -> 0.97 over the student's training) and the student lost 0.18 top-1 to the student
  alone. With 10 epochs and KL 0.1: 1 - R^2 = 0.31-0.34, the generative term falls (0.97 -> 0.86-0.91)
  and the attention term moves. The detection method keeps KL weight 1 (not measured there).
- **Widths differ in compression**: a trainable 1x1x1 conv adapter (student width -> teacher width,
  trained with the student in phase 2, then discarded) maps the student's features into the
  module's input space; with equal widths the features enter unchanged. Only the (T, H, W) grid
  must match (Method.adapts_feature_width).
- **Task loss**: CE plus Eq. 3's prior for a probabilistic student map (losses.recognition_loss), as
  the other methods add their terms to it; `generative_weight` and `attention_weight` (defaults 1)
  are the dual distillation weights, both searchable, and 0 gives the ablations.
- **Ramp**: the generative weight times min(1, (epoch + 1) / ramp_epochs) (linear; 0 epochs: none).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from vidistill.trainers.losses import LossTerms, recognition_loss
from vidistill.trainers.methods import AuxiliarySetup, Method, MethodContext, register_method
from vidistill.trainers.schema import Schema


class GenerativeWeights(Schema):
    """The options the recognition and detection (trainers/detection/methods/generative.py) methods share."""

    generative_weight: float = Field(1.0, ge=0, description="weight of generative distillation (0: ablation)")
    attention_weight: float = Field(1.0, ge=0, description="weight of attention distillation (0: ablation)")
    kl_weight: float = Field(1.0, ge=0, description="phase 1: weight of KL[q(z|F,A) || N(A, I)]")
    reduction: int = Field(4, ge=1, description="hidden width of the attention and CVAE stacks: C / reduction")


class GenerativeOptions(GenerativeWeights):
    # Defaults from phase 1's own training-set measurement (module docstring, "Phase 1 length and KL weight").
    kl_weight: float = Field(0.1, ge=0, description="phase 1: weight of KL[q(z|F,A) || N(A, I)]")
    ramp_epochs: int = Field(3, ge=0, description="epochs over which the generative weight ramps up linearly")
    phase1_epochs: int = Field(10, ge=1, description="phase 1: passes over the training clips fitting the module")
    phase1_lr: float = Field(1e-3, gt=0, description="phase 1: Adam learning rate")


def _cells(attention: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, C, T) attention broadcast to the (B, C, T, H, W) grid of `like`."""
    return attention[..., None, None].expand_as(like)


class FeatureAttention(nn.Module):
    """A in (0, 1)^(C x T): a gate over channels and time from the spatially pooled features."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.net = nn.Sequential(nn.Conv1d(channels, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv1d(hidden, channels, 3, padding=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(features.mean(dim=(3, 4))))


def relative_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE(prediction, target) / Var(target): 1 - R^2 over the batch's elements (target detached in the variance).

    The population variance (not n - 1), so predicting the mean gives exactly 1, as the masked
    detection version does."""
    return F.mse_loss(prediction, target) / target.detach().var(unbiased=False).clamp(min=1e-8)


def kl_to_attention_prior(mu: torch.Tensor, log_var: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """KL[N(mu, diag sigma^2) || N(A, I)], A broadcast over H x W; mean over elements.

    Per element: 0.5 * (sigma^2 + (mu - A)^2 - 1 - log sigma^2), which is 0 exactly when mu = A, sigma = 1.
    """
    prior_mean = _cells(attention, mu)
    return 0.5 * (log_var.exp() + (mu - prior_mean) ** 2 - 1 - log_var).mean()


class GenerativeModule(nn.Module):
    """The generative-model-based attention module of phase 1: attention + conditional VAE."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.channels = channels
        self.attention = FeatureAttention(channels, reduction)
        self.encoder = nn.Sequential(nn.Conv3d(2 * channels, hidden, 1), nn.ReLU(), nn.Conv3d(hidden, 2 * channels, 1))
        self.decoder = nn.Sequential(nn.Conv3d(2 * channels, hidden, 1), nn.ReLU(), nn.Conv3d(hidden, channels, 1))

    def encode(self, features: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.encoder(torch.cat([features, _cells(attention, features)], dim=1)).chunk(2, dim=1)
        return mu, log_var

    def decode(self, z: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, _cells(attention, z)], dim=1))

    def forward(self, features: torch.Tensor, sample: bool = True):
        """(reconstruction, mu, log_var, attention); z sampled when `sample`, else the posterior mean."""
        attention = self.attention(features)
        mu, log_var = self.encode(features, attention)
        z = mu + (0.5 * log_var).exp() * torch.randn_like(mu) if sample else mu
        return self.decode(z, attention), mu, log_var, attention

    def representation_loss(self, features: torch.Tensor, kl_weight: float = 1.0) -> LossTerms:
        """Phase 1: MSE(decode(z, A), F) / Var(F) + kl_weight * KL[q(z | F, A) || N(A, I)]."""
        reconstruction, mu, log_var, attention = self(features)
        mse = relative_mse(reconstruction, features)
        kl = kl_to_attention_prior(mu, log_var, attention)
        return LossTerms(mse + kl_weight * kl, {"reconstruction_mse": mse, "kl": kl})


class GenerativeDistiller(nn.Module):
    """What the method owns during a run: the (frozen after phase 1) module and the student's adapter."""

    def __init__(self, teacher_channels: int, student_channels: int, reduction: int = 4):
        super().__init__()
        self.generative = GenerativeModule(teacher_channels, reduction)
        self.adapter = (nn.Identity() if student_channels == teacher_channels
                        else nn.Conv3d(student_channels, teacher_channels, 1))

    def freeze(self) -> "GenerativeDistiller":
        self.generative.requires_grad_(False).eval()
        return self


def fit_representation(module: GenerativeModule, batches, epochs: int, lr: float, kl_weight: float = 1.0,
                       on_epoch=None) -> list[dict[str, float]]:
    """Phase 1: fit `module` to the features `batches()` yields (a fresh iterable per epoch).

    Returns each epoch's mean terms. With several data-parallel workers the gradients are averaged.
    """
    from vidistill.trainers.train import _average_over_workers

    module.train().requires_grad_(True)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        sums, count = {}, 0
        for features in batches(epoch):
            terms = module.representation_loss(features.float(), kl_weight)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            _average_over_workers(list(module.parameters()))
            optimizer.step()
            for name, value in terms.as_floats().items():
                sums[name] = sums.get(name, 0.0) + value * len(features)
            count += len(features)
        history.append({k: v / max(count, 1) for k, v in sums.items()})
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history


def build(setup: AuxiliarySetup) -> GenerativeDistiller:
    """Methods.auxiliary: the module, fitted by phase 1 to the teacher's features, then frozen
    (or restored frozen from the checkpoint of a resumed run)."""
    options: GenerativeOptions = setup.options
    torch.manual_seed(setup.config.seed)  # the same module on every rank
    distiller = GenerativeDistiller(setup.teacher.num_features, setup.student.num_features,
                                    options.reduction).to(setup.device)
    if setup.state is not None:
        distiller.load_state_dict(setup.state)
        return distiller.freeze()

    def teacher_features(epoch):
        setup.loader.set_epoch(epoch)
        for batch in setup.loader:
            with torch.no_grad():  # not around the yield: the consumer's steps need autograd
                features = setup.teacher(setup.teacher_input(batch)).features
            yield features

    def report(epoch, terms):
        print(f"[vidistill] generative phase 1 epoch {epoch + 1}/{options.phase1_epochs}: "
              f"reconstruction {terms['reconstruction_mse']:.4f} kl {terms['kl']:.4f}", flush=True)

    fit_representation(distiller.generative, teacher_features, options.phase1_epochs, options.phase1_lr,
                       options.kl_weight, on_epoch=report)
    return distiller.freeze()


def ramp(epoch: int, ramp_epochs: int) -> float:
    return 1.0 if ramp_epochs <= 0 else min(1.0, (epoch + 1) / ramp_epochs)


def generative_distillation_loss(output, labels, teacher, distiller: GenerativeDistiller, options: GenerativeOptions,
                                 epoch: int, lambda2: float | None = None) -> LossTerms:
    """Phase 2: task loss + ramp * w_g * MSE(decode(mu_s, A_s), F_t) / Var(F_t) + w_a * MSE(A_s, A_t)."""
    if teacher.features is None:
        raise ValueError("generative distillation needs the teacher's block-5 features")
    task = recognition_loss(output, labels, lambda2)
    teacher_features = teacher.features.float()
    module = distiller.generative
    with torch.no_grad():
        teacher_attention = module.attention(teacher_features)
    student_features = distiller.adapter(output.features.float())
    decoded, _, _, student_attention = module(student_features, sample=False)
    generative = relative_mse(decoded, teacher_features)
    attention = F.mse_loss(student_attention, teacher_attention)
    weight = ramp(epoch, options.ramp_epochs) * options.generative_weight
    total = task.total + weight * generative + options.attention_weight * attention
    return LossTerms(total, {**task.terms, "generative_mse": generative, "attention_mse": attention})


def loss(output, labels, teacher, config, options: GenerativeOptions, context: MethodContext) -> LossTerms:
    return generative_distillation_loss(output, labels, teacher, context.module, options, context.epoch,
                                        config.distill.lambda2)


GENERATIVE = register_method(Method(
    name="generative",
    summary="Generative (CVAE) feature KD: a frozen attention + CVAE module fitted to the teacher's block-5 "
            "features; the student's decoded features and attention match the teacher's (AAAI 2024).",
    signals=("features",),
    loss=loss,
    options=GenerativeOptions,
    auxiliary=build,
    adapts_feature_width=True,
))
