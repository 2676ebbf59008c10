"""Late fusion of several models' class scores (two-stream I3D; Prob-Distill + flow, Tables 2 and 3)."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def late_fusion(logits: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Weighted average of each model's softmax scores; returns (N, classes) probabilities.

    Averaging probabilities rather than logits keeps one model's logit scale from
    dominating the other's (Carreira & Zisserman average the two streams' scores).
    `weights` default to equal and are normalised to sum to 1.
    """
    if not logits:
        raise ValueError("late fusion needs at least one model's scores")
    shapes = {tuple(x.shape) for x in logits}
    if len(shapes) != 1:
        raise ValueError(f"scores to fuse must have one shape, got {sorted(shapes)}")
    weights = [1.0] * len(logits) if weights is None else list(weights)
    if len(weights) != len(logits) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per model with a positive sum, got {weights}")
    total = sum(weights)
    return sum((w / total) * x.float().softmax(dim=-1) for w, x in zip(weights, logits))
