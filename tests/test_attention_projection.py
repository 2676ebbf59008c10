"""One 1x1x1 convolution for all attention maps (issue 18): the student's motion and appearance
w_a are the two output channels of `head.proj`. Models saved before it (two convolutions,
`branches.NAME.generator.proj`) still load, as state dicts and as pickled modules (what the
registry keeps), and compute what they computed then.

tests/data/two_conv_attention_fed2864.pt was written by the code at fed2864 (before the
change): a student and a teacher at width 1/32 with non-trivial BN statistics, their state
dicts, the pickled modules, one input each and its logits and log-maps.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vidistill.trainers.models.i3d import I3D

OLD = Path(__file__).parent / "data" / "two_conv_attention_fed2864.pt"
HEADS = {"student": (3, ("motion", "appearance")), "teacher": (2, ("motion",))}


def _old():
    return torch.load(OLD, weights_only=False)


def _assert_same_forward(model, saved):
    model.eval()
    with torch.no_grad():
        out = model(saved["input"])
    torch.testing.assert_close(out.logits, saved["logits"], rtol=1e-5, atol=1e-5)
    assert set(out.attention) == set(saved["maps"])
    for name, log_probs in saved["maps"].items():
        torch.testing.assert_close(out.attention[name].log_probs, log_probs, rtol=1e-5, atol=1e-5)


def test_a_two_convolution_state_dict_loads_into_the_shared_projection_and_computes_the_same():
    for role, saved in _old().items():
        channels, heads = HEADS[role]
        state = saved["state_dict"]
        assert "head.branches.motion.generator.proj.weight" in state and "head.proj.weight" not in state
        model = I3D(num_classes=4, in_channels=channels, width=1 / 32, attention="prob-atten", attention_heads=heads)
        model.load_state_dict(state)  # strict: every old key mapped, none left over
        assert model.head.proj.weight.shape[0] == len(heads)
        assert not any(".generator.proj" in key for key in model.state_dict())
        # Channel i is branch i's old w_a.
        for i, name in enumerate(heads):
            torch.testing.assert_close(model.head.proj.weight[i:i + 1],
                                       state[f"head.branches.{name}.generator.proj.weight"])
        _assert_same_forward(model, saved)


def test_a_model_pickled_with_two_convolutions_unpickles_with_one_and_computes_the_same():
    for role, saved in _old().items():
        model = saved["module"]  # unpickled by today's classes
        assert isinstance(model.head.proj, torch.nn.Conv3d)
        assert model.head.proj.out_channels == len(HEADS[role][1])
        assert not any(".generator.proj" in key for key in model.state_dict())
        _assert_same_forward(model, saved)
        # It trains: the merged projection is a parameter the optimiser sees.
        assert any(p is model.head.proj.weight for p in model.parameters())


def test_the_student_head_runs_one_convolution_for_both_maps():
    model = I3D(num_classes=4, in_channels=3, width=1 / 32, attention="prob-atten",
                attention_heads=("motion", "appearance")).eval()
    calls = []
    for module in model.head.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 32, 32))
    assert len(calls) == 1 and set(out.attention) == {"motion", "appearance"}
    # Saved and loaded again in today's format, nothing changes.
    again = I3D(num_classes=4, in_channels=3, width=1 / 32, attention="prob-atten",
                attention_heads=("motion", "appearance")).eval()
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again(torch.ones(1, 3, 8, 32, 32)).logits, model(torch.ones(1, 3, 8, 32, 32)).logits)
