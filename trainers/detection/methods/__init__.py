"""Detection distillation methods as plug-ins, in the manner of trainers/methods (timm's registry).

A method is one module in this package (or in a module named by VIDISTILL_DETECTION_METHOD_MODULES,
comma-separated) that registers a `DetectionMethod`: how it builds the student network, its loss
(named terms) and its options. `train_detector` knows methods only through this registry::

    from pydantic import Field
    from vidistill.trainers.detection.methods import DetectionMethod, register_detection_method
    from vidistill.trainers.detection.models import create_detector, detection_loss
    from vidistill.trainers.schema import Schema

    class ToyOptions(Schema):             # --set method_options.weight=2
        weight: float = Field(1.0, ge=0)

    def build(spec: StudentSpec, options: ToyOptions) -> nn.Module:
        return create_detector(spec.in_channels, spec.num_classes, **spec.detector)

    def loss(output, targets, teachers: list[TeacherBatch], options: ToyOptions) -> dict[str, Tensor]:
        t = teachers[0]                    # t.features (B, C_t, T); t.embedding (B, T, D_t) or None
        mimic = ((output["embedding"] - t.embedding) ** 2).mean()
        return {"detection": detection_loss(output, targets)[0], "mimic": options.weight * t.weight * mimic}

    register_detection_method(DetectionMethod("toy", "...", build, loss, ToyOptions, min_teachers=1))

Then `vidistill submit-job train-detector --root R --features RGB --set method=toy
--set 'teachers=[{features: FLOW, detector: "models:/D-detector-flow/1"}]'` trains it.

The contract, all a method needs to know:
- `build(spec, options)` returns the student: an nn.Module whose forward(x (B, C, T), mask (B, T))
  returns the detector output that inference decodes ("logits", "distances", "masks" for a
  segment head; "frame_logits", "masks" for a dense one) plus whatever its loss reads, and that
  has the attributes `kind` ("segments" | "dense"), `levels` and `length_multiple` of
  models.Detector. At inference it sees the student's features only (RGB): teachers are a
  training-time signal.
- `loss(output, targets, teachers, options)` returns {term name: weighted scalar tensor}; the
  loop minimises their sum and logs each as `train_<name>`. `targets` are make_batch's (what
  models.detection_loss takes); `teachers` one TeacherBatch per configured teacher stream, in
  the config's order, cropped exactly like the student's batch.
- A teacher stream (DetectorTrainConfig.teachers) is a feature folder, optionally a frozen
  teacher detector (a registry URI of a detector trained on those features: loaded once, in eval
  mode, never updated or re-registered) and a weight the loss applies to its terms.
- "none" (registered here) is the plain detector on the student's features: today's behaviour.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

MODULES_VARIABLE = "VIDISTILL_DETECTION_METHOD_MODULES"


@dataclass(frozen=True)
class StudentSpec:
    """What a method builds its student from."""

    in_channels: int  # width of the student's features (all of `features`, concatenated)
    num_classes: int
    detector: dict  # create_detector keyword arguments of the config: dim, levels, stem, heads, window, neck, head, dropout
    teacher_channels: tuple[int, ...] = ()  # feature width of each teacher stream
    teacher_dims: tuple[int | None, ...] = ()  # embedding width of each frozen teacher detector (None: no detector)


@dataclass
class TeacherBatch:
    """One teacher stream for one training batch (no gradient reaches any of it)."""

    features: torch.Tensor  # (B, C_t, T) its snippet features, same crop and padding as the student's
    mask: torch.Tensor  # (B, T)
    weight: float
    detector: torch.nn.Module | None = None  # the frozen teacher detector, if one was given
    embedding: torch.Tensor | None = None  # (B, T, D_t) that detector's projection of the features
    output: dict | None = field(default=None, repr=False)  # that detector's full output (head + embedding)


@dataclass(frozen=True)
class DetectionMethod:
    name: str
    summary: str
    # build(StudentSpec, options) -> the student nn.Module (contract above)
    build: Callable[..., Any]
    # loss(output, targets, list[TeacherBatch], options) -> {name: weighted scalar tensor}
    loss: Callable[..., Any]
    # Its options, `method_options` (a Schema), checked with the training config.
    options: type | None = None
    # Teacher streams it needs (a ConfigError before training when fewer are given) and
    # whether each of them must name a frozen teacher detector.
    min_teachers: int = 0
    needs_teacher_detector: bool = False

    def parse_options(self, data: dict | None):
        """Its typed options (ConfigError naming `method_options.<field>`), or None without a section."""
        from vidistill.trainers.schema import ConfigError, parse

        if self.options is None:
            if data:
                raise ConfigError("method_options", f"method {self.name!r} takes no options, got {sorted(data)}")
            return None
        try:
            return parse(self.options, data or {})
        except ConfigError as error:
            raise error.under("method_options") from None


_registry: dict[str, DetectionMethod] = {}
_imported: set[str] = set()
_lock = threading.RLock()


def register_detection_method(method: DetectionMethod) -> DetectionMethod:
    with _lock:
        existing = _registry.get(method.name)
        if existing is not None and existing != method:
            raise ValueError(f"detection method {method.name!r} is registered twice")
        _registry[method.name] = method
    return method


def _discover() -> None:
    """Import this package's modules and those named by VIDISTILL_DETECTION_METHOD_MODULES (once each)."""
    with _lock:
        names = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)]
        names += [n.strip() for n in os.environ.get(MODULES_VARIABLE, "").split(",") if n.strip()]
        for name in names:
            if name not in _imported:
                importlib.import_module(name)
                _imported.add(name)


def list_detection_methods() -> list[str]:
    _discover()
    return sorted(_registry)


def get_detection_method(name: str) -> DetectionMethod:
    _discover()
    try:
        return _registry[name]
    except KeyError:
        raise KeyError(f"unknown detection method {name!r}; registered: {', '.join(sorted(_registry))}") from None


# --- the plain detector: method "none" ----------------------------------------------------------

def _plain_build(spec: StudentSpec, options) -> torch.nn.Module:
    from vidistill.trainers.detection.models import create_detector

    return create_detector(spec.in_channels, spec.num_classes, **spec.detector)


def _plain_loss(output: dict, targets: list, teachers: list[TeacherBatch], options) -> dict:
    from vidistill.trainers.detection.models import detection_loss

    return {"detection": detection_loss(output, targets)[0]}


register_detection_method(DetectionMethod(
    "none", "the plain detector on the student's features (no teacher)", _plain_build, _plain_loss))

__all__ = ["DetectionMethod", "MODULES_VARIABLE", "StudentSpec", "TeacherBatch", "get_detection_method",
           "list_detection_methods", "register_detection_method"]
