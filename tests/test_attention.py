"""Attention generation (Eq. 1-2) and attention-guided recognition (Eq. 4-5), checked with numbers."""
import pytest
import torch

from vidistill.trainers.models import create_model
from vidistill.trainers.models.attention import (
    ProbabilisticAttention,
    SoftAttention,
    attention_pool,
    create_head,
    pool_attention_to_grid,
    spatial_log_softmax,
)


def slice_sums(maps):
    return maps.flatten(2).sum(-1)


@pytest.mark.parametrize("generator", [SoftAttention(), ProbabilisticAttention(temperature=0.5)])
@pytest.mark.parametrize("training", [True, False])
def test_every_time_slice_of_a_map_sums_to_one(generator, training):
    generator.train(training)
    amap = generator(torch.randn(3, 4, 7, 9) * 3)  # w_a * phi of one branch
    assert amap.log_probs.shape == (3, 4, 7, 9)
    torch.testing.assert_close(slice_sums(amap.probs), torch.ones(3, 4))
    torch.testing.assert_close(slice_sums(amap.weights), torch.ones(3, 4))


def _heads(attention="soft-atten", names=("motion", "appearance")):
    return create_head(attention, names, phi_channels=4, num_features=8, num_classes=3, dropout=0.0,
                       gumbel_temperature=0.5)


def test_the_linear_map_has_no_bias():
    # Sec. 3.2: without a bias a uniform map needs w_a = 0.
    assert _heads().proj.bias is None


def test_soft_attention_is_the_softmax_of_the_linear_map():
    heads = _heads()
    phi = torch.randn(2, 4, 3, 5, 5)
    out = heads(phi, torch.randn(2, 8, 2, 3, 3))
    for i, name in enumerate(("motion", "appearance")):  # branch i's w_a is output channel i
        logits = torch.einsum("bcthw,c->bthw", phi, heads.proj.weight[i].flatten())
        expected = logits.flatten(2).softmax(-1).reshape(logits.shape)
        torch.testing.assert_close(out.attention[name].probs, expected)


def test_gumbel_samples_average_to_the_softmax_map():
    torch.manual_seed(0)
    gen = ProbabilisticAttention(temperature=0.05).train()
    logits = torch.randn(1, 2, 3, 4).expand(100_000, -1, -1, -1)
    amap = gen(logits)
    # Samples differ from one another (it is sampling) ...
    assert (amap.weights[0] - amap.weights[1]).abs().max() > 0.1
    # ... and their mean is p(A), to Monte-Carlo precision.
    torch.testing.assert_close(amap.weights.mean(0), amap.probs[0], atol=6e-3, rtol=0)


def test_probabilistic_attention_plugs_in_the_expectation_at_test_time():
    gen = ProbabilisticAttention().eval()
    amap = gen(torch.randn(2, 2, 3, 3))
    torch.testing.assert_close(amap.weights, amap.probs)


@pytest.mark.parametrize("src,dst", [((6, 14, 14), (3, 7, 7)), ((3, 7, 7), (2, 4, 4)), ((2, 4, 4), (1, 2, 2))])
def test_pooling_to_the_block5_grid_keeps_each_slice_a_distribution(src, dst):
    weights = spatial_log_softmax(torch.randn(2, *src) * 3).exp()
    pooled = pool_attention_to_grid(weights, dst)
    assert pooled.shape == (2, *dst)
    assert (pooled >= 0).all()
    torch.testing.assert_close(slice_sums(pooled), torch.ones(2, dst[0]))


def test_pooling_moves_mass_with_the_features():
    # All mass of slice 0 in cell (1, 1) and of slice 1 in cell (2, 3) of a 4 x 4 grid:
    # on the 2 x 2 block-5 grid they land in cells (0, 0) and (1, 1), averaged over time.
    weights = torch.zeros(1, 2, 4, 4)
    weights[0, 0, 1, 1] = 1
    weights[0, 1, 2, 3] = 1
    pooled = pool_attention_to_grid(weights, (1, 2, 2))
    torch.testing.assert_close(pooled, torch.tensor([[[[0.5, 0.0], [0.0, 0.5]]]]))


def test_attention_pooling_with_a_uniform_map_is_average_pooling():
    features = torch.randn(2, 5, 3, 4, 4)
    uniform = torch.full((2, 3, 4, 4), 1 / 16)
    torch.testing.assert_close(attention_pool(features, uniform), features.mean(dim=(2, 3, 4)))


