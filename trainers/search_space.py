"""The search-space language of `vidistill submit-job tune --space` and `tune()`.

A search space maps a parameter to a distribution; a missing parameter keeps the base config's
value. In a YAML or TOML file::

    lambda1: {loguniform: [0.1, 10]}                      # distill.lambda1
    lambda2: {choice: [0.25, 1, 4]}                       # distill.lambda2, in units of 1/(T*H*W)
    attention: {choice: [soft-atten, soft-res, prob-atten]}
    lr: {loguniform: [0.001, 0.1]}                        # optim.lr
    gumbel_temperature: {uniform: [0.2, 1.0]}
    optim.weight_decay: 4e-5                              # any model./optim./distill. field; a value: fixed

Distributions: `loguniform: [low, high]`, `uniform: [low, high]`, `choice: [values...]` (a bare
list is a choice), or a plain value. `lambda2` is searched as a multiple of 1/(T*H*W) of the
attention grid of the base config's clips (Sec. 3.5's default is 1); the trial config and the
registered version record the resulting value.

A method's own options are searched by their dotted name, e.g. `distill.options.weight: [0.5, 2]`
(checked against the method's schema by `check_space`).

A detector search (`task="detection"`, the base a `DetectorTrainConfig`) searches the detector's
fields (`lr`, `dim`, `window`, ...) and its distillation method's options by their dotted name,
with short names for the decomposed method's knobs::

    mimic_weight: {loguniform: [0.1, 10]}                 # method_options.mimic_weight
    fusion_window: [3, 5, 9]                              # method_options.fusion_window
    lr: {loguniform: [0.0003, 0.003]}
    method_options.joint_weight: [0.5, 1, 2]

Its data, method, teachers, epochs (ASHA's time axis) and seed are not searched.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidistill.trainers.config import ConfigError, TrainConfig, from_dict, read_config_file

KINDS = ("loguniform", "uniform", "choice")
# Short names for the method's knobs; any other model./optim./distill. field may be given dotted.
ALIASES = {
    "lambda1": "distill.lambda1",
    "lambda2": "distill.lambda2",
    "attention": "model.attention",
    "lr": "optim.lr",
    "gumbel_temperature": "model.gumbel_temperature",
}
SEARCHABLE_PREFIXES = ("model.", "optim.", "distill.")
NOT_SEARCHABLE = {"distill.teacher", "distill.objective", "model.name", "model.pretrained"}
LAMBDA2 = "distill.lambda2"
OPTIONS = "distill.options."
TASKS = ("recognition", "detection")
# The detector's: what it trains on and how it is recorded is the base config's, not a knob.
DETECTION_ALIASES = {"mimic_weight": "method_options.mimic_weight", "fusion_window": "method_options.fusion_window"}
DETECTION_OPTIONS = "method_options."
DETECTION_NOT_SEARCHABLE = {"root", "layout", "annotations", "features", "train_subset", "test_subset", "device",
                            "protocol", "experiment", "name", "registry", "method", "teachers", "method_options",
                            "val_fraction", "val_seed", "epochs", "seed"}


@dataclass(frozen=True)
class Dimension:
    """One searched (or fixed) parameter: a dotted TrainConfig field and its distribution."""

    key: str  # dotted TrainConfig name, e.g. "optim.lr"
    kind: str  # loguniform | uniform | choice | fixed
    values: tuple  # (low, high) | the choices | (value,)

    def to_tune(self):
        from ray import tune as ray_tune

        if self.kind == "loguniform":
            return ray_tune.loguniform(*self.values)
        if self.kind == "uniform":
            return ray_tune.uniform(*self.values)
        if self.kind == "choice":
            return ray_tune.choice(list(self.values))
        return self.values[0]

    def describe(self) -> str:
        if self.kind == "fixed":
            return repr(self.values[0])
        return f"{self.kind}{list(self.values)}"


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    def __post_init__(self):
        keys = [d.key for d in self.dimensions]
        if len(set(keys)) != len(keys):
            raise ConfigError("space", f"a parameter is given twice: {sorted(k for k in keys if keys.count(k) > 1)[0]}")

    def to_tune(self) -> dict[str, Any]:
        return {d.key: d.to_tune() for d in self.dimensions}

    def to_dict(self) -> dict[str, Any]:
        return {d.key: (d.values[0] if d.kind == "fixed" else {d.kind: list(d.values)}) for d in self.dimensions}

    @property
    def searched(self) -> list[str]:
        return [d.key for d in self.dimensions if d.kind != "fixed"]


def default_space(role: str = "distill") -> SearchSpace:
    """The method's knobs: Eq. 8's weights (students only), the attention variant, lr, Gumbel temperature."""
    data: dict[str, Any] = {
        "lambda1": {"loguniform": [0.1, 10.0]},
        "lambda2": {"choice": [0.25, 0.5, 1.0, 2.0, 4.0]},
        "attention": {"choice": ["soft-atten", "soft-res", "prob-atten"]},
        "lr": {"loguniform": [1e-3, 1e-1]},
        "gumbel_temperature": {"uniform": [0.2, 1.0]},
    }
    if role != "distill":  # lambda1 and lambda2 weigh Eq. 8's terms: they change nothing else
        del data["lambda1"], data["lambda2"]
    return parse_space(data)


def default_detection_space(method: str = "none") -> SearchSpace:
    """The detector's lr, plus the loss weight (and fusion window) of a feature-mimic method."""
    data: dict[str, Any] = {"lr": {"loguniform": [3e-4, 3e-3]}}
    if method in ("feature", "decomposed"):
        data["mimic_weight"] = {"loguniform": [0.1, 10.0]}
    if method == "decomposed":
        data["fusion_window"] = {"choice": [3, 5, 9]}
    return parse_space(data, "detection")


