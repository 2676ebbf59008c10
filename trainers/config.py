"""Typed training configuration, loadable from a YAML or TOML file and overridable by `key=value`.

    config = load_config("distill.yaml", overrides=["optim.lr=0.003", "distill.lambda1=2"])

Defaults are the paper's (Sec. 3.6): global batch 64, SGD with momentum 0.9, learning
rate 0.01 divided by 10 when the validation loss plateaus, weight decay 4e-5, dropout
0.7, 24-frame clips cropped to 224 x 224. A wrong field or value is refused here, with
the field's dotted name, before anything is trained.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from vidistill.trainers.schema import ConfigError, Schema, apply_overrides, dump, load, parse, read_config_file  # noqa: F401

ROLES = ("teacher", "rgb", "distill")


# `register` is a field of TrainConfig (register the model or not) and also a classmethod that
# pydantic's base class inherits from ABCMeta; the field wins, as intended.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class DataConfig(Schema):
    prepared: str = Field("", description="folder written by `vidistill datasets prepare` (rawframes + manifest.json)")
    # The source data set, for its split lists: which prepared videos train, validate, test.
    root: str = ""
    layout: str = Field("generic", description="ucf101 | hmdb51 | egtea | ssv2 | generic")
    split: int = 1
    train_subset: str = "train"
    # Empty by default: UCF101/HMDB51 have no val split and the test set must only be read by
    # `evaluate` (issue 13, defect 2), so a seeded, class-stratified slice of training is held out.
    val_subset: str = Field("", description="the validation set that drives the lr decay, precise-BN checkpoint "
                            "choice and Tune; empty: a seeded, class-stratified slice (val_fraction) of the "
                            "training list; never the test subset")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="share of each class's training videos held out "
                                "for validation when val_subset is empty")
    val_seed: int = Field(0, description="seed of the held-out validation slice")
    test_subset: str = "test"
    name: str = Field("", description="data set name used in registered model names; defaults to the prepared folder's name")
    clip_length: int = 24
    crop_size: int = 224
    test_clips_per_video: int = 5
    # Random horizontal flip of training clips (Sec. 3.6). Turn it off where the label is a
    # direction (Something-Something's "from left to right", the synthetic set's move-left /
    # move-right): a mirrored clip of one such class shows another class under the old label.
    flip: bool = True
    backend: str = Field("auto", description="auto | dali | opencv")
    loader_workers: int = 2


class ModelConfig(Schema):
    name: str = Field("i3d", description="i3d | i3d_small | i3d_tiny")
    attention: str = Field("prob-atten", description="none | soft-atten | soft-res | prob-atten")
    pretrained: str = Field("", description="pytorch-i3d checkpoint (rgb_imagenet.pt / flow_imagenet.pt); empty: random init")
    dropout: float = 0.7
    gumbel_temperature: float = Field(0.5, gt=0, description="temperature of the Gumbel-softmax samples (prob-atten); "
                                      "the final one when gumbel_temperature_start is set")
    # At 0.5 from scratch each clip pools from ~2.4 of 25 cells and the backbone's gradient is
    # noisy (issue 13): a start temperature anneals to gumbel_temperature over the epochs.
    gumbel_temperature_start: float | None = Field(None, gt=0, description="anneal the Gumbel temperature "
                                                   "geometrically from this (first epoch) to gumbel_temperature "
                                                   "(last epoch); empty: constant")
    # Eq. 7 for the two-branch student: "logits" sums the branches' logits (a product of
    # experts, the default so far), "probs" sums their softmax outputs as the paper writes it.
    branch_fusion: Literal["logits", "probs"] = Field(
        "logits", description="Eq. 7 for the two-branch student: logits (sum of logits) | probs (sum of softmax outputs)")
    # Sec. 3.1 generates the map from Mixed_4f and weights Mixed_5c with it; issue 13 found a
    # trained teacher's Mixed_4f map pointing a fixed, class-dependent 3-5 cells off the actor, about
    # the reach of the Mixed_5c features it weights. "Mixed_5c" generates the map from those features.
    map_block: Literal["Mixed_4f", "Mixed_5c"] = Field(
        "Mixed_4f", description="the block the attention map is generated from: Mixed_4f (Sec. 3.1) | Mixed_5c "
        "(the block-5 features the map weights; teacher and student must agree)")


def gumbel_temperature_at(model: ModelConfig, epoch: int, epochs: int) -> float:
    """The schedule: start * (end / start) ** (epoch / (epochs - 1)), 0-based epochs; constant without a start."""
    end, start = model.gumbel_temperature, model.gumbel_temperature_start
    if start is None or epochs < 2:
        return end
    return start * (end / start) ** (epoch / (epochs - 1))


class OptimConfig(Schema):
    lr: float = Field(0.01, gt=0, description="learning rate (Sec. 3.6: 0.01, divided by 10 on plateaus)")
    momentum: float = 0.9
    weight_decay: float = 4e-5
    lr_decay: float = Field(0.1, description="divide by 10 ...")
    plateau_patience: int = Field(2, description="... after this many epochs without a lower validation loss")


class DistillConfig(Schema):
    teacher: str = Field("", description="MLflow model URI: models:/NAME/VERSION or models:/NAME@ALIAS")
    objective: str = Field("attention", description=
        "distillation method, by its name in the methods registry (trainers/methods/): attention (Eq. 8), "
        "feature, logit, ...")
    lambda1: float = 1.0
    lambda2: float | None = Field(None, description="None: 1 / (T * H * W) of the attention grid")
    feature_weight: float = 50.0
    logit_temperature: float = 4.0
    logit_alpha: float = 0.5
    # Attention distillation reads the teacher's exact map of each clip from a bank of
    # teacher_bank_size augmentations (start, crop, flip) per video, computed once, instead of
    # running the teacher at every step (see trainers/teacher_bank.py); false runs it live,
    # with a new augmentation every epoch.
    cache_teacher_maps: bool = True
    teacher_bank_size: int = Field(8, ge=1, description="augmentations (start, crop, flip) per video whose exact "
                                   "teacher maps the bank holds (trainers/teacher_bank.py)")
    map_check_clips: int = Field(8, ge=0, description="training clips on which every run compares the maps it uses "
                                 "with the live teacher's (logged as a KL)")
    # The method's own section, checked by the schema the method declares (methods.Method.options).
    options: dict[str, Any] = Field(default_factory=dict, description="the method's own options, e.g. "
                                    "distill.options.weight=2 (see its module under trainers/methods/)")


class TrainConfig(Schema):
    role: str = Field("distill", description="teacher (flow) | rgb (baseline) | distill (RGB student)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    epochs: int = 30
    batch_size: int = Field(64, description="global: split evenly over the workers")
    num_workers: int = Field(1, description="Ray Train workers (data parallel)")
    use_gpu: bool = False
    seed: int = 0
    # BN statistics recomputed on full-frame clips of this many training videos before each
    # validation (precise BN; 0: off), and the weights registered: "best" on validation or "last".
    precise_bn_clips: int = Field(200, ge=0, description="training videos whose full-frame clips recompute the BN "
                                  "statistics before each validation (precise BN); 0: off")
    keep_weights: Literal["best", "last"] = Field("best", description="the weights registered: best (on validation) "
                                                  "or last epoch's")
    experiment: str = "vidistill"
    register: bool = True

    def check(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ConfigError(name, why)

        if self.role not in ROLES:
            fail("role", f"must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not self.data.prepared:
            fail("data.prepared", "the prepared data set folder is required (see `vidistill datasets prepare`)")
        if not self.data.root:
            fail("data.root", "the source data set folder is required: its split lists say which videos train and test")
        from vidistill.trainers.methods import get_method, list_methods

        if self.distill.objective not in list_methods():
            fail("distill.objective", f"must be one of {', '.join(list_methods())}, not {self.distill.objective!r}")
        method = get_method(self.distill.objective)
        if self.role == "distill" and not self.distill.teacher:
            fail("distill.teacher", "a student needs its teacher's MLflow model URI, e.g. models:/ucf101-teacher-flow/1")
        if self.role == "distill" and method.student == "attention" and self.model.attention == "none":
            fail("model.attention", f"{method.name} distillation needs an attention variant, not 'none'")
        if self.role == "distill":
            method.parse_options(self.distill.options)
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size),
                            ("num_workers", self.num_workers), ("data.clip_length", self.data.clip_length)):
            if value < 1:
                fail(name, f"must be at least 1, got {value}")
        if self.batch_size % self.num_workers:
            fail("batch_size", f"{self.batch_size} does not split evenly over {self.num_workers} workers")
        if self.data.val_subset and self.data.val_subset == self.data.test_subset:
            fail("data.val_subset", f"{self.data.val_subset!r} is the test subset: the schedule and Tune must not "
                                    "read it; leave val_subset empty to hold a slice of training out")
        if not 0 <= self.model.dropout < 1:
            fail("model.dropout", f"must be in [0, 1), got {self.model.dropout}")
        from vidistill.trainers.models import InvalidAttentionError, attention_variant, list_models

        if self.model.name not in list_models():
            fail("model.name", f"unknown model {self.model.name!r}; available: {', '.join(list_models())}")
        try:
            attention_variant(self.model.attention)
        except InvalidAttentionError as exc:
            fail("model.attention", str(exc))

    def validate(self) -> "TrainConfig":
        """Checked as a whole (`parse` does this for configs read from files and dicts)."""
        self.check()
        return self

    @property
    def dataset_name(self) -> str:
        return self.data.name or Path(self.data.prepared).name

    def to_dict(self) -> dict:
        return dump(self)

    def flat(self) -> dict[str, object]:
        """Dotted names to values, e.g. {"optim.lr": 0.01}: MLflow params, Tune search spaces."""
        return dict(_flatten(self.to_dict()))


@dataclass(frozen=True)
class WorkerResources:
    """What the Ray Train workers of a run ask Ray for; their drivers ask for nothing."""

    num_workers: int
    cpus: float
    gpus: float

    def per_worker(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


def worker_resources(config: TrainConfig, *, cpus: float = 1.0, gpus: float | None = None,
                     concurrent: int = 1) -> WorkerResources:
    """The one rule for what training asks Ray for: `num_workers` x (1 CPU, + 1 GPU with use_gpu).

    The queue admits a job by it and `train` / `tune` request exactly it. A search runs
    `concurrent` trainings at once, each worker with `cpus` and `gpus` (below 1: trials share a GPU).
    """
    gpus = (1.0 if config.use_gpu else 0.0) if gpus is None else float(gpus)
    return WorkerResources(concurrent * config.num_workers, float(cpus), gpus)


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def from_dict(data: dict, cls=None) -> "TrainConfig":
    """A config from its JSON form (`to_dict`), checked."""
    return parse(cls or TrainConfig, data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> TrainConfig:
    """File (optional) <- overrides, on top of the defaults; parsed and checked once."""
    return load(TrainConfig, path, overrides, base)
