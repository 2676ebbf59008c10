"""The `evaluate` kind: video-level accuracy and speed of registered models, and their fusion.

Runs `vidistill.trainers.evaluate.evaluate` on the test subset. With two or more models the
clips are paired and their late fusion is reported too (Tables 2 and 3: RGB + flow, student
+ flow teacher). The data section comes from a training config file and/or dotted `data.*`
overrides, resolved at submission like the training kinds'.
"""
from __future__ import annotations

from pydantic import Field

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError, Schema
from vidistill.platform.kinds.training import NOT_AN_OPTION, resolve_train_config
from vidistill.trainers.config import DataConfig, TrainConfig


class EvaluateJobConfig(Schema):
    models: list[str] = Field(description="registry URI of a model to evaluate, models:/NAME/VERSION or models:/NAME@ALIAS; "
                "two or more are also fused")
    prepared: str | None = Field(None, description="prepared data set folder; sets data.prepared")
    root: str | None = Field(None, description="source data set folder (its test list); sets data.root")
    layout: str | None = Field(None, description="the source's layout; sets data.layout")
    train_config: str | None = Field(None, description="YAML/TOML training config whose data section to use (clip length, test clips per video...)")
    set: list[str] = Field(default_factory=list, description="dotted override of the data section, e.g. data.test_clips_per_video=10")
    fuse: list[str] = Field(default_factory=list, description="models to fuse, as 0-based positions in --models joined by +, e.g. 0+2 "
                "[default: all of them, when two or more]")
    batch_size: int = Field(8, description="clips per forward pass")
    gpus: float = Field(0.0, description="GPUs for the evaluation (0: CPU)")
    resolved: DataConfig | None = Field(None, json_schema_extra=NOT_AN_OPTION, description=
        "filled in at submission: the data section the job evaluates on")

    def check(self) -> None:
        if not self.models:
            raise ConfigError("models", "give at least one registry URI, e.g. --models models:/ucf101-student-rgb/1")
        for uri in self.models:
            if not uri.startswith("models:/") or len(uri) <= len("models:/"):
                raise ConfigError("models", f"{uri!r} is not a registry URI; "
                                            "use models:/NAME/VERSION or models:/NAME@ALIAS")
        for group in self.fuse:
            try:
                positions = [int(part) for part in group.split("+")]
            except ValueError:
                positions = []
            if len(positions) < 2 or not all(0 <= p < len(self.models) for p in positions):
                raise ConfigError("fuse", f"{group!r}: give two or more positions in --models (0 to "
                                          f"{len(self.models) - 1}) joined by +, e.g. 0+1")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {self.batch_size}")
        if self.gpus < 0 or self.gpus > 1:
            raise ConfigError("gpus", f"one evaluation uses at most one GPU, got {self.gpus}")
        if self.resolved is None:
            others = [item for item in self.set if not item.startswith("data.")]
            if others:
                raise ConfigError("set", f"{others[0]!r}: evaluation takes data.* overrides only")
            shortcuts = {"data.prepared": self.prepared, "data.root": self.root, "data.layout": self.layout}
            overrides = [f"{k}={v}" for k, v in shortcuts.items() if v is not None] + list(self.set)
            # The data section is checked as part of a whole training config (role rgb: no teacher).
            config = resolve_train_config(self.train_config, ["role=rgb", *overrides])
            self.resolved = config.data
        else:  # the data section is checked as part of a whole training config (role rgb: no teacher)
            try:
                TrainConfig(role="rgb", data=self.resolved).check()
            except ConfigError as error:
                raise error.under("resolved") from None

    def fusions(self) -> list[list[str]] | None:
        if not self.fuse:
            return None
        return [[self.models[int(part)] for part in group.split("+")] for group in self.fuse]

    def data_config(self) -> DataConfig:
        return self.resolved


def run_evaluation(config: EvaluateJobConfig) -> None:
    from vidistill.platform.kinds.driver import report_mlflow_run
    from vidistill.trainers.evaluate import evaluate

    device = "cuda" if config.gpus > 0 else "cpu"
    results = evaluate(config.models, config.data_config(), batch_size=config.batch_size, device=device,
                       on_run=report_mlflow_run, fusions=config.fusions())
    for name, metrics in results.items():
        speed = f"{metrics.clips_per_second:.1f} clips/s" if metrics.clips_per_second else "-"
        if metrics.clips_per_second_with_flow:
            speed += f" ({metrics.clips_per_second_with_flow:.2f} with flow extraction)"
        print(f"[vidistill] {name}: top-1 {metrics.top1:.3f}, mean class accuracy "
              f"{metrics.mean_class_accuracy:.3f}, {speed}", flush=True)


EVALUATE = register(JobKind(
    name="evaluate",
    summary="Evaluate registered models on the test videos (accuracy, speed, two-stream fusion).",
    config_class=EvaluateJobConfig,
    run=run_evaluation,
    # The driver is the evaluation: it runs in-process, so it is the job's one worker.
    resources=lambda c: JobResources(1, cpus_per_worker=1.0, gpus_per_worker=c.gpus),
    driver_is_worker=True,
))
