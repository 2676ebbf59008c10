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

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError, Schema
from vidistill.trainers.config import TrainConfig, load_config, worker_resources


def job_alias(job_id: int) -> str:
    """The registry alias a job's model version gets (aliases may not look like `v12`)."""
    return f"job-{job_id}"


def resolve_train_config(train_config: str | None, overrides: list[str]) -> TrainConfig:
    """The checked TrainConfig from a file and dotted overrides, or ConfigError naming the field."""
    if train_config is not None and not Path(train_config).is_file():
        raise ConfigError("train_config", f"no such file {train_config}; give a YAML/TOML training config")
    try:
        return load_config(train_config, overrides)
    except ConfigError as error:
        if error.field == "config":  # the file itself (unreadable, bad YAML): name the option that gave it
            raise ConfigError("train_config", error.reason) from None
        raise


def _shortcuts(values: dict[str, str | None]) -> list[str]:
    return [f"{key}={value}" for key, value in values.items() if value is not None]


# Fields the kind fills in itself at submission get no command-line option.
NOT_AN_OPTION = {"cli": False}


class TrainJobConfig(Schema):
    """Shared by the three training kinds; ROLE is set by each kind's subclass."""

    ROLE: ClassVar[str] = ""

    prepared: str | None = Field(None, description=
        "prepared data set folder (`vidistill datasets prepare --out`); sets data.prepared")
    root: str | None = Field(None, description=
        "source data set folder, whose split lists say which videos train and test; sets data.root")
    layout: str | None = Field(None, description="ucf101 | hmdb51 | egtea | ssv2 | generic; sets data.layout")
    train_config: str | None = Field(None, description=
        "YAML/TOML training config (the sections of vidistill.trainers.config.TrainConfig)")
    set: list[str] = Field(default_factory=list, description=
        "dotted override of the training config, e.g. optim.lr=0.003 or num_workers=4 (fields listed below)")
    resolved: TrainConfig | None = Field(None, json_schema_extra=NOT_AN_OPTION, description=
        "filled in at submission: the full training config the job runs (a retry reads this, not the file)")

    def overrides(self) -> list[str]:
        return [f"role={self.ROLE}", *_shortcuts({"data.prepared": self.prepared, "data.root": self.root,
                                                   "data.layout": self.layout}), *self.set]

    def check(self) -> None:
        if self.resolved is not None:
            # Submitted before: this is what runs. Its types were parsed with the job config;
            # the rules across its fields are checked here, once, as part of that parse.
            try:
                self.resolved.check()
            except ConfigError as error:
                raise error.under("resolved") from None
        else:
            self.resolved = resolve_train_config(self.train_config, self.overrides())
        if self.ROLE and self.resolved.role != self.ROLE:
            raise ConfigError("set", f"this kind trains role {self.ROLE!r}; remove role={self.resolved.role}")


class TeacherJobConfig(TrainJobConfig):
    ROLE: ClassVar[str] = "teacher"


class RgbJobConfig(TrainJobConfig):
    ROLE: ClassVar[str] = "rgb"


class DistillJobConfig(TrainJobConfig):
    ROLE: ClassVar[str] = "distill"

    teacher: str | None = Field(None, description=
        "the flow teacher's registry URI, models:/NAME/VERSION or models:/NAME@ALIAS; sets distill.teacher")

    def overrides(self) -> list[str]:
        return [*super().overrides(), *_shortcuts({"distill.teacher": self.teacher})]


def train_resources(config: TrainJobConfig) -> JobResources:
    """What `train` will ask Ray Train for (trainers' worker_resources is the one rule)."""
    workers = worker_resources(config.resolved)
    return JobResources(workers.num_workers, cpus_per_worker=workers.cpus, gpus_per_worker=workers.gpus)


def run_training(config: TrainJobConfig) -> None:
    """Train; a retried job continues the MLflow run (and Ray Train checkpoint) of its first attempt."""
    from vidistill.platform.kinds.driver import current_job, previous_mlflow_run, report_mlflow_run
    from vidistill.trainers.train import train

    job = current_job()
    result = train(config.resolved, run_id=previous_mlflow_run(), on_run=report_mlflow_run,
                   alias=job_alias(job.job_id) if job is not None else None)
    if job is not None and result.model_version is not None:
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
