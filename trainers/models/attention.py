"""Attention generation and attention-guided recognition (Liu et al., BMVC 2020, Sec. 3.2-3.5).

A head turns a backbone's (phi, features) pair into class logits:

- `AveragePoolHead`: plain I3D, global average pooling (no attention).
- `AttentionHeads`: one or more `AttentionBranch`es; each generates a map A from phi
  (Eq. 1 soft, Eq. 2 probabilistic), pools the block-5 features with it (Eq. 4, or
  Eq. 5 with the residual connection) and classifies; the branches' logits are summed,
  or their probabilities averaged as Eq. 7 writes it (`fusion`, see `AttentionHeads`). The teacher and the baselines have one branch, the student two
  ("motion", "appearance").

Maps are (batch, T, H, W) on phi's grid and sum to 1 over H x W in every time slice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AttentionVariant:
    """A row of Table 1: how the map is generated and how it is used."""

    name: str
    probabilistic: bool
    residual: bool


ATTENTION_VARIANTS = {
    "soft-atten": AttentionVariant("soft-atten", probabilistic=False, residual=False),
    "soft-res": AttentionVariant("soft-res", probabilistic=False, residual=True),
    "prob-atten": AttentionVariant("prob-atten", probabilistic=True, residual=False),
}
NO_ATTENTION = "none"


class InvalidAttentionError(ValueError):
    """An attention variant that does not exist or that the method rules out."""


def attention_variant(name: str) -> AttentionVariant | None:
    """Parse a variant name; `none` gives None (plain average pooling)."""
    if name == NO_ATTENTION:
        return None
    if name in ("prob-res", "prob-residual"):
        raise InvalidAttentionError(
            f"attention {name!r} is invalid: a residual connection breaks the probabilistic model of the "
            "map (Liu et al. 2020, Sec. 4.2, who also found it unstable to train); use 'prob-atten' or 'soft-res'"
        )
    if name not in ATTENTION_VARIANTS:
        choices = ", ".join([NO_ATTENTION, *ATTENTION_VARIANTS])
        raise InvalidAttentionError(f"unknown attention {name!r}; choose one of: {choices}")
    return ATTENTION_VARIANTS[name]


@dataclass
class AttentionMap:
    """One branch's attention on phi's grid, each (batch, T, H, W).

    `log_probs` is log p(A), the expected map; losses read it. `weights` is the map the
    recognition pooled with: a Gumbel-softmax sample of p(A) when a probabilistic
    branch trains, p(A) itself otherwise.
    """

    log_probs: torch.Tensor
    weights: torch.Tensor
    probabilistic: bool

    @property
    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (batch, classes), summed over branches (Eq. 7)
    features: torch.Tensor  # block-5 features (batch, C, T', H', W'), for feature distillation
    attention: dict[str, AttentionMap] = field(default_factory=dict)


def spatial_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log softmax over H x W within each time slice of a (batch, T, H, W) tensor."""
    b, t, h, w = logits.shape
    return F.log_softmax(logits.reshape(b, t, h * w), dim=-1).reshape(b, t, h, w)


