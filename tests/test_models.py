"""I3D backbone, registry and Kinetics checkpoint loading."""
import pytest
import torch

from reference_i3d import ReferenceI3D
from vidistill.trainers.models import (
    InvalidAttentionError,
    PretrainedMismatchError,
    UnknownModelError,
    create_model,
    create_student,
    create_teacher,
    list_models,
)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def randomise_batchnorm(model):
    """Give BatchNorm running statistics that differ from their defaults, so loading them is checked."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def test_registry_lists_full_and_reduced_width_variants():
    assert {"i3d", "i3d_small", "i3d_tiny"} <= set(list_models())
    with pytest.raises(UnknownModelError, match="unknown model 'resnet'; available: i3d"):
        create_model("resnet", num_classes=10)


def test_plain_i3d_at_400_classes_has_the_reference_parameter_count():
    ours = create_model("i3d", num_classes=400)
    assert n_params(ours) == n_params(ReferenceI3D(400)) == 12_697_264
    flow = create_model("i3d", num_classes=400, in_channels=2)
    assert n_params(flow) == n_params(ReferenceI3D(400, in_channels=2))


def test_forward_features_returns_mixed_4f_then_mixed_5c_on_the_paper_grid():
    # 24 x 224 x 224 clips give phi on a 6 x 14 x 14 grid and block 5 on 3 x 7 x 7 (Sec. 3.6).
    model = create_model("i3d", num_classes=101).to("meta")
    phi, features = model.forward_features(torch.empty(1, 3, 24, 224, 224, device="meta"))
    assert tuple(phi.shape) == (1, 832, 6, 14, 14)
    assert tuple(features.shape) == (1, 1024, 3, 7, 7)
    # Full-resolution test clips (Sec. 3.6: 320 x 256) on the same model.
    phi, features = model.forward_features(torch.empty(1, 3, 24, 256, 320, device="meta"))
    assert tuple(phi.shape[2:]) == (6, 16, 20) and tuple(features.shape[2:]) == (3, 8, 10)


def test_a_map_from_mixed_5c_lies_on_the_grid_of_the_features_it_weights():
    # map_block="Mixed_5c" (issue 13): the map comes from block 5 itself, one distribution per slice
    # on its 2 x 3 x 3 grid (16 x 80 x 80 clips), and the features are the default model's.
    torch.manual_seed(0)
    default = create_teacher("i3d_tiny", num_classes=4).eval()
    torch.manual_seed(0)
    on_block5 = create_teacher("i3d_tiny", num_classes=4, map_block="Mixed_5c").eval()
    clip = torch.randn(2, 2, 16, 80, 80)
    with torch.no_grad():
        out = on_block5(clip)
        (phi, features), (_, default_features) = on_block5.forward_features(clip), default.forward_features(clip)
    probs = out.attention["motion"].probs
    assert tuple(probs.shape) == (2, 2, 3, 3) == (2, *features.shape[2:])
    torch.testing.assert_close(probs.sum((-2, -1)), torch.ones(2, 2))
    assert phi is features and on_block5.phi_channels == on_block5.num_features == 128
    torch.testing.assert_close(features, default_features)  # the same backbone, only the map's source moves
    with pytest.raises(ValueError, match="map_block must be one of Mixed_4f, Mixed_5c, got 'Mixed_3c'"):
        create_teacher("i3d_tiny", num_classes=4, map_block="Mixed_3c")


def test_reduced_width_variants_keep_the_grid_and_shrink_the_channels():
    small = create_model("i3d_small", num_classes=10)
    tiny = create_model("i3d_tiny", num_classes=10)
    assert (small.phi_channels, small.num_features) == (208, 256)
    assert (tiny.phi_channels, tiny.num_features) == (104, 128)
    assert n_params(tiny) < n_params(small) < n_params(create_model("i3d", num_classes=10)) / 10


@pytest.mark.parametrize("in_channels", [3, 2])
def test_pytorch_i3d_checkpoint_loads_and_gives_identical_block5_features(tmp_path, in_channels):
    torch.manual_seed(0)
    reference = randomise_batchnorm(ReferenceI3D(400, in_channels=in_channels)).eval()
    path = tmp_path / ("rgb_imagenet.pt" if in_channels == 3 else "flow_imagenet.pt")
    torch.save(reference.state_dict(), path)

    model = create_model("i3d", num_classes=101, in_channels=in_channels, attention="prob-atten", pretrained=path)
    model.eval()
    x = torch.randn(2, in_channels, 9, 64, 80)  # odd sizes exercise the SAME padding
    with torch.no_grad():
        _, ours = model.forward_features(x)
        theirs = reference.extract_features(x)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_classifier_is_loaded_when_it_fits_and_dropped_otherwise(tmp_path):
    reference = ReferenceI3D(400)
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(reference.state_dict(), path)
    kept = create_model("i3d", num_classes=400)
    assert kept.load_pretrained(path).classifier == "loaded"
    torch.testing.assert_close(kept.head.classifier.weight, reference.logits.conv3d.weight.flatten(1))
    torch.testing.assert_close(kept.head.classifier.bias, reference.logits.conv3d.bias)

    report = create_model("i3d", num_classes=101).load_pretrained(path)
    assert report.classifier == "dropped: checkpoint has 400 classes, model has 101"


def test_a_checkpoint_that_does_not_fit_lists_missing_and_unexpected_keys(tmp_path):
    state = ReferenceI3D(400).state_dict()
    del state["Mixed_5c.b0.conv3d.weight"]
    state["Mixed_6a.b0.conv3d.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(PretrainedMismatchError) as err:
        create_model("i3d", num_classes=101, pretrained=path)
    message = str(err.value)
    assert "missing keys (1):\n  Mixed_5c.b0.conv3d.weight" in message
    assert "unexpected keys (1):\n  Mixed_6a.b0.conv3d.weight" in message

    # A reduced-width model cannot take full-width weights: every shape is listed as a mismatch.
    torch.save(ReferenceI3D(400).state_dict(), path)
    with pytest.raises(PretrainedMismatchError, match=r"shape mismatches \(\d+\):\n  Conv3d_1a_7x7.bn.bias"):
        create_model("i3d_tiny", num_classes=101, pretrained=path)


def test_missing_checkpoint_file_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="rgb_imagenet.pt"):
        create_model("i3d", num_classes=10, pretrained=tmp_path / "nope.pt")


def test_teacher_and_student_roles():
    teacher = create_teacher("i3d_tiny", num_classes=5)
    student = create_student("i3d_tiny", num_classes=5)
    assert teacher.in_channels == 2 and student.in_channels == 3
    assert list(teacher.head.branches) == ["motion"]
    assert list(student.head.branches) == ["motion", "appearance"]
    out = student(torch.randn(2, 3, 8, 64, 64))
    assert out.logits.shape == (2, 5) and set(out.attention) == {"motion", "appearance"}
    # Dropout 0.7 before every classifier (Sec. 3.6).
    assert all(b.dropout.p == 0.7 for b in student.head.branches.values())


def test_prob_with_residual_is_refused_with_the_reason():
    with pytest.raises(InvalidAttentionError, match="invalid: a residual connection breaks the probabilistic"):
        create_model("i3d_tiny", num_classes=5, attention="prob-res")
    with pytest.raises(InvalidAttentionError, match="unknown attention 'hard'; choose one of: none, soft-atten"):
        create_model("i3d_tiny", num_classes=5, attention="hard")