def test_attention_pooling_with_a_one_hot_map_selects_those_cells():
    features = torch.randn(1, 5, 2, 3, 3)
    one_hot = torch.zeros(1, 2, 3, 3)
    one_hot[0, 0, 2, 1] = 1
    one_hot[0, 1, 0, 0] = 1
    expected = (features[0, :, 0, 2, 1] + features[0, :, 1, 0, 0]) / 2
    torch.testing.assert_close(attention_pool(features, one_hot)[0], expected)


def test_residual_connection_adds_average_pooled_features():
    torch.manual_seed(0)
    atten = create_model("i3d_tiny", num_classes=4, attention="soft-atten").eval()
    res = create_model("i3d_tiny", num_classes=4, attention="soft-res").eval()
    res.load_state_dict(atten.state_dict())
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        phi, features = atten.forward_features(x)
        branch_a, branch_r = atten.head.branches["attention"], res.head.branches["attention"]
        logits_a, _ = branch_a(atten.head.proj(phi)[:, 0], features)
        logits_r, _ = branch_r(res.head.proj(phi)[:, 0], features)
        # Eq. 5 - Eq. 4 = W_r^T mean(phi): the classifier applied to the average-pooled features, no bias.
        extra = features.mean(dim=(2, 3, 4)) @ branch_a.classifier.weight.T
    torch.testing.assert_close(logits_r - logits_a, extra, rtol=1e-4, atol=1e-5)


def test_student_logits_are_the_sum_of_its_branches():
    student = create_model("i3d_tiny", num_classes=4, attention="prob-atten", attention_heads=("motion", "appearance"))
    student.eval()
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        out = student(x)
        phi, features = student.forward_features(x)
        w_phi = student.head.proj(phi)  # channel i: branch i's w_a * phi
        per_branch = [b(w_phi[:, i], features)[0] for i, b in enumerate(student.head.branches.values())]
    torch.testing.assert_close(out.logits, per_branch[0] + per_branch[1])  # Eq. 7, equal weights


def test_eq7_as_the_paper_writes_it_sums_the_branches_softmax_outputs():
    # Issue 13, defect 7: branch_fusion="probs" is Eq. 7's sum of F_R outputs (each a softmax,
    # Eq. 4), normalised; the default "logits" stays the product of experts above.
    student = create_model("i3d_tiny", num_classes=4, attention="prob-atten", attention_heads=("motion", "appearance"),
                           branch_fusion="probs").eval()
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        out = student(x)
        phi, features = student.forward_features(x)
        w_phi = student.head.proj(phi)  # channel i: branch i's w_a * phi
        per_branch = [b(w_phi[:, i], features)[0] for i, b in enumerate(student.head.branches.values())]
    expected = (per_branch[0].softmax(-1) + per_branch[1].softmax(-1)) / 2
    torch.testing.assert_close(out.logits.softmax(-1), expected)
    torch.testing.assert_close(out.logits.exp(), expected)  # already log-probabilities
    assert not torch.allclose((per_branch[0] + per_branch[1]).softmax(-1), expected)
    with pytest.raises(ValueError, match="branch fusion must be one of"):
        create_model("i3d_tiny", num_classes=4, attention="prob-atten", attention_heads=("a", "b"), branch_fusion="max")


def test_the_gumbel_temperature_anneals_geometrically_to_its_final_value_and_reaches_the_modules():
    from vidistill.trainers.config import ConfigError, gumbel_temperature_at, load_config
    from vidistill.trainers.models import create_student
    from vidistill.trainers.models.attention import ProbabilisticAttention, set_gumbel_temperature

    base = ["data.prepared=/x", "data.root=/y", "role=rgb"]
    model = load_config(overrides=[*base, "model.gumbel_temperature_start=5"]).model
    assert [round(gumbel_temperature_at(model, e, 3), 4) for e in range(3)] == [5.0, round(5 * 0.1 ** 0.5, 4), 0.5]
    constant = load_config(overrides=base).model
    assert {gumbel_temperature_at(constant, e, 10) for e in range(10)} == {0.5}
    with pytest.raises(ConfigError, match="gumbel_temperature_start"):
        load_config(overrides=[*base, "model.gumbel_temperature_start=0"])
    student = create_student("i3d_tiny", num_classes=4)
    assert set_gumbel_temperature(student, 2.0) >= 1
    assert {m.temperature for m in student.modules() if isinstance(m, ProbabilisticAttention)} == {2.0}