def load_space(path: str | Path, task: str = "recognition") -> SearchSpace:
    """A space from a YAML/TOML/JSON file; a bad entry is refused with `space.<key>: why`."""
    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError("space", f"{path} must hold a table of parameter: distribution")
    return parse_space(data, task)


def parse_space(data: dict[str, Any], task: str = "recognition") -> SearchSpace:
    if task not in TASKS:
        raise ConfigError("task", f"unknown {task!r}; choose one of {', '.join(TASKS)}")
    return SearchSpace(tuple(_dimension(key, spec, task) for key, spec in _flatten_space(data, task)))


def _leaf_fields(task: str) -> set[str]:
    """The dotted names a space may give a distribution to (before the method's own options)."""
    if task == "detection":
        from vidistill.trainers.detection.train import DetectorTrainConfig

        return set(DetectorTrainConfig.model_fields) - {"method_options"}
    return set(TrainConfig().flat())


def _flatten_space(data: dict, task: str, prefix: str = ""):
    """TOML writes `optim.lr = {...}` as nested tables: walk them down to the distributions."""
    fields = _leaf_fields(task)
    aliases = DETECTION_ALIASES if task == "detection" else ALIASES
    for key, spec in data.items():
        name = f"{prefix}{key}"
        if isinstance(spec, dict) and spec and not set(spec) & set(KINDS) and aliases.get(name, name) not in fields:
            yield from _flatten_space(spec, task, name + ".")
        else:
            yield name, spec


def _dimension(name: str, spec: Any, task: str = "recognition") -> Dimension:
    def fail(why: str):
        raise ConfigError(f"space.{name}", why)

    if task == "detection":
        key = DETECTION_ALIASES.get(name, name)
        if key in DETECTION_NOT_SEARCHABLE:
            fail(f"cannot be searched (the search's data, method and time axis are the base config's); use "
                 f"{', '.join(DETECTION_ALIASES)}, a detector field such as lr, or a method_options. field")
        # The method's own options are checked against its schema by check_space.
        if key not in _leaf_fields(task) and not key.startswith(DETECTION_OPTIONS):
            fail(f"unknown parameter; {key} is not a detector config field (DetectorTrainConfig)")
    else:
        key = ALIASES.get(name, name)
        if key in NOT_SEARCHABLE or not key.startswith(SEARCHABLE_PREFIXES):
            fail(f"cannot be searched; use one of {', '.join(ALIASES)} or a model./optim./distill. field")
        # A method's own options (distill.options.*) are checked against its schema by check_space.
        if key not in _leaf_fields(task) and not key.startswith(OPTIONS):
            fail(f"unknown parameter; {key} is not a training config field")
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, dict):
        return Dimension(key, "fixed", (spec,))
    if len(spec) != 1:
        fail(f"give exactly one distribution of {', '.join(KINDS)}, got {', '.join(map(str, spec))}")
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        fail(f"unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(values, list) or not values:
        fail(f"{kind} needs a list, e.g. {kind}: [0.001, 0.1]")
    if kind in ("loguniform", "uniform"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            fail(f"{kind} needs [low, high] numbers, got {values!r}")
        low, high = map(float, values)
        if not low < high:
            fail(f"{kind} needs low < high, got {values!r}")
        if kind == "loguniform" and low <= 0:
            fail(f"loguniform needs low > 0, got {low}")
        values = [low, high]
    if key == LAMBDA2 and any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in values):
        fail(f"multiples of 1/(T*H*W) must be numbers >= 0, got {values!r}")
    return Dimension(key, kind, tuple(values))


def check_space(base, space: SearchSpace) -> None:
    """Every choice and both ends of every range make a valid config; refused with `space.<key>`."""
    for dim in space.dimensions:
        for value in dim.values:
            try:
                trial_config(base, {dim.key: value}, lambda2_unit=1.0)
            except ConfigError as exc:
                raise ConfigError(f"space.{_short(dim.key)}", f"value {value!r} is refused: {exc}") from None


def _short(key: str) -> str:
    return next((alias for alias, full in {**ALIASES, **DETECTION_ALIASES}.items() if full == key), key)


def trial_config(base, params: dict[str, Any], lambda2_unit: float = 1.0):
    """The base config with a trial's parameters; `distill.lambda2` comes as a multiple of the unit.
    A DetectorTrainConfig base gives a DetectorTrainConfig (checked: a method option it refuses
    names itself)."""
    if not isinstance(base, TrainConfig):
        from vidistill.trainers.schema import parse

        return parse(type(base), _set_dotted(base.model_dump(), params))
    overrides = {k: (v * lambda2_unit if k == LAMBDA2 else v) for k, v in params.items()}
    return from_dict(_set_dotted(base.to_dict(), overrides))


def _set_dotted(data: dict, values: dict[str, Any]) -> dict:
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def lambda2_unit(config: TrainConfig) -> float:
    """1 / (T*H*W) of the attention grid (phi, Mixed_4f) for the config's clips."""
    import torch

    from vidistill.trainers.train import build_model

    model = build_model(config, 2).eval()
    clip = torch.zeros(1, model.in_channels, config.data.clip_length, config.data.crop_size, config.data.crop_size)
    with torch.no_grad():
        phi, _ = model.forward_features(clip)
    t, h, w = phi.shape[-3:]
    return 1.0 / (t * h * w)
