"""Distillation methods as plug-ins, in the manner of timm's model registry.

A method is one module in this package (or in a module named by VIDISTILL_METHOD_MODULES,
comma-separated, importable wherever training runs) that registers a `Method`: the student
it trains, the teacher signals it reads, its loss terms and its config section. The training
loop, the queue, the CLI and the tuner know methods only through this registry::

    from pydantic import Field
    from vidistill.trainers.losses import LossTerms
    from vidistill.trainers.methods import Method, register_method
    from vidistill.trainers.schema import Schema

    class ToyOptions(Schema):          # its section: --set distill.options.weight=2
        weight: float = Field(1.0, gt=0, description="weight of the logit match")

    def toy_loss(output, labels, teacher, config, options: ToyOptions) -> LossTerms: ...

    register_method(Method(name="toy", summary="...", signals=("logits",), loss=toy_loss,
                           options=ToyOptions))

`--set distill.objective=toy` then trains it (`submit-job distill`, `train()`), a search
space may name `distill.options.weight`, and the registered model is `<data>-student-rgb-toy`.

A method may own a trainable module of its own beside the student (`Method.auxiliary`, e.g. the
generative module of trainers/methods/generative.py): the loop builds it once per worker before
the first epoch (the method may train a first phase of its own there, e.g. on the frozen
teacher's features), puts its parameters that still require grad into the student's optimiser,
keeps its state in the run's checkpoints, and passes it to the loss as `context=MethodContext`
(with the epoch, for a term ramped over epochs). Only the student is registered. Methods without
`auxiliary` are called exactly as before (no `context` argument).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from vidistill.trainers.plugins import PluginRegistry, parse_options

# What a frozen teacher can supply to a loss (see losses.TeacherSignals).
SIGNALS = ("maps", "features", "logits")
MODULES_VARIABLE = "VIDISTILL_METHOD_MODULES"
# The networks a method can train (Method.student): the two-branch student or one RGB branch.
STUDENTS = ("attention", "rgb")


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    # Teacher signals its loss reads: a subset of SIGNALS. The teacher is checked against them
    # before training (teacher.check_teacher_fits).
    signals: tuple[str, ...]
    # loss(student output, labels, TeacherSignals, TrainConfig, options) -> LossTerms
    loss: Callable[..., Any]
    # The student it trains: "attention" builds the two-branch student of Sec. 3.5 (motion +
    # appearance; refused with attention none), for a loss that supervises its motion branch;
    # "rgb" the one-branch RGB network of model.attention, every part of which its loss reaches
    # (a two-branch student would leave an unsupervised motion branch: issue 13, defect 5).
    student: str = "rgb"
    # Its maps may come from the bank of the teacher's exact maps of K augmentations per video
    # (teacher_bank.TeacherBank) instead of running the teacher at every step.
    map_cache: bool = False
    # Its own config section, `distill.options` (a Schema), checked with the training config.
    options: type | None = None
    # Registered model name: <data>-student-rgb<suffix>; None: "-<name>".
    registered_suffix: str | None = None
    # auxiliary(AuxiliarySetup) -> torch.nn.Module: a module of the method's own, trained with the
    # student (see the module docstring); its loss is then called with context=MethodContext.
    auxiliary: Callable[..., Any] | None = None
    # Its loss maps the student's block-5 features to the teacher's width itself (through its
    # auxiliary module), so only their (T, H, W) grid must match (teacher.check_teacher_fits).
    adapts_feature_width: bool = False

    def __post_init__(self):
        unknown = sorted(set(self.signals) - set(SIGNALS))
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown teacher signal {unknown[0]!r}; use {', '.join(SIGNALS)}")
        if self.student not in STUDENTS:
            raise ValueError(f"method {self.name!r}: student must be 'attention' or 'rgb', not {self.student!r}")

    @property
    def suffix(self) -> str:
        return f"-{self.name}" if self.registered_suffix is None else self.registered_suffix

    def parse_options(self, data: dict | None):
        """Its typed options (ConfigError naming `distill.options.<field>`), or None without a section."""
        return parse_options(self.options, data, "distill.options", self.name)


@dataclass
class AuxiliarySetup:
    """What a method's `auxiliary` builder gets, once per worker, before the first epoch."""

    teacher: Any  # the frozen teacher (eval, requires_grad False)
    student: Any  # the student network (not wrapped for data parallelism)
    teacher_input: Callable[[dict], Any]  # batch -> the teacher's input clip on the device
    student_input: Callable[[dict], Any]  # batch -> the student's input clip on the device
    loader: Any  # the training loader (paired clips), for a first phase over the training set
    device: Any
    config: Any  # the TrainConfig
    options: Any  # the method's parsed options
    state: dict | None  # its state_dict from the checkpoint when the run resumes, else None


@dataclass
class MethodContext:
    """Passed to the loss of a method with an auxiliary module, at every step."""

    module: Any  # what `auxiliary` returned
    epoch: int  # 0-based
    epochs: int


_registry = PluginRegistry(__name__, __path__, MODULES_VARIABLE, "distillation method")


def register_method(method: Method) -> Method:
    return _registry.register(method)


def list_methods() -> list[str]:
    return _registry.names()


def get_method(name: str) -> Method:
    return _registry.get(name)


def environment() -> dict[str, str]:
    """What a process that trains (a Ray Train worker, a Tune trial) needs to find the methods."""
    value = os.environ.get(MODULES_VARIABLE)
    return {MODULES_VARIABLE: value} if value else {}


__all__ = ["AuxiliarySetup", "MODULES_VARIABLE", "Method", "MethodContext", "SIGNALS", "STUDENTS", "environment", "get_method", "list_methods", "register_method"]
