"""The detection kinds: `extract-features`, `train-detector` and `evaluate-detectors`.

Each runs in its driver (one worker: the job's CPUs/GPU): the feature models and the
detectors are small next to recognition training, so no Ray Train workers are started.
Configs are checked at submission with the trainers' pydantic models, so a wrong field is
refused by `submit-job` with its name; a feature model may be an alias that a job still
running will create (`models:/NAME@job-12`), as in `vidistill pipeline`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError
from vidistill.platform.kinds.training import job_alias


def _pydantic(model_class, data: dict, alias: dict | None = None):
    """The trainers' config, or ConfigError naming the first bad field."""
    from pydantic import ValidationError

    try:
        return model_class.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "set"
        raise ConfigError((alias or {}).get(name, name), first["msg"]) from None


def _overrides(items: list[str]) -> dict:
    """KEY=VALUE strings -> values parsed as YAML scalars (numbers, booleans, lists)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("set", f"{item!r} is not KEY=VALUE, e.g. epochs=20")
        out[key.strip()] = yaml.safe_load(value)
    return out


@dataclass
class ExtractFeaturesJobConfig:
    prepared: str = field(metadata={"help": "prepared frames/flow folder (the `prepare` job's out)"})
    out: str = field(metadata={"help": "folder for <video>.npy and features.json (rerun into it to resume)"})
    model: str = field(metadata={"help": "feature model, models:/NAME/VERSION or models:/NAME@ALIAS"})
    snippet_length: int = field(default=16, metadata={"help": "frames per snippet (THUMOS14 I3D convention: 16)"})
    stride: int = field(default=4, metadata={"help": "frames between snippet starts"})
    input_size: int | None = field(default=None, metadata={"help": "centre crop side [default: whole frame]"})
    chunk_snippets: int = field(default=32, metadata={"help": "snippets per forward pass (bounds memory)"})
    gpus: float = field(default=0.0, metadata={"help": "GPUs (0: CPU; on a GPU bf16 autocast)"})

    def feature_config(self):
        from vidistill.trainers.detection.features import FeatureConfig

        return _pydantic(FeatureConfig, {
            "prepared": self.prepared, "out": self.out, "model": self.model, "snippet_length": self.snippet_length,
            "stride": self.stride, "input_size": self.input_size, "chunk_snippets": self.chunk_snippets,
            "device": "cuda" if self.gpus > 0 else "cpu"})

    def validate(self) -> None:
        if self.gpus < 0 or self.gpus > 1:
            raise ConfigError("gpus", f"one extraction uses at most one GPU, got {self.gpus}")
        self.feature_config()


def run_extract(config: ExtractFeaturesJobConfig) -> None:
    from vidistill.platform.kinds.driver import report_mlflow_run
    from vidistill.trainers.detection.features import extract_features, log_feature_run

    features = config.feature_config()
    result = extract_features(features, progress=lambda done, total, vid: print(
        f"[vidistill] features {done}/{total} {vid}", flush=True))
    report_mlflow_run(log_feature_run(features, result))
    print(f"[vidistill] {len(result.extracted)} extracted, {len(result.skipped)} done before, "
          f"{len(result.failed)} failed in {result.seconds:.1f} s -> {result.out}", flush=True)
    for video_id, reason in result.failed.items():
        print(f"[vidistill] skipped {video_id}: {reason}", flush=True)
    if not result.extracted and not result.skipped:
        raise SystemExit("no video's features could be extracted; see the reasons above")


@dataclass
class TrainDetectorJobConfig:
    root: str = field(metadata={"help": "annotated data set folder (videos + annotations)"})
    features: list[str] = field(metadata={
        "help": "feature folder(s): one stream, or several concatenated (rgb + flow = two-stream)"})
    layout: str = field(default="thumos14", metadata={"help": "thumos14 | activitynet | charades"})
    name: str | None = field(default=None, metadata={"help": "registered name [default: <data>-detector-<streams>]"})
    set: list[str] = field(default_factory=list, metadata={
        "help": "override of the detector config (vidistill.trainers.detection.train.DetectorTrainConfig), "
                "e.g. epochs=40, head=dense, neck=fpn, dim=256"})
    gpus: float = field(default=0.0, metadata={"help": "GPUs (0: CPU)"})

    def train_config(self):
        from vidistill.trainers.detection.train import DetectorTrainConfig

        data = {"root": self.root, "features": self.features, "layout": self.layout, "name": self.name,
                "device": "cuda" if self.gpus > 0 else "cpu", **_overrides(self.set)}
        return _pydantic(DetectorTrainConfig, data)

    def validate(self) -> None:
        self.train_config()


def run_train_detector(config: TrainDetectorJobConfig) -> None:
    from vidistill.platform.kinds.driver import current_job, report_mlflow_run
    from vidistill.trainers import tracking
    from vidistill.trainers.detection.train import train_detector

    result = train_detector(config.train_config(), on_run=report_mlflow_run)
    job = current_job()
    if job is not None and result.model_version is not None:
        tracking.configure().set_registered_model_alias(result.registered_name, job_alias(job.job_id),
                                                        result.model_version)
    print(f"[vidistill] {result.model_uri}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
          + f" ({result.seconds:.0f} s)", flush=True)


@dataclass
class EvaluateDetectorsJobConfig:
    models: list[str] = field(metadata={"help": "registered detectors, models:/NAME/VERSION or @ALIAS"})
    protocol: str = field(default="thumos14", metadata={
        "help": "tIoU set: thumos14 {0.3..0.7}, activitynet 0.5:0.05:0.95, low {0.1..0.5}"})
    gpus: float = field(default=0.0, metadata={"help": "GPUs (0: CPU)"})

    def validate(self) -> None:
        from vidistill.trainers.detection.metrics import PROTOCOLS

        if not self.models or not all(m.startswith("models:/") for m in self.models):
            raise ConfigError("models", "give registry URIs, models:/NAME/VERSION or models:/NAME@ALIAS")
        if self.protocol not in PROTOCOLS:
            raise ConfigError("protocol", f"unknown {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def run_evaluate_detectors(config: EvaluateDetectorsJobConfig) -> None:
    from vidistill.platform.kinds.driver import report_mlflow_run
    from vidistill.trainers.detection.evaluate import evaluate_detectors, format_table

    table, run_id = evaluate_detectors(config.models, config.protocol, "cuda" if config.gpus > 0 else "cpu")
    report_mlflow_run(run_id)
    print(format_table(table), flush=True)


def _one_worker(config) -> JobResources:
    return JobResources(1, cpus_per_worker=1.0, gpus_per_worker=config.gpus)


EXTRACT = register(JobKind(
    name="extract-features", summary="Snippet features (16 frames, stride 4) of a registered model over prepared videos.",
    config_class=ExtractFeaturesJobConfig, run=run_extract, resources=_one_worker, driver_is_worker=True))
TRAIN_DETECTOR = register(JobKind(
    name="train-detector", summary="Train an ActionFormer-style temporal action detector on snippet features.",
    config_class=TrainDetectorJobConfig, run=run_train_detector, resources=_one_worker, driver_is_worker=True))
EVALUATE_DETECTORS = register(JobKind(
    name="evaluate-detectors", summary="Segment mAP per tIoU of registered detectors, in one table.",
    config_class=EvaluateDetectorsJobConfig, run=run_evaluate_detectors, resources=_one_worker,
    driver_is_worker=True))
