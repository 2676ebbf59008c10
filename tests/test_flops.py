"""The FLOP count behind the TFLOP/s logged per epoch: convolutions and matrix products."""
from __future__ import annotations

import torch

from vidistill.trainers.flops import forward_flops_per_clip, step_flops_per_clip
from vidistill.trainers.models import create_student


def test_the_count_is_two_flops_per_multiply_add_of_every_convolution_and_linear_layer():
    model = create_student("i3d_tiny", num_classes=4).eval()
    expected = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv3d):
            kernel = module.weight[0].numel()  # in_channels x kt x kh x kw
            expected.append(2 * output.numel() * kernel)
        elif isinstance(module, torch.nn.Linear):
            expected.append(2 * output.numel() * module.in_features)

    handles = [module.register_forward_hook(count) for module in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 3, 8, 64, 64))
    for handle in handles:
        handle.remove()
    forward = forward_flops_per_clip(model, (3, 8, 64, 64))
    # Hooks see every layer; the counter also counts the attention pooling's einsum (Eq. 4).
    assert sum(expected) <= forward <= sum(expected) * 1.01
    # Backward: the gradients of every weight and of every layer's input, each as costly as the
    # forward, except the stem's input gradient (the clip needs none).
    stem = expected[0]
    assert step_flops_per_clip(model, (3, 8, 64, 64)) == 3 * forward - stem
