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

Detection (`--task detection`): the search trains temporal action detectors on snippet features
instead, its base a `DetectorTrainConfig` built like `submit-job train-detector`'s (`--root`,
`--features`, `--layout`, `--set` of detector fields), resolved at submission into
`resolved_detector`. The space reaches the detector's fields and its method's options
(`mimic_weight`, `fusion_window`, `method_options.*`; default: lr, plus those of a feature-mimic
method); each trial trains one detector in a Ray process of `trial_cpus` CPUs and `trial_gpus`
GPUs, and ASHA reads its validation mAP on a held-out slice of the training videos (`--set
val_fraction=...`, a quarter by default), never the test subset. The best detector gets the alias
`job-<id>`:

    vidistill submit-job tune --task detection --root UNTRIMMED --features FEAT/rgb \\
        --set method=decomposed --set 'teachers=[{features: FEAT/flow, detector: "models:/D-detector-flow/1"}]' \\
        --space space.yaml --trials 8
    # space.yaml: {mimic_weight: {loguniform: [0.1, 10]}, fusion_window: [3, 5, 9]}
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError
from vidistill.platform.kinds.training import NOT_AN_OPTION, TrainJobConfig, _shortcuts, job_alias
from vidistill.trainers.config import worker_resources


class TuneJobConfig(TrainJobConfig):
    task: Literal["recognition", "detection"] = Field("recognition", description=
        "recognition: search a training config (I3D on clips); detection: a temporal action detector on "
        "snippet features (--root, --features, --set of detector fields as in `submit-job train-detector`)")
    features: list[str] = Field(default_factory=list, description=
        "detection: feature folder(s) of the searched detector, as `train-detector --features`")
    set: list[str] = Field(default_factory=list, description=
        "dotted override of the training config, e.g. optim.lr=0.003 (fields listed below); with --task "
        "detection, of the detector config instead, e.g. method=decomposed (`submit-job train-detector --help`)")
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
    resolved_detector: dict[str, Any] | None = Field(None, json_schema_extra=NOT_AN_OPTION, description=
        "filled in at submission (detection): the full detector config the search starts from")

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
        if self.task == "detection":
            base = self.detector_config()
        else:
            if self.features:
                raise ConfigError("features", "feature folders are searched by --task detection; remove --features "
                                              "or add --task detection")
            super().check()  # the training config: any role (distill by default)
            base = self.resolved
        try:
            if self.resolved_space:
                space = search_space.parse_space(self.resolved_space, self.task)
            elif self.space is not None:
                if not Path(self.space).is_file():
                    raise ConfigError("space", f"no such file {self.space}; give a YAML/TOML search space")
                space = search_space.load_space(self.space, self.task)
            elif self.task == "detection":
                space = search_space.default_detection_space(base.method)
            else:
                space = search_space.default_space(self.resolved.role)
            search_space.check_space(base, space)
        except ConfigError as error:
            if error.field == "space" and error.reason.startswith("no such file"):
                raise
            # "space.lr: loguniform needs low > 0" -> field space, reason naming the key.
            reason = str(error).removeprefix("space.").removeprefix("space: ")
            raise ConfigError("space", f"{self.space}: {reason}" if self.space else reason) from None
        self.resolved_space = space.to_dict()

    def detector_config(self):
        """The checked DetectorTrainConfig the detection search starts from (resolved_detector once
        submitted); what only a recognition search reads is refused by name."""
        from vidistill.trainers.detection.train import DetectorTrainConfig
        from vidistill.trainers.schema import apply_overrides, parse

        for name in ("prepared", "train_config", "teacher"):
            if getattr(self, name) is not None:
                raise ConfigError(name, f"a detection search reads snippet features (--features) and detector "
                                        f"fields (--set, e.g. teachers=[...]); remove --{name.replace('_', '-')}")
        if self.resolved_detector is None:
            if not self.root or not self.features:
                raise ConfigError("features" if self.root else "root", "a detection search needs --root (the "
                                  "annotated set) and --features (the feature folders, as train-detector's)")
            data = {"root": self.root, "features": list(self.features),
                    **({"layout": self.layout} if self.layout else {})}
            # (the device follows trial_gpus when the search runs)
            self.resolved_detector = parse(DetectorTrainConfig, apply_overrides(data, list(self.set))).model_dump()
        try:
            return parse(DetectorTrainConfig, self.resolved_detector)
        except ConfigError as error:
            raise error.under("resolved_detector") from None


def tune_resources(config: TuneJobConfig) -> JobResources:
    """All the Train workers of `max_concurrent` trials (detection: one process per trial holds
    them); the trials' drivers ask for nothing."""
    if config.task == "detection":
        return JobResources(config.max_concurrent, cpus_per_worker=config.trial_cpus,
                            gpus_per_worker=config.trial_gpus)
    workers = worker_resources(config.resolved, cpus=config.trial_cpus, gpus=config.trial_gpus,
                               concurrent=config.max_concurrent)
    return JobResources(workers.num_workers, cpus_per_worker=workers.cpus, gpus_per_worker=workers.gpus)


def run_tune(config: TuneJobConfig) -> None:
    from vidistill.platform.kinds.driver import current_job, previous_mlflow_run, report_mlflow_run
    from vidistill.trainers.tune import parse_space, tune, tune_detector

    job = current_job()
    name = f"tune-job-{job.job_id}" if job is not None else f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    common = dict(name=name, max_concurrent=config.max_concurrent, grace_period=config.grace_period,
                  reduction_factor=config.reduction_factor, seed=config.seed, run_id=previous_mlflow_run(),
                  on_run=report_mlflow_run, alias=job_alias(job.job_id) if job is not None else None)
    space = parse_space(config.resolved_space, config.task)
    if config.task == "detection":
        result = tune_detector(config.detector_config(), space, config.trials, cpus_per_trial=config.trial_cpus,
                               gpus_per_trial=config.trial_gpus, **common)
        metric = "val mAP"
    else:
        result = tune(config.resolved, space, config.trials, cpus_per_worker=config.trial_cpus,
                      gpus_per_worker=config.trial_gpus, **common)
        metric = "val accuracy"
    print(f"[vidistill] tuning run {result.run_id}: best trial {result.best.trial_id} "
          f"({metric} {result.best.val_metric:.3f}) registered as {result.model_uri}"
          + (f" (alias @{job_alias(job.job_id)})" if job is not None else ""), flush=True)


TUNE = register(JobKind(
    name="tune",
    summary="Search loss weights, attention variant, lr and Gumbel temperature with Ray Tune and ASHA "
            "(--task detection: a detector's lr, loss weights, fusion window).",
    config_class=TuneJobConfig,
    run=run_tune,
    resources=tune_resources,
))

__all__ = ["TuneJobConfig", "run_tune", "tune_resources"]
