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


def test_the_network_is_the_one_the_method_plug_in_declares(monkeypatch):
    # build_model asks the registry, not the method's name: a plug-in declaring student="attention"
    # gets the two-branch student, one declaring nothing the one-branch RGB network.
    from vidistill.trainers import methods
    from vidistill.trainers.methods import Method, get_method, register_method

    get_method("attention")  # the built-in methods imported before the registry is copied
    monkeypatch.setattr(methods._registry, "entries", dict(methods._registry.entries))  # the test's methods go with it
    base = get_method("attention")
    register_method(Method(name="motion_twin", summary="attention's loss under another name (a test plug-in)",
                           signals=("maps",), loss=base.loss, student="attention"))
    register_method(Method(name="rgb_twin", summary="the same loss on one RGB branch (a test plug-in)",
                           signals=("maps",), loss=base.loss))
    two = build_model(load_config(overrides=[*REQUIRED, "distill.objective=motion_twin"]), num_classes=3)
    one = build_model(load_config(overrides=[*REQUIRED, "distill.objective=rgb_twin"]), num_classes=3)
    assert set(two.head.branches) == {"motion", "appearance"}
    assert len(one.head.branches) == 1 and one.in_channels == 3
