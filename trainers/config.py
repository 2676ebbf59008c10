"""Typed training configuration, loadable from a YAML or TOML file and overridable by `key=value`.

    config = load_config("distill.yaml", overrides=["optim.lr=0.003", "distill.lambda1=2"])

Defaults are the paper's (Sec. 3.6): global batch 64, SGD with momentum 0.9, learning
rate 0.01 divided by 10 when the validation loss plateaus, weight decay 4e-5, dropout
0.7, 24-frame clips cropped to 224 x 224. A wrong field or value is refused here, with
the field's dotted name, before anything is trained.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROLES = ("teacher", "rgb", "distill")
OBJECTIVES = ("attention", "feature", "logit")


class ConfigError(ValueError):
    """A configuration that cannot be trained; the message names the field."""


@dataclass
class DataConfig:
    prepared: str = ""  # folder written by `vidistill datasets prepare` (rawframes + manifest.json)
    # The source data set, for its split lists: which prepared videos train, validate, test.
    root: str = ""
    layout: str = "generic"  # ucf101 | hmdb51 | egtea | ssv2 | generic
    split: int = 1
    train_subset: str = "train"
    # The validation set that drives the lr decay, precise-BN checkpoint choice and Tune. Empty:
    # a seeded, class-stratified slice (val_fraction) held out of the training list, since
    # UCF101/HMDB51 have no val split and the test set must only be read by `evaluate`.
    val_subset: str = ""
    val_fraction: float = 0.15
    val_seed: int = 0
    test_subset: str = "test"
    name: str = ""  # data set name used in registered model names; defaults to the prepared folder's name
    clip_length: int = 24
    crop_size: int = 224
    test_clips_per_video: int = 5
    # Random horizontal flip of training clips (Sec. 3.6). Turn it off where the label is a
    # direction (Something-Something's "from left to right", the synthetic set's move-left /
    # move-right): a mirrored clip of one such class shows another class under the old label.
    flip: bool = True
    backend: str = "auto"  # auto | dali | opencv
    loader_workers: int = 2


@dataclass
class ModelConfig:
    name: str = "i3d"  # i3d | i3d_small | i3d_tiny
    attention: str = "prob-atten"  # none | soft-atten | soft-res | prob-atten
    pretrained: str = ""  # pytorch-i3d checkpoint (rgb_imagenet.pt / flow_imagenet.pt); empty: random init
    dropout: float = 0.7
    gumbel_temperature: float = 0.5
    # Eq. 7 for the two-branch student: "logits" sums the branches' logits (a product of
    # experts, the default so far), "probs" sums their softmax outputs as the paper writes it.
    branch_fusion: str = "logits"


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 4e-5
    lr_decay: float = 0.1  # divide by 10 ...
    plateau_patience: int = 2  # ... after this many epochs without a lower validation loss


@dataclass
class DistillConfig:
    teacher: str = ""  # MLflow model URI: models:/NAME/VERSION or models:/NAME@ALIAS
    objective: str = "attention"  # attention (Eq. 8) | feature | logit
    lambda1: float = 1.0
    lambda2: float | None = None  # None: 1 / (T * H * W) of the attention grid
    feature_weight: float = 50.0
    logit_temperature: float = 4.0
    logit_alpha: float = 0.5
    # Attention distillation reads the teacher's exact map of each clip from a bank of
    # teacher_bank_size augmentations (start, crop, flip) per video, computed once, instead of
    # running the teacher at every step (see trainers/teacher_bank.py); false runs it live,
    # with a new augmentation every epoch.
    cache_teacher_maps: bool = True
    teacher_bank_size: int = 8
    # Training clips on which every run compares the maps it uses with the live teacher's.
    map_check_clips: int = 8


@dataclass
class TrainConfig:
    role: str = "distill"  # teacher (flow) | rgb (baseline) | distill (RGB student)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    epochs: int = 30
    batch_size: int = 64  # global: split evenly over the workers
    num_workers: int = 1  # Ray Train workers (data parallel)
    use_gpu: bool = False
    seed: int = 0
    # BN statistics recomputed on full-frame clips of this many training videos before each
    # validation (precise BN; 0: off), and the weights registered: "best" on validation or "last".
    precise_bn_clips: int = 200
    keep_weights: str = "best"
    experiment: str = "vidistill"
    register: bool = True

    def validate(self) -> "TrainConfig":
        def fail(name: str, why: str) -> None:
            raise ConfigError(f"{name}: {why}")

        if self.role not in ROLES:
            fail("role", f"must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not self.data.prepared:
            fail("data.prepared", "the prepared data set folder is required (see `vidistill datasets prepare`)")
        if not self.data.root:
            fail("data.root", "the source data set folder is required: its split lists say which videos train and test")
        if self.distill.objective not in OBJECTIVES:
            fail("distill.objective", f"must be one of {', '.join(OBJECTIVES)}, not {self.distill.objective!r}")
        if self.role == "distill" and not self.distill.teacher:
            fail("distill.teacher", "a student needs its teacher's MLflow model URI, e.g. models:/ucf101-teacher-flow/1")
        if self.role == "distill" and self.distill.objective == "attention" and self.model.attention == "none":
            fail("model.attention", "attention distillation needs an attention variant, not 'none'")
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size),
                            ("num_workers", self.num_workers), ("data.clip_length", self.data.clip_length)):
            if value < 1:
                fail(name, f"must be at least 1, got {value}")
        if self.batch_size % self.num_workers:
            fail("batch_size", f"{self.batch_size} does not split evenly over {self.num_workers} workers")
        if not self.data.val_subset and not 0 < self.data.val_fraction < 1:
            fail("data.val_fraction", f"must be in (0, 1) to hold a validation slice out of training, "
                                      f"got {self.data.val_fraction}")
        if self.data.val_subset and self.data.val_subset == self.data.test_subset:
            fail("data.val_subset", f"{self.data.val_subset!r} is the test subset: the schedule and Tune must not "
                                    "read it; leave val_subset empty to hold a slice of training out")
        if self.distill.teacher_bank_size < 1:
            fail("distill.teacher_bank_size", f"must be at least 1, got {self.distill.teacher_bank_size}")
        if self.keep_weights not in ("best", "last"):
            fail("keep_weights", f"must be best (on validation) or last, not {self.keep_weights!r}")
        if self.precise_bn_clips < 0:
            fail("precise_bn_clips", f"must be 0 (off) or more, got {self.precise_bn_clips}")
        if not 0 <= self.model.dropout < 1:
            fail("model.dropout", f"must be in [0, 1), got {self.model.dropout}")
        if self.optim.lr <= 0:
            fail("optim.lr", f"must be positive, got {self.optim.lr}")
        if self.model.branch_fusion not in ("logits", "probs"):
            fail("model.branch_fusion", f"must be logits or probs, not {self.model.branch_fusion!r}")
        from vidistill.trainers.models import InvalidAttentionError, attention_variant, list_models

        if self.model.name not in list_models():
            fail("model.name", f"unknown model {self.model.name!r}; available: {', '.join(list_models())}")
        try:
            attention_variant(self.model.attention)
        except InvalidAttentionError as exc:
            fail("model.attention", str(exc))
        return self

    @property
    def dataset_name(self) -> str:
        return self.data.name or Path(self.data.prepared).name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, object]:
        """Dotted names to values, e.g. {"optim.lr": 0.01}: MLflow params, Tune search spaces."""
        return dict(_flatten(self.to_dict()))


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _coerce(value, annotation, name: str):
    """Convert a file or command-line value to the field's declared type."""
    # Annotations are strings here (`from __future__ import annotations`): "int", "float | None".
    optional = annotation.endswith("| None")
    base = annotation.split("|")[0].strip()
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if base == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {base}, got {value!r}") from None


def from_dict(data: dict, cls=TrainConfig, prefix: str = ""):
    """Build a config dataclass from nested dicts; unknown keys are refused by name."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field; known: {', '.join(sorted(fields))}")
    values = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a table of fields, got {value!r}")
            values[name] = from_dict(value, type(default), f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, f.type, f"{prefix}{name}")
    return cls(**values)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.name=value` strings to a nested dict (values are parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.name=value, e.g. optim.lr=0.003")
        key, raw = item.split("=", 1)
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a table")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return data


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
        if path.suffix == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    raise ConfigError(f"config file {path}: use .yaml, .yml, .toml or .json")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> TrainConfig:
    """File (optional) <- overrides, on top of the defaults; validated."""
    data = dict(base or {})
    if path is not None:
        data.update(read_config_file(path))
    data = apply_overrides(data, list(overrides or []))
    return from_dict(data).validate()
