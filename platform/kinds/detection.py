"""The detection kinds: `extract-features`, `train-detector` and `evaluate-detectors`.

Each runs in its driver (one worker: the job's CPUs/GPU): the feature models and the
detectors are small next to recognition training, so no Ray Train workers are started.
Configs are `Schema` models whose check() parses the trainers' configs at submission, so a wrong
field is refused by `submit-job` with its name; a feature model may be an alias that a job still
running will create (`models:/NAME@job-12`), as in `vidistill pipeline`.
"""
from __future__ import annotations

from pydantic import Field

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError, Schema
from vidistill.platform.kinds.training import job_alias
from vidistill.trainers.schema import apply_overrides, parse


def _device(gpus: float) -> str:
    return "cuda" if gpus > 0 else "cpu"


class ExtractFeaturesJobConfig(Schema):
    prepared: str = Field(description="prepared frames/flow folder (the `prepare` job's out)")
    out: str = Field(description="folder for <video>.npy and features.json (rerun into it to resume)")
    model: str = Field(description="feature model, models:/NAME/VERSION or models:/NAME@ALIAS")
    snippet_length: int = Field(16, description="frames per snippet (THUMOS14 I3D convention: 16)")
    stride: int = Field(4, description="frames between snippet starts")
    input_size: int | None = Field(None, description="centre crop side [default: whole frame]")
    chunk_snippets: int = Field(32, description="snippets per forward pass (bounds memory)")
    gpus: float = Field(0.0, description="GPUs (0: CPU; on a GPU bf16 autocast)")

    def feature_config(self):
        from vidistill.trainers.detection.features import FeatureConfig

        return parse(FeatureConfig, {**self.model_dump(exclude={"gpus"}), "device": _device(self.gpus)})

    def check(self) -> None:
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


class TrainDetectorJobConfig(Schema):
    root: str = Field(description="annotated data set folder (videos + annotations)")
    features: list[str] = Field(description="feature folder(s): one stream, or several concatenated "
                                            "(rgb + flow = two-stream)")
    layout: str = Field("thumos14", description="thumos14 | activitynet | charades")
    name: str | None = Field(None, description="registered name [default: <data>-detector-<streams>[-<method>]]")
    set: list[str] = Field(default_factory=list, description=(
        "override of the detector config (vidistill.trainers.detection.train.DetectorTrainConfig), "
        "e.g. epochs=40, head=dense, neck=fpn, dim=256; distillation: method=decomposed, "
        "'teachers=[{features: FLOW_DIR, detector: \"models:/NAME/1\"}]', method_options.fusion_window=5"))
    gpus: float = Field(0.0, description="GPUs (0: CPU)")

    def train_config(self):
        from vidistill.trainers.detection.train import DetectorTrainConfig

        data = {"root": self.root, "features": self.features, "layout": self.layout, "name": self.name,
                "device": _device(self.gpus)}
        return parse(DetectorTrainConfig, apply_overrides(data, list(self.set)))

    def check(self) -> None:
        if self.gpus < 0 or self.gpus > 1:
            raise ConfigError("gpus", f"one detector trains on at most one GPU, got {self.gpus}")
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


class EvaluateDetectorsJobConfig(Schema):
    models: list[str] = Field(description="registered detectors, models:/NAME/VERSION or @ALIAS")
    protocol: str = Field("thumos14", description="tIoU set: thumos14 {0.3..0.7}, activitynet 0.5:0.05:0.95, "
                                                  "low {0.1..0.5}")
    gpus: float = Field(0.0, description="GPUs (0: CPU)")

    def check(self) -> None:
        from vidistill.trainers.detection.metrics import PROTOCOLS

        if not self.models or not all(m.startswith("models:/") for m in self.models):
            raise ConfigError("models", "give registry URIs, models:/NAME/VERSION or models:/NAME@ALIAS")
        if self.protocol not in PROTOCOLS:
            raise ConfigError("protocol", f"unknown {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.gpus < 0 or self.gpus > 1:
            raise ConfigError("gpus", f"one evaluation uses at most one GPU, got {self.gpus}")


def run_evaluate_detectors(config: EvaluateDetectorsJobConfig) -> None:
    from vidistill.platform.kinds.driver import report_mlflow_run
    from vidistill.trainers.detection.evaluate import evaluate_detectors, format_table

    table, run_id = evaluate_detectors(config.models, config.protocol, _device(config.gpus))
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
