"""The training kinds: `train-teacher`, `train-rgb` and `distill`.

Each runs `vidistill.trainers.train.train` on Ray Train with a `TrainConfig` whose role is the
kind's (teacher: flow I3D; rgb: an RGB model of Table 1; distill: an RGB student). The job's
config names the training config the way a person writes it (a file, dotted overrides and a
few shortcuts such as --prepared), and `validate` resolves it at submission into `resolved`,
the full `TrainConfig`: a wrong field is refused by `submit-job` with its name, and the job
runs exactly what was submitted even if the file changes or lives on another machine.

A finished training gets the registry alias `job-<id>` on its model version, so a later job
can name a model that does not exist yet: `vidistill pipeline` gives its student the teacher
`models:/<data>-teacher-flow@job-12`, pinned to the exact version when the student starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError


def job_alias(job_id: int) -> str:
    """The registry alias a job's model version gets (aliases may not look like `v12`)."""
    return f"job-{job_id}"


def resolve_train_config(train_config: str | None, overrides: list[str], base: dict | None = None):
    """The validated TrainConfig from a file and dotted overrides, or ConfigError naming the field.

    Imports the trainers lazily: the CLI lists kinds without loading torch.
    """
    from vidistill.trainers import config as trainers_config

    try:
        if train_config is not None and not Path(train_config).is_file():
            raise ConfigError("train_config", f"no such file {train_config}; give a YAML/TOML training config")
        return trainers_config.load_config(train_config, overrides, base=base)
    except trainers_config.ConfigError as error:
        # The trainers' messages start with the dotted field: "optim.lrr: unknown field; ...".
        name, sep, reason = str(error).partition(": ")
        if not sep or " " in name:
            # Not about one field: the file itself (unreadable, bad YAML) or an override's form.
            name = "train_config" if str(error).startswith("config file") else "set"
            reason = str(error)
        raise ConfigError(name, reason) from None


def _shortcuts(values: dict[str, str | None]) -> list[str]:
    return [f"{key}={value}" for key, value in values.items() if value is not None]


@dataclass
class TrainJobConfig:
    """Shared by the three training kinds; ROLE is set by each kind's subclass."""

    ROLE: ClassVar[str] = ""

    prepared: str | None = field(default=None, metadata={
        "help": "prepared data set folder (`vidistill datasets prepare --out`); sets data.prepared"})
    root: str | None = field(default=None, metadata={
        "help": "source data set folder, whose split lists say which videos train and test; sets data.root"})
    layout: str | None = field(default=None, metadata={
        "help": "ucf101 | hmdb51 | egtea | ssv2 | generic; sets data.layout"})
    train_config: str | None = field(default=None, metadata={
        "help": "YAML/TOML training config (the sections of vidistill.trainers.config.TrainConfig)"})
    set: list[str] = field(default_factory=list, metadata={
        "help": "dotted override of the training config, e.g. optim.lr=0.003 or num_workers=4"})
    resolved: dict[str, Any] = field(default_factory=dict, metadata={
        "cli": False,
        "help": "filled in at submission: the full training config the job runs (a retry reads this, not the file)"})

    def overrides(self) -> list[str]:
        return [f"role={self.ROLE}", *_shortcuts({"data.prepared": self.prepared, "data.root": self.root,
                                                   "data.layout": self.layout}), *self.set]

    def validate(self) -> None:
        if self.resolved:
            # Submitted before: this is what runs. Checking it again catches a stored row
            # edited by hand, and a trainers upgrade that no longer accepts it.
            config = resolve_train_config(None, [], base=self.resolved)
        else:
            config = resolve_train_config(self.train_config, self.overrides())
        if config.role != self.ROLE:
            raise ConfigError("set", f"this kind trains role {self.ROLE!r}; remove role={config.role}")
        self.resolved = config.to_dict()

    def train_config_object(self):
        from vidistill.trainers.config import from_dict

        return from_dict(self.resolved)


@dataclass
class TeacherJobConfig(TrainJobConfig):
    ROLE: ClassVar[str] = "teacher"


@dataclass
class RgbJobConfig(TrainJobConfig):
    ROLE: ClassVar[str] = "rgb"


@dataclass
class DistillJobConfig(TrainJobConfig):
    ROLE: ClassVar[str] = "distill"

    teacher: str | None = field(default=None, metadata={
        "help": "the flow teacher's registry URI, models:/NAME/VERSION or models:/NAME@ALIAS; sets distill.teacher"})

    def overrides(self) -> list[str]:
        return [*super().overrides(), *_shortcuts({"distill.teacher": self.teacher})]


def train_resources(config: TrainJobConfig) -> JobResources:
    """What `train` asks Ray Train for: one CPU (and one GPU when use_gpu) per worker."""
    resolved = config.resolved
    return JobResources(resolved.get("num_workers", 1), cpus_per_worker=1.0,
                        gpus_per_worker=1.0 if resolved.get("use_gpu") else 0.0)


def run_training(config: TrainJobConfig) -> None:
    """Train; a retried job continues the MLflow run (and Ray Train checkpoint) of its first attempt."""
    from vidistill.platform.kinds.driver import current_job, previous_mlflow_run, report_mlflow_run
    from vidistill.trainers import tracking
    from vidistill.trainers.train import train

    job = current_job()
    result = train(config.train_config_object(), run_id=previous_mlflow_run(), on_run=report_mlflow_run)
    if job is not None and result.model_version is not None:
        tracking.configure().set_registered_model_alias(result.registered_name, job_alias(job.job_id),
                                                        result.model_version)
        print(f"[vidistill] registered {result.model_uri} (alias @{job_alias(job.job_id)})", flush=True)


def _training_kind(name: str, summary: str, config_class: type) -> JobKind:
    return register(JobKind(name=name, summary=summary, config_class=config_class, run=run_training,
                            resources=train_resources))


TRAIN_TEACHER = _training_kind(
    "train-teacher", "Train the flow (optical-flow) I3D teacher with attention.", TeacherJobConfig)
TRAIN_RGB = _training_kind(
    "train-rgb", "Train an RGB I3D baseline (attention none, soft-atten, soft-res or prob-atten).", RgbJobConfig)
DISTILL = _training_kind(
    "distill", "Distil a flow teacher's motion attention into an RGB student (Prob-Distill, Eq. 8).",
    DistillJobConfig)


__all__ = ["DistillJobConfig", "RgbJobConfig", "TeacherJobConfig", "TrainJobConfig", "job_alias",
           "resolve_train_config", "run_training", "train_resources"]