def gumbel_softmax_sample(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """A relaxed one-hot sample over H x W per time slice (Jang et al. 2017, Maddison et al. 2017).

    As the temperature goes to 0 the samples become one-hot and their mean is p(A).
    """
    b, t, h, w = log_probs.shape
    sample = F.gumbel_softmax(log_probs.reshape(b, t, h * w), tau=temperature, hard=False, dim=-1)
    return sample.reshape(b, t, h, w)


class SoftAttention(nn.Module):
    """Eq. 1: A = softmax(w_a * phi), softmax over H x W in every time slice.

    w_a is a 1x1x1 convolution without bias (Sec. 3.2): without a bias, the only
    way to a uniform map is w_a = 0, which a normal initialisation never reaches.
    `AttentionHeads` holds the w_a of all its branches as one convolution (one output
    channel per branch) and hands each branch its channel, w_a * phi.
    """

    probabilistic = False

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        # float32 under autocast: the maps feed KL terms and a softmax over H*W cells.
        return spatial_log_softmax(logits.float())

    def forward(self, logits: torch.Tensor) -> AttentionMap:
        log_probs = self.log_probs(logits)
        return AttentionMap(log_probs, log_probs.exp(), probabilistic=False)


class ProbabilisticAttention(SoftAttention):
    """Eq. 2: A ~ p(A) = softmax(w_a * phi).

    Training pools with a Gumbel-softmax sample of p(A); evaluation plugs in p(A)
    itself, the expected map (Sec. 3.2, approximate inference).
    """

    probabilistic = True

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"gumbel temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, logits: torch.Tensor) -> AttentionMap:
        log_probs = self.log_probs(logits)
        weights = gumbel_softmax_sample(log_probs, self.temperature) if self.training else log_probs.exp()
        return AttentionMap(log_probs, weights, probabilistic=True)


def set_gumbel_temperature(model: torch.nn.Module, temperature: float) -> int:
    """Set the temperature of every probabilistic attention module of `model`; returns how many."""
    modules = [m for m in model.modules() if isinstance(m, ProbabilisticAttention)]
    for module in modules:
        module.temperature = temperature
    return len(modules)


def pool_attention_to_grid(weights: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Carry a map from phi's grid (Mixed_4f) to the block-5 grid (Mixed_5c) it selects from.

    Block 5 starts with a 2x2x2 max-pool of stride 2 (SAME padding, the extra cell at
    the end of an odd axis), so every block-5 cell covers a 2x2x2 block of phi cells.
    We move the probability mass with the features: a block-5 cell's weight is the sum
    of its block's spatial mass (zero-padded cells hold no mass), averaged over the two
    time slices it merges (an odd last slice is repeated). Each output slice therefore
    still sums to 1, the map stays a distribution (as Eq. 4 needs), and no mass is
    invented or lost; interpolating the map instead would break normalisation, and
    upsampling the features would make block 5 attend on a grid it never computed.
    """
    _, t, h, w = weights.shape
    factors = []
    for src, dst in zip((t, h, w), size):
        f = max(1, round(src / dst))
        if math.ceil(src / f) != dst:
            raise ValueError(f"attention grid {(t, h, w)} does not pool onto feature grid {tuple(size)}")
        factors.append(f)
    ft, fh, fw = factors
    x = F.pad(weights.unsqueeze(1), (0, size[2] * fw - w, 0, size[1] * fh - h))
    if size[0] * ft > t:
        x = torch.cat([x, x[:, :, -1:].expand(-1, -1, size[0] * ft - t, -1, -1)], dim=2)
    return (F.avg_pool3d(x, (ft, fh, fw)) * (fh * fw)).squeeze(1)


def attention_pool(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 4's tilted product A (x) phi, divided by T.

    Each time slice of A sums to 1, so the sum over (t, h, w) weighs the clip with
    total mass T; dividing by T makes it the weighted average pooling the paper
    describes, on the same scale as plain average pooling.
    """
    t = features.shape[2]
    return torch.einsum("bcthw,bthw->bc", features, weights.to(features.dtype)) / t


class AttentionBranch(nn.Module):
    """One F_A (map generation) + F_R (attention-guided recognition) pair."""

    def __init__(self, variant: AttentionVariant, num_features: int, num_classes: int,
                 dropout: float, gumbel_temperature: float):
        super().__init__()
        self.variant = variant
        self.generator = ProbabilisticAttention(gumbel_temperature) if variant.probabilistic else SoftAttention()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, AttentionMap]:
        """`logits`: this branch's w_a * phi, (batch, T, H, W)."""
        amap = self.generator(logits)
        pooled = attention_pool(features, pool_attention_to_grid(amap.weights, features.shape[-3:]))
        if self.variant.residual:
            # Eq. 5: (A + I) (x) phi adds the average-pooled features back in.
            pooled = pooled + features.mean(dim=(2, 3, 4))
        return self.classifier(self.dropout(pooled)), amap


BRANCH_FUSIONS = ("logits", "probs")


class AttentionHeads(nn.Module):
    """Several attention branches over the same features, combined with equal weight (Eq. 7).

    Eq. 7 sums the branches' outputs F_R, each a softmax (Eq. 4). `fusion="probs"` does that:
    the output logits are log of the branches' mean probability, so softmax(logits) is Eq. 7's
    sum, normalised. `fusion="logits"` (the default, as trained so far) sums the branches'
    pre-softmax logits instead, i.e. multiplies their distributions (a product of experts):
    one confident branch then decides, where Eq. 7 lets the other branch's mass count.
    """

    def __init__(self, names: tuple[str, ...], phi_channels: int, fusion: str = "logits", **branch_kwargs):
        super().__init__()
        if not names or len(set(names)) != len(names):
            raise ValueError(f"attention heads need distinct names, got {names!r}")
        if fusion not in BRANCH_FUSIONS:
            raise ValueError(f"branch fusion must be one of {BRANCH_FUSIONS}, not {fusion!r}")
        self.fusion = fusion
        self.branches = nn.ModuleDict({name: AttentionBranch(**branch_kwargs) for name in names})
        # Every branch's w_a (Eq. 1/2) as one 1x1x1 convolution, output channel i for branch i:
        # the student's motion and appearance maps cost one convolution over phi, not two
        # (batch-1 inference is launch-bound, issue 18). Same fan-in, so the same initialisation.
        self.proj = nn.Conv3d(phi_channels, len(names), kernel_size=1, bias=False)
        self.register_load_state_dict_pre_hook(_merge_branch_projections)

    def forward(self, phi: torch.Tensor, features: torch.Tensor) -> ModelOutput:
        logits = self.proj(phi)
        outputs, maps = [], {}
        for i, (name, branch) in enumerate(self.branches.items()):
            branch_logits, maps[name] = branch(logits[:, i], features)
            outputs.append(branch_logits)
        return ModelOutput(fuse_branches(outputs, getattr(self, "fusion", "logits")), features, maps)

    def __setstate__(self, state: dict) -> None:
        """Models pickled before the shared projection (the registry keeps whole modules) held
        one w_a per branch, `branches.NAME.generator.proj`: stack them into `proj`."""
        super().__setstate__(state)
        if "proj" in self._modules:
            return
        old = [branch.generator._modules.pop("proj") for branch in self.branches.values()]
        weight = old[0].weight
        self.proj = nn.Conv3d(weight.shape[1], len(old), kernel_size=1, bias=False,
                              device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.proj.weight.copy_(torch.cat([conv.weight for conv in old]))
        self.proj.weight.requires_grad_(weight.requires_grad)


def _merge_branch_projections(module: AttentionHeads, state_dict, prefix, *args) -> None:
    """State dicts saved before the shared projection: `branches.NAME.generator.proj.weight`
    (one (1, C, 1, 1, 1) w_a per branch) become `proj.weight`, stacked in branch order."""
    keys = [f"{prefix}branches.{name}.generator.proj.weight" for name in module.branches]
    if f"{prefix}proj.weight" not in state_dict and all(key in state_dict for key in keys):
        state_dict[f"{prefix}proj.weight"] = torch.cat([state_dict.pop(key) for key in keys])


def fuse_branches(logits: list[torch.Tensor], fusion: str) -> torch.Tensor:
    """Eq. 7 over the branches' logits: their sum, or log of their mean softmax ("probs")."""
    if len(logits) == 1:
        return logits[0]
    if fusion == "probs":
        stacked = torch.stack([F.log_softmax(x, dim=-1) for x in logits])
        return torch.logsumexp(stacked, dim=0) - math.log(len(logits))
    return torch.stack(logits).sum(0)


class AveragePoolHead(nn.Module):
    """Plain I3D recognition: global average pooling, dropout, linear classifier."""

    def __init__(self, num_features: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, phi: torch.Tensor, features: torch.Tensor) -> ModelOutput:
        return ModelOutput(self.classifier(self.dropout(features.mean(dim=(2, 3, 4)))), features)


def create_head(attention: str, attention_heads: tuple[str, ...] | None, *, phi_channels: int, num_features: int,
                num_classes: int, dropout: float, gumbel_temperature: float,
                branch_fusion: str = "logits") -> nn.Module:
    variant = attention_variant(attention)
    if variant is None:
        if attention_heads:
            raise InvalidAttentionError(f"attention heads {attention_heads!r} need an attention variant, not 'none'")
        return AveragePoolHead(num_features, num_classes, dropout)
    return AttentionHeads(
        tuple(attention_heads or ("attention",)),
        fusion=branch_fusion,
        variant=variant,
        phi_channels=phi_channels,
        num_features=num_features,
        num_classes=num_classes,
        dropout=dropout,
        gumbel_temperature=gumbel_temperature,
    )
