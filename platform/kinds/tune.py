"""The `tune` kind: a Ray Tune search over the distillation's knobs, ASHA-stopped, one MLflow run with trials.

    vidistill submit-job tune --train-config student.yaml --space space.yaml --trials 16 \\
        --max-concurrent 4 --trial-gpus 0.5

The training config follows the training kinds (`--train-config`, `--set`, shortcuts; resolved
at submission into `resolved`); any role can be tuned, `distill` by default. The search space
file (see `vidistill.trainers.tune`) is read at submission too, into `resolved_space`: a bad key
is refused by `submit-job` with its name, and a retry searches exactly what was submitted.
Without `--space` the default space is searched.

Resources: `max_concurrent` trials at a time, each with the training config's `num_workers`
Ray Train workers of `trial_cpus` CPUs and `trial_gpus` GPUs (below 1, trials share a GPU); the
job is admitted when the cluster holds all of them. The job records the tuning run (trials are
its child runs) and the best trial's model version gets the alias `job-<id>`. The Tune
experiment is named after the job, so a retried job (its process killed) resumes the search in
the same tuning run instead of starting over.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError
from vidistill.platform.kinds.training import TrainJobConfig, _shortcuts, job_alias, resolve_train_config


@dataclass
class TuneJobConfig(TrainJobConfig):
    teacher: str | None = field(default=None, metadata={
        "help": "the flow teacher's registry URI (students); sets distill.teacher"})
    space: str | None = field(default=None, metadata={
        "help": "YAML/TOML search space, e.g. `lr: {loguniform: [0.001, 0.1]}`; default: lambda1, lambda2, "
                "attention, lr, gumbel_temperature"})
    trials: int = field(default=8, metadata={"help": "trials (samples of the space)"})
    max_concurrent: int = field(default=1, metadata={"help": "trials running at once"})
    trial_cpus: float = field(default=1.0, metadata={"help": "CPUs per Ray Train worker of a trial"})
    trial_gpus: float = field(default=0.0, metadata={
        "help": "GPUs per Ray Train worker of a trial; 0.5 lets two trials share a GPU"})
    grace_period: int = field(default=1, metadata={"help": "ASHA: epochs every trial runs before it can be stopped"})
    reduction_factor: float = field(default=2.0, metadata={"help": "ASHA: keep 1/this of the trials at each rung"})
    seed: int = field(default=0, metadata={"help": "seed of the search's sampling"})
    resolved_space: dict[str, Any] = field(default_factory=dict, metadata={
        "cli": False, "help": "filled in at submission: the search space the job runs"})

    def overrides(self) -> list[str]:
        # Any role can be tuned; the training config says which (distill by default).
        return [*_shortcuts({"data.prepared": self.prepared, "data.root": self.root, "data.layout": self.layout,
                             "distill.teacher": self.teacher}), *self.set]

    def validate(self) -> None:
        from vidistill.trainers import config as trainers_config
        from vidistill.trainers import tune as trainers_tune

        for name, value in (("trials", self.trials), ("max_concurrent", self.max_concurrent),
                            ("grace_period", self.grace_period)):
            if value < 1:
                raise ConfigError(name, f"must be at least 1, got {value}")
        if self.reduction_factor <= 1:
            raise ConfigError("reduction_factor", f"must be above 1, got {self.reduction_factor}")
        config = resolve_train_config(None, [], base=self.resolved) if self.resolved else \
            resolve_train_config(self.train_config, self.overrides())
        self.resolved = config.to_dict()
        try:
            if self.resolved_space:
                space = trainers_tune.parse_space(self.resolved_space)
            elif self.space is not None:
                if not Path(self.space).is_file():
                    raise ConfigError("space", f"no such file {self.space}; give a YAML/TOML search space")
                space = trainers_tune.load_space(self.space)
            else:
                space = trainers_tune.default_space(config.role)
            trainers_tune.check_space(config, space)
        except trainers_config.ConfigError as error:
            # "space.lr: loguniform needs low > 0" -> field space, reason naming the key.
            reason = str(error).removeprefix("space.").removeprefix("space: ")
            raise ConfigError("space", f"{self.space}: {reason}" if self.space else reason) from None
        self.resolved_space = space.to_dict()


def tune_resources(config: TuneJobConfig) -> JobResources:
    """All the Train workers of `max_concurrent` trials; the trials' drivers ask for nothing."""
    return JobResources(config.max_concurrent * int(config.resolved.get("num_workers", 1)),
                        cpus_per_worker=config.trial_cpus, gpus_per_worker=config.trial_gpus)


def run_tune(config: TuneJobConfig) -> None:
    from vidistill.platform.kinds.driver import current_job, previous_mlflow_run, report_mlflow_run
    from vidistill.trainers import tracking
    from vidistill.trainers.tune import parse_space, tune

    job = current_job()
    name = f"tune-job-{job.job_id}" if job is not None else f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    result = tune(config.train_config_object(), parse_space(config.resolved_space), config.trials, name=name,
                  max_concurrent=config.max_concurrent, cpus_per_worker=config.trial_cpus,
                  gpus_per_worker=config.trial_gpus, grace_period=config.grace_period,
                  reduction_factor=config.reduction_factor, seed=config.seed, run_id=previous_mlflow_run(),
                  on_run=report_mlflow_run)
    if job is not None and result.model_version is not None:
        tracking.configure().set_registered_model_alias(result.registered_name, job_alias(job.job_id),
                                                        result.model_version)
    print(f"[vidistill] tuning run {result.run_id}: best trial {result.best.trial_id} "
          f"(val accuracy {result.best.val_accuracy:.3f}) registered as {result.model_uri}"
          + (f" (alias @{job_alias(job.job_id)})" if job is not None else ""), flush=True)


TUNE = register(JobKind(
    name="tune",
    summary="Search loss weights, attention variant, lr and Gumbel temperature with Ray Tune and ASHA.",
    config_class=TuneJobConfig,
    run=run_tune,
    resources=tune_resources,
))

__all__ = ["TuneJobConfig", "run_tune", "tune_resources"]
