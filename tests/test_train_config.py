"""Training configuration: the paper's defaults, files, overrides, and refusals that name the field."""
import pytest

from vidistill.trainers.config import ConfigError, TrainConfig, load_config

REQUIRED = ["data.prepared=/data/ucf101-frames", "data.root=/data/ucf101", "distill.teacher=models:/ucf101-teacher-flow/1"]


def test_defaults_are_the_papers():
    config = load_config(overrides=REQUIRED)
    assert (config.batch_size, config.optim.lr, config.optim.momentum, config.optim.weight_decay) == (64, 0.01, 0.9, 4e-5)
    assert config.optim.lr_decay == 0.1 and config.model.dropout == 0.7
    assert (config.data.clip_length, config.data.crop_size) == (24, 224)
    assert (config.distill.objective, config.distill.lambda1, config.distill.lambda2) == ("attention", 1.0, None)
    assert config.dataset_name == "ucf101-frames"
    # Issue 13: validation is a slice of training, never the test set; the kept weights are the best epoch's.
    assert (config.data.val_subset, config.data.val_fraction, config.data.val_seed) == ("", 0.15, 0)
    assert (config.model.branch_fusion, config.keep_weights, config.precise_bn_clips) == ("logits", "best", 200)
    assert (config.distill.teacher_bank_size, config.distill.map_check_clips) == (8, 8)


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "role: teacher\ndata:\n  prepared: /data/x\n  root: /data/src\noptim:\n  lr: 0.003\nepochs: 5\n"),
    (".toml", 'role = "teacher"\nepochs = 5\n[data]\nprepared = "/data/x"\nroot = "/data/src"\n[optim]\nlr = 0.003\n'),
])
def test_files_load_and_overrides_win(tmp_path, suffix, text):
    path = tmp_path / f"teacher{suffix}"
    path.write_text(text)
    config = load_config(path, overrides=["epochs=7", "model.attention=soft-res"])
    assert (config.role, config.optim.lr, config.epochs, config.model.attention) == ("teacher", 0.003, 7, "soft-res")
    assert config.flat()["optim.lr"] == 0.003


@pytest.mark.parametrize("overrides,message", [
    (["optim.lrr=0.1"], "optim.lrr: unknown field; known: lr, lr_decay"),
    (["epochs=many"], "epochs: must be an integer, got 'many'"),
    (["optim.lr=-1"], "optim.lr: must be > 0"),
    (["epochs=0"], "epochs: must be at least 1, got 0"),
    (["model.attention=prob-res"], "model.attention: attention 'prob-res' is invalid"),
    (["model.name=resnet50"], "model.name: unknown model 'resnet50'; available: i3d"),
    (["batch_size=63", "num_workers=2"], "batch_size: 63 does not split evenly over 2 workers"),
    (["distill.objective=contrastive"], "distill.objective: must be one of attention, feature, generative, logit"),
    (["role=distill", "distill.teacher="], "distill.teacher: a student needs its teacher's MLflow model URI"),
    (["lr=0.1"], "lr: unknown field"),
    (["optim.lr"], "expected dotted.name=value"),
    # Issue 13's fields, refused by the schema with their path.
    (["data.val_fraction=1.5"], "data.val_fraction: must be < 1.0, got 1.5"),
    (["data.val_fraction=0"], "data.val_fraction: must be > 0.0, got 0"),
    (["data.val_subset=test"], "data.val_subset: 'test' is the test subset"),
    (["model.branch_fusion=max"], "model.branch_fusion: must be one of 'logits', 'probs', got 'max'"),
    (["distill.teacher_bank_size=0"], "distill.teacher_bank_size: must be >= 1, got 0"),
    (["distill.map_check_clips=-1"], "distill.map_check_clips: must be >= 0, got -1"),
    (["precise_bn_clips=-3"], "precise_bn_clips: must be >= 0, got -3"),
    (["keep_weights=first"], "keep_weights: must be one of 'best', 'last', got 'first'"),
])
def test_bad_values_are_refused_with_the_field_and_the_reason(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=REQUIRED + overrides)
    assert message in str(err.value)


def test_missing_data_and_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="data.prepared: the prepared data set folder is required"):
        TrainConfig(role="teacher").validate()
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3")
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        load_config(broken)


@pytest.mark.parametrize("overrides, flips", [([], True), (["data.flip=false"], False)])
def test_data_flip_reaches_the_training_plan(monkeypatch, overrides, flips):
    # Direction classes (move-left / move-right) need training without the random mirror.
    from vidistill.datasets.loaders import plan_epoch
    from vidistill.datasets.loaders.plan import VideoExtent
    from vidistill.trainers import data as data_module

    seen = []
    monkeypatch.setattr(data_module, "make_clip_loader", lambda videos, config: seen.append(config))
    config = load_config(overrides=["data.prepared=/p", "data.root=/r", "role=rgb", *overrides])
    data_module.clip_loader(None, config.data, modality="rgb", train=True, batch_size=2, seed=0)
    assert seen[0].flip is flips
    specs = plan_epoch([VideoExtent(0, 40, 256, 256)] * 32, seen[0], epoch=0)
    assert any(s.flip for s in specs) is flips
