"""Precise BN and the kept weights (issue 13, defect 3), on a real reduced-width I3D."""
import torch

from vidistill.trainers.kept_weights import BestOnValidation, kept_model_state
from vidistill.trainers.models import create_model
from vidistill.trainers.precise_bn import batchnorm_layers, recompute_batchnorm


def clips(n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [{"rgb": torch.randn(2, 3, 8, 32, 32, generator=generator) * 0.5 + 0.3} for _ in range(n)]


def test_bn_statistics_become_the_average_over_the_clips_and_nothing_else_changes():
    torch.manual_seed(0)
    model = create_model("i3d_tiny", num_classes=3, attention="prob-atten", dropout=0.5).train()
    first = batchnorm_layers(model)[0]
    for bn in batchnorm_layers(model):  # statistics of some other inputs, as training leaves them
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(9.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    hook = model.Conv3d_1a_7x7.conv3d.register_forward_hook(lambda m, i, out: seen.append(out.detach()))
    assert recompute_batchnorm(model, clips(), "rgb", "cpu") == 6
    hook.remove()
    assert model.training and first.momentum == 0.1  # mode and momentum given back
    # Cumulative average of the per-batch means and (unbiased) variances.
    means = torch.stack([o.mean(dim=(0, 2, 3, 4)) for o in seen]).mean(0)
    variances = torch.stack([o.transpose(0, 1).flatten(1).var(dim=1) for o in seen]).mean(0)
    torch.testing.assert_close(first.running_mean, means, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, variances, rtol=1e-4, atol=1e-5)
    for name, value in model.state_dict().items():
        if "running_" in name or "num_batches_tracked" in name:
            continue
        assert torch.equal(value, before[name]), name  # not a weight moved
    # Whatever the statistics were before, the same clips give the same ones.
    again = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    recompute_batchnorm(model, clips(), "rgb", "cpu")
    for name, value in again.items():
        torch.testing.assert_close(model.state_dict()[name], value)


def test_eval_outputs_on_full_frames_follow_the_recomputed_statistics():
    torch.manual_seed(0)
    model = create_model("i3d_tiny", num_classes=3).eval()
    x = clips(1, seed=1)[0]["rgb"]
    stale = model(x).logits
    recompute_batchnorm(model, clips(4, seed=2), "rgb", "cpu")
    assert not model.training
    assert not torch.allclose(model(x).logits, stale)


def test_the_best_validation_epoch_is_kept_and_said():
    model = torch.nn.Linear(2, 2)
    best = BestOnValidation()
    history = [(0.50, 1.2), (0.75, 0.9), (0.75, 1.0), (0.50, 0.4)]
    kept = None
    for epoch, (accuracy, loss) in enumerate(history):
        with torch.no_grad():
            model.weight.fill_(epoch)
        if best.update(epoch, {"val_accuracy": accuracy, "val_loss": loss}, model.state_dict()):
            kept = epoch
    assert kept == 1 and best.metrics() == {"best_epoch": 1, "best_val_accuracy": 0.75}
    checkpoint = {"model": model.state_dict(), "epoch": 3, **best.state()}
    weights, said = kept_model_state(checkpoint, "best")
    assert torch.equal(weights["weight"], torch.ones(2, 2)) and said == "best on validation: epoch 2"
    weights, said = kept_model_state(checkpoint, "last")
    assert torch.equal(weights["weight"], torch.full((2, 2), 3.0)) and said == "last: epoch 4"
    resumed = BestOnValidation(checkpoint)  # a resumed run keeps comparing with the same best
    assert not resumed.update(4, {"val_accuracy": 0.75, "val_loss": 0.95}, model.state_dict())
