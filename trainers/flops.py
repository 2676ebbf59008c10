"""FLOPs of one training step, counted once (on the meta device: no memory, no compute), for the
TFLOP/s a training run logs per epoch (issue 18: how close training runs to the chip).

Counted as PyTorch's FlopCounterMode counts: convolutions and matrix products, forward and
backward (2 FLOPs per multiply-add); pooling, batch norm and elementwise work are not counted,
as in the usual model FLOP figures (one full-width I3D clip of 24 x 224 x 224: ~230 GFLOP a step).
"""
from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode


def _count(model: torch.nn.Module, clip_shape: tuple[int, ...], backward: bool) -> int:
    meta = copy.deepcopy(model).to("meta")
    meta.train(backward)
    x = torch.zeros((1, *clip_shape), device="meta")
    with FlopCounterMode(display=False) as counter:
        out = meta(x)
        if backward:
            out.logits.sum().backward()
    return int(counter.get_total_flops())


def step_flops_per_clip(model: torch.nn.Module, clip_shape: tuple[int, ...]) -> int:
    """FLOPs of a forward and backward pass of `model` on one (C, T, H, W) clip."""
    return _count(model, clip_shape, backward=True)


def forward_flops_per_clip(model: torch.nn.Module, clip_shape: tuple[int, ...]) -> int:
    return _count(model, clip_shape, backward=False)
