"""A distillation run builds the network its objective trains (issue 13, defect 5)."""
import pytest

from vidistill.trainers.config import load_config
from vidistill.trainers.train import build_model

REQUIRED = ["data.prepared=/data/x", "data.root=/data/src", "distill.teacher=models:/t/1", "model.name=i3d_tiny"]


def test_attention_distillation_builds_the_two_branch_student():
    model = build_model(load_config(overrides=REQUIRED), num_classes=3)
    assert set(model.head.branches) == {"motion", "appearance"}


@pytest.mark.parametrize("objective", ["feature", "logit"])
def test_feature_and_logit_distillation_build_one_branch_rgb_networks(objective):
    # The default model.attention is prob-atten: without the fix this was the two-branch student
    # whose motion branch no loss term supervises.
    model = build_model(load_config(overrides=[*REQUIRED, f"distill.objective={objective}"]), num_classes=3)
    assert model.in_channels == 3
    assert list(model.head.branches) != ["motion", "appearance"] and len(model.head.branches) == 1
    plain = build_model(load_config(overrides=[*REQUIRED, f"distill.objective={objective}", "model.attention=none"]),
                        num_classes=3)
    assert not hasattr(plain.head, "branches")
