"""The `tune` kind: a Ray Tune search over the distillation's knobs, ASHA-stopped, one MLflow run with trials.

    vidistill submit-job tune --train-config student.yaml --space space.yaml --trials 16 \\
        --max-concurrent 4 --trial-gpus 0.5

The training config follows the training kinds (`--train-config`, `--set`, shortcuts; resolved
at submission into `resolved`); any role can be tuned, `distill` by default. The search space
file (see `vidistill.trainers.search_space`) is read at submission too, into `resolved_space`: a bad key
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
from pathlib import Path
from typing import Any

from pydantic import Field

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError
from vidistill.platform.kinds.training import NOT_AN_OPTION, TrainJobConfig, _shortcuts, job_alias
from vidistill.trainers.config import worker_resources


class TuneJobConfig(TrainJobConfig):
    teacher: str | None = Field(None, description="the flow teacher's registry URI (students); sets distill.teacher")
    space: str | None = Field(None, description=
        "YAML/TOML search space, e.g. `lr: {loguniform: [0.001, 0.1]}`; default: lambda1, lambda2, "
        "attention, lr, gumbel_temperature")
    trials: int = Field(8, description="trials (samples of the space)")
    max_concurrent: int = Field(1, description="trials running at once")
    trial_cpus: float = Field(1.0, description="CPUs per Ray Train worker of a trial")
    trial_gpus: float = Field(0.0, description="GPUs per Ray Train worker of a trial; 0.5 lets two trials share a GPU")
    grace_period: int = Field(1, description="ASHA: epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(2.0, description="ASHA: keep 1/this of the trials at each rung")
    seed: int = Field(0, description="seed of the search's sampling")
    resolved_space: dict[str, Any] = Field(default_factory=dict, json_schema_extra=NOT_AN_OPTION, description=
        "filled in at submission: the search space the job runs")

    def overrides(self) -> list[str]:
        # Any role can be tuned; the training config says which (distill by default).
        return [*_shortcuts({"data.prepared": self.prepared, "data.root": self.root, "data.layout": self.layout,
                             "distill.teacher": self.teacher}), *self.set]

    def check(self) -> None:
        from vidistill.trainers import search_space

        for name, value in (("trials", self.trials), ("max_concurrent", self.max_concurrent),
                            ("grace_period", self.grace_period)):
            if value < 1:
                raise ConfigError(name, f"must be at least 1, got {value}")
        if self.reduction_factor <= 1:
            raise ConfigError("reduction_factor", f"must be above 1, got {self.reduction_factor}")
        super().check()  # the training config: any role (distill by default)
        try:
            if self.resolved_space:
                space = search_space.parse_space(self.resolved_space)
            elif self.space is not None:
                if not Path(self.space).is_file():
                    raise ConfigError("space", f"no such file {self.space}; give a YAML/TOML search space")
                space = search_space.load_space(self.space)
            else:
                space = search_space.default_space(self.resolved.role)
            search_space.check_space(self.resolved, space)
        except ConfigError as error:
            if error.field == "space" and error.reason.startswith("no such file"):
                raise
            # "space.lr: loguniform needs low > 0" -> field space, reason naming the key.
            reason = str(error).removeprefix("space.").removeprefix("space: ")
            raise ConfigError("space", f"{self.space}: {reason}" if self.space else reason) from None
        self.resolved_space = space.to_dict()


def tune_resources(config: TuneJobConfig) -> JobResources:
    """All the Train workers of `max_concurrent` trials; the trials' drivers ask for nothing."""
    workers = worker_resources(config.resolved, cpus=config.trial_cpus, gpus=config.trial_gpus,
                               concurrent=config.max_concurrent)
    return JobResources(workers.num_workers, cpus_per_worker=workers.cpus, gpus_per_worker=workers.gpus)


def run_tune(config: TuneJobConfig) -> None:
    from vidistill.platform.kinds.driver import current_job, previous_mlflow_run, report_mlflow_run
    from vidistill.trainers.tune import parse_space, tune

    job = current_job()
    name = f"tune-job-{job.job_id}" if job is not None else f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    result = tune(config.resolved, parse_space(config.resolved_space), config.trials, name=name,
                  max_concurrent=config.max_concurrent, cpus_per_worker=config.trial_cpus,
                  gpus_per_worker=config.trial_gpus, grace_period=config.grace_period,
                  reduction_factor=config.reduction_factor, seed=config.seed, run_id=previous_mlflow_run(),
                  on_run=report_mlflow_run, alias=job_alias(job.job_id) if job is not None else None)
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
