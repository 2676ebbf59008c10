"""Train a temporal action detector on snippet features; evaluate it; register it.

    result = train_detector(DetectorTrainConfig(root=..., features=[rgb_dir, flow_dir]))

Features of one stream (one folder) or several (concatenated along channels: two-stream);
the annotations come from a detection layout (thumos14 / activitynet / charades). Seconds
map to the feature grid as in features.py: snippet i is centred at
(i * stride + snippet_length / 2) / fps. The loop is short on purpose (nanoGPT's manner):
AdamW, linear warm-up then cosine decay, gradient clipping, one MLflow run, the model
registered at the end with what it was trained on as tags, so `evaluate-detectors` needs
only its registry URI.

Distillation (`method`, `teachers`, `method_options`): the method of
trainers/detection/methods builds the student and names its loss terms; each teacher stream's
features are loaded beside the student's (same videos, same crop) and its frozen detector, if
given, is run on them without gradient. The student is evaluated and registered on its own
features only: a distilled RGB detector needs no flow at inference.

Validation (`val_fraction`, `val_seed`): a seeded slice of the training subset's videos is held
out, never trained on, and scored after every epoch (val_mAP: the average segment mAP of the
protocol, or frame mAP for a dense head; val_loss: the detection loss of the inference output,
the same quantity whatever the method's loss weights, so trials of a search compare). Tune
(`trainers/tune.py`) selects on these; the test subset is only the final evaluation.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from vidistill.datasets.detection.annotations import read_detection_set
from vidistill.datasets.layouts import DatasetConfig
from vidistill.trainers.detection.features import load_manifest
from vidistill.trainers.detection.methods import StudentSpec, TeacherBatch, get_detection_method
from vidistill.trainers.detection.metrics import PROTOCOLS, Detection, SegmentMAP, frame_map, segment_map
from vidistill.trainers.detection.models import Detector, decode_segments, list_heads, list_necks, point_targets, soft_nms
from vidistill.trainers.schema import ConfigError, Schema

TAG_DATA = "vidistill.detection_data"  # JSON: root, layout, features, subsets, protocol
TAG_STREAMS = "vidistill.streams"
TAG_METHOD = "vidistill.detection_method"
TAG_TEACHERS = "vidistill.teachers"  # JSON: the teacher streams a distilled detector learnt from
TAG_LOGGED_MODEL = "vidistill.logged_model"  # on a tune trial's run: its logged, unregistered model


class TeacherStream(Schema):
    """A teacher of a distillation method: its features, optionally its frozen detector, a weight."""

    features: str = Field(description="feature folder of the teacher stream (e.g. flow), same grid as the student's")
    detector: str | None = Field(None, description="frozen teacher detector trained on those features, models:/NAME/VERSION")
    weight: float = Field(1.0, ge=0, description="weight the method applies to this teacher's terms")


class DetectorTrainConfig(Schema):
    """One detector's training; `vidistill submit-job train-detector --set KEY=VALUE` overrides these."""

    root: str = Field(description="annotated data set folder")
    layout: str = Field("thumos14", description="thumos14 | activitynet | charades")
    annotations: str | None = Field(None, description="annotation file or folder, if not the layout's usual place")
    features: list[str] = Field(description="feature folders, one per stream; two or more are concatenated")
    train_subset: str = Field("val", description="subset the detector trains on (THUMOS14 trains on val)")
    test_subset: str = Field("test", description="subset the detector is evaluated on")
    head: str = Field("actionformer", description="registered head: actionformer (segments) | dense (frame labels)")
    neck: str = Field("identity", description="registered neck: identity | fpn")
    dim: int = Field(128, ge=8, description="width of the projection and encoder")
    levels: int = Field(4, ge=1, le=8, description="levels of the temporal pyramid (stride 2 each)")
    stem: int = Field(2, ge=0, description="local-attention layers before the pyramid")
    heads: int = Field(4, ge=1, description="attention heads (dim must be a multiple)")
    window: int = Field(9, ge=1, description="local attention window, in snippets")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the encoder")
    epochs: int = Field(30, ge=1, description="passes over the training videos")
    batch_size: int = Field(4, ge=1, description="videos per step")
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate (linear warm-up, then cosine decay)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(20, ge=0, description="steps of linear learning-rate warm-up")
    max_length: int = Field(256, ge=8, description="training crop in snippets (longer videos: a random window)")
    seed: int = Field(0, description="seed of the initialisation, the video order and the crops")
    device: str = Field("cpu", description="cpu | cuda (submit-job sets it from --gpus)")
    protocol: str = Field("thumos14", description="tIoU set of the evaluation: thumos14 | activitynet | low")
    experiment: str = Field("vidistill-detection", description="MLflow experiment of the run")
    name: str | None = Field(None, description="registered model name [default: <data>-detector-<streams>]")
    registry: bool = Field(True, description="log to MLflow and register the model")
    method: str = Field("none", description="detection distillation method (trainers/detection/methods); "
                                            "none: the plain detector")
    teachers: list[TeacherStream] = Field(default_factory=list, description=(
        "teacher streams of the method, e.g. [{features: FLOW_DIR, detector: 'models:/D-detector-flow/1'}]"))
    method_options: dict = Field(default_factory=dict, description="the method's options (its own schema)")
    val_fraction: float = Field(0.0, ge=0, lt=1, description=(
        "share of the training subset's videos held out for validation (val_mAP, val_loss per epoch; "
        "what a tune search selects on); 0: train on all of them"))
    val_seed: int = Field(0, description="seed of the held-out validation videos (the same for every trial)")

    def check(self) -> None:
        if not self.features:
            raise ConfigError("features", "give at least one feature folder")
        try:
            method = get_detection_method(self.method)
        except KeyError as error:
            raise ConfigError("method", error.args[0]) from None
        method.parse_options(self.method_options)
        if len(self.teachers) < method.min_teachers:
            raise ConfigError("teachers", f"method {self.method!r} needs {method.min_teachers} teacher stream(s), "
                                          f"got {len(self.teachers)}; add e.g. teachers=[{{features: FLOW_DIR, "
                                          "detector: models:/NAME/VERSION}]")
        for i, t in enumerate(self.teachers):
            if t.detector is not None and not t.detector.startswith("models:/"):
                raise ConfigError(f"teachers.{i}.detector", f"{t.detector!r} is not a registry URI; "
                                                           "use models:/NAME/VERSION or models:/NAME@ALIAS")
        if method.needs_teacher_detector and not all(t.detector for t in self.teachers):
            raise ConfigError("teachers", f"method {self.method!r} needs a frozen teacher detector on every "
                                          "teacher stream (detector: models:/NAME/VERSION)")
        if self.head not in list_heads():
            raise ConfigError("head", f"unknown {self.head!r}; registered: {', '.join(list_heads())}")
        if self.neck not in list_necks():
            raise ConfigError("neck", f"unknown {self.neck!r}; registered: {', '.join(list_necks())}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError("protocol", f"unknown {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.dim % self.heads:
            raise ConfigError("dim", f"{self.dim} must be a multiple of heads {self.heads}")


@dataclass
class FeatureVideo:
    video_id: str
    features: np.ndarray  # (T, C)
    segments: np.ndarray  # (N, 2) in snippet units
    labels: np.ndarray  # (N,)
    seconds: np.ndarray  # (N, 2) the annotation in seconds
    duration: float


@dataclass
class DetectionData:
    classes: tuple[str, ...]
    videos: list[FeatureVideo]
    grid: dict  # fps, stride, snippet_length
    streams: str  # rgb, flow, rgb+flow...
    missing: list[str] = field(default_factory=list)  # annotated videos without features
    widths: tuple[int, ...] = ()  # channels of each feature folder, in order


def load_detection_data(root: str, layout: str, features: list[str], subset: str,
                        annotations: str | None = None) -> DetectionData:
    found = read_detection_set(DatasetConfig(root=root, layout=layout, annotations=annotations), subset)
    manifests = [load_manifest(folder) for folder in features]
    grid = {k: manifests[0]["settings"][k] for k in ("fps", "stride", "snippet_length")}
    for folder, m in zip(features[1:], manifests[1:]):
        other = {k: m["settings"][k] for k in grid}
        if other != grid:
            raise ValueError(f"{folder}: feature grid {other} differs from {features[0]}'s {grid}; "
                             "streams must share fps, stride and snippet length to be concatenated")
    fps, stride, length = grid["fps"], grid["stride"], grid["snippet_length"]
    videos, missing = [], []
    for video in found.videos:
        if not all(video.video_id in m["videos"] for m in manifests):
            missing.append(video.video_id)
            continue
        arrays = [np.load(Path(folder) / f"{video.video_id}.npy") for folder in features]
        t = min(len(a) for a in arrays)
        x = np.concatenate([a[:t] for a in arrays], axis=1)
        seconds = np.array([[s.start, s.end] for s in video.segments], dtype=np.float32).reshape(-1, 2)
        frames = manifests[0]["videos"][video.video_id]["frames"]
        videos.append(FeatureVideo(video.video_id, x, (seconds * fps - length / 2) / stride,
                                   np.array([s.label for s in video.segments], dtype=np.int64), seconds,
                                   video.duration or frames / fps))
    if not videos:
        raise ValueError(f"no video of subset {subset!r} of {root} has features in {', '.join(features)}; "
                         "run extract-features first")
    streams = "+".join(m["settings"]["modality"] for m in manifests)
    widths = tuple(int(np.load(Path(folder) / f"{videos[0].video_id}.npy", mmap_mode="r").shape[1])
                   for folder in features)
    return DetectionData(found.classes, videos, grid, streams, missing, widths)


def frame_labels(video: FeatureVideo, length: int, num_classes: int) -> torch.Tensor:
    """(length, classes): snippet i is positive for every action whose span holds its centre."""
    t = torch.arange(length, dtype=torch.float32)[:, None]
    labels = torch.zeros(length, num_classes)
    for (a, b), c in zip(video.segments, video.labels):
        labels[:, c] = torch.maximum(labels[:, c], ((t >= a) & (t <= b)).float()[:, 0])
    return labels


def make_batch(videos: list[FeatureVideo], model: Detector, num_classes: int, max_length: int | None,
               rng: random.Random | None = None):
    """Padded (B, C, T) features, (B, T) mask and per-video targets; training crops to max_length."""
    crops = []
    for v in videos:
        start = 0
        if max_length is not None and len(v.features) > max_length:
            start = rng.randrange(len(v.features) - max_length + 1)
        end = len(v.features) if max_length is None else min(len(v.features), start + max_length)
        keep = (v.segments[:, 1] > start) & (v.segments[:, 0] < end)
        segments = np.clip(v.segments[keep] - start, 0, end - start - 1)
        crops.append((v.features[start:end], segments, v.labels[keep]))
    multiple = model.length_multiple
    length = math.ceil(max(len(f) for f, _, _ in crops) / multiple) * multiple
    x = torch.zeros(len(crops), crops[0][0].shape[1], length)
    mask = torch.zeros(len(crops), length, dtype=torch.bool)
    targets = []
    for i, (f, segments, labels) in enumerate(crops):
        x[i, :, : len(f)] = torch.from_numpy(f).T
        mask[i, : len(f)] = True
        if model.kind == "dense":
            targets.append(frame_labels(FeatureVideo("", f, segments, labels, segments, 0.0), length, num_classes))
        else:
            targets.append(point_targets(torch.from_numpy(segments).float(), torch.from_numpy(labels), length,
                                         model.levels, num_classes))
    return x, mask, targets


@torch.no_grad()
def predict(model: Detector, data: DetectionData, device: str = "cpu") -> tuple[list[Detection], dict]:
    """Detections in seconds (after Soft-NMS) over every video; for a dense head, frame scores."""
    model.eval().to(device)
    fps, stride, length = data.grid["fps"], data.grid["stride"], data.grid["snippet_length"]
    detections: list[Detection] = []
    frames: dict[str, np.ndarray] = {}
    for video in data.videos:
        x, mask, _ = make_batch([video], model, len(data.classes), None)
        output = model(x.to(device), mask.to(device))
        if model.kind == "dense":
            frames[video.video_id] = torch.sigmoid(output["frame_logits"][0, : len(video.features)]).cpu().numpy()
            continue
        segs, scores, labels = decode_segments(output, 0, len(video.features))
        segs, scores, labels = soft_nms(segs, scores, labels)
        seconds = ((segs * stride + length / 2) / fps).clamp(0, video.duration)
        detections += [Detection(video.video_id, float(s), float(e), int(c), float(p))
                       for (s, e), p, c in zip(seconds.tolist(), scores.tolist(), labels.tolist()) if e > s]
    return detections, frames


def evaluate_detector(model: Detector, data: DetectionData, protocol: str = "thumos14",
                      device: str = "cpu") -> dict:
    """{'segment': SegmentMAP} for a segment head, {'frame_map': x} for a dense one."""
    detections, frames = predict(model, data, device)
    if model.kind == "dense":
        scores = np.concatenate([frames[v.video_id] for v in data.videos])
        targets = np.concatenate([frame_labels(v, len(v.features), len(data.classes)).numpy() for v in data.videos])
        return {"frame_map": frame_map(scores, targets)}
    truth = [Detection(v.video_id, float(a), float(b), int(c)) for v in data.videos
             for (a, b), c in zip(v.seconds, v.labels)]
    return {"segment": segment_map(truth, detections, protocol)}


@dataclass
class DetectorResult:
    run_id: str | None
    model: Detector | None  # None from train_detector_on_ray: the trained detector is in the registry
    metrics: dict
    segment: SegmentMAP | None
    step_ms: float
    seconds: float
    model_uri: str | None = None
    registered_name: str | None = None
    model_version: str | None = None


def detector_name(config: DetectorTrainConfig, streams: str) -> str:
    """The registered name: config.name, or <data>-detector-<streams>[-<method>]."""
    suffix = "" if config.method == "none" else f"-{config.method}"
    return config.name or f"{Path(config.root).name}-detector-{streams}{suffix}"


def split_validation(videos: list[FeatureVideo], fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): `fraction` of the videos (at least one when fraction > 0), drawn with `seed`.

    Not class-stratified, unlike recognition's slice: an untrimmed video holds several classes."""
    if fraction <= 0:
        return list(videos), []
    count = max(1, round(fraction * len(videos)))
    if count >= len(videos):
        raise ValueError(f"val_fraction {fraction} of {len(videos)} training videos leaves none to train on; "
                         "lower val_fraction or add videos")
    held = set(random.Random(seed).sample(sorted(v.video_id for v in videos), count))
    return [v for v in videos if v.video_id not in held], [v for v in videos if v.video_id in held]


@torch.no_grad()
def validate(model, data: DetectionData, protocol: str, device: str) -> dict:
    """val_mAP (segment average, or frame mAP) and val_loss (detection loss of the inference output)."""
    from vidistill.trainers.detection.models import detection_loss

    found = evaluate_detector(model, data, protocol, device)
    losses = []
    for video in data.videos:
        x, mask, targets = make_batch([video], model, len(data.classes), None)
        losses.append(float(detection_loss(model(x.to(device), mask.to(device)), targets)[0]))
    score = found["segment"].average if "segment" in found else found["frame_map"]
    return {"val_mAP": float(score), "val_loss": float(np.mean(losses))}


def train_detector(config: DetectorTrainConfig, on_run=None, parent_run_id: str | None = None,
                   run_id: str | None = None, on_epoch=None, register: bool = True) -> DetectorResult:
    """Train, evaluate and register one detector in this process; `run_id`: log into that MLflow
    run (train_detector_on_ray opens it in the driver) instead of opening one. `on_epoch(metrics)`
    gets each epoch's {epoch, train_loss, val_mAP, val_loss} (validation only with val_fraction);
    `register=False` logs the model to its run (tag vidistill.logged_model) without registering it:
    a tune trial, of which only the best is registered."""
    config.check()  # a config built directly, not by schema.parse, gets its cross-field rules here
    began = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    method = get_detection_method(config.method)
    options = method.parse_options(config.method_options)
    # Teacher features ride along as extra channels, so make_batch crops them with the student's.
    train = load_detection_data(config.root, config.layout, config.features + [t.features for t in config.teachers],
                                config.train_subset, config.annotations)
    test = load_detection_data(config.root, config.layout, config.features, config.test_subset, config.annotations)
    classes = len(train.classes)
    train.videos, held_out = split_validation(train.videos, config.val_fraction, config.val_seed)
    # Validation reads the student's own features, as inference does (the teacher channels cut off).
    val = DetectionData(train.classes, [FeatureVideo(v.video_id, v.features[:, : sum(test.widths)], v.segments,
                                                     v.labels, v.seconds, v.duration) for v in held_out],
                        train.grid, test.streams, widths=test.widths)
    teachers = [_frozen_teacher(t.detector, config.device) for t in config.teachers]
    split = [sum(test.widths), *train.widths[len(config.features):]]
    detector = dict(dim=config.dim, levels=config.levels, stem=config.stem, heads=config.heads,
                    window=config.window, neck=config.neck, head=config.head, dropout=config.dropout)
    spec = StudentSpec(split[0], classes, detector, tuple(split[1:]),
                       tuple(t.settings["dim"] if t is not None else None for t in teachers))
    model = method.build(spec, options).to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train.videos) / config.batch_size)
    max_steps = config.epochs * steps_per_epoch

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))

    name = detector_name(config, test.streams)
    client = None
    if config.registry and run_id is not None:
        from vidistill.trainers import tracking

        client = tracking.configure()
    elif config.registry:
        client, run_id = _open_run(config, name, test, parent_run_id)
        if on_run is not None:
            on_run(run_id)
    step, step_seconds = 0, 0.0
    for epoch in range(config.epochs):
        model.train()
        order = list(train.videos)
        rng.shuffle(order)
        losses, terms_sum = [], {}
        for first in range(0, len(order), config.batch_size):
            tick = time.perf_counter()
            x, mask, targets = make_batch(order[first:first + config.batch_size], model, classes,
                                          config.max_length, rng)
            x, mask = x.to(config.device), mask.to(config.device)
            x, *teacher_x = x.split(split, dim=1)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            views = [_teacher_batch(f, mask, stream.weight, frozen)
                     for f, stream, frozen in zip(teacher_x, config.teachers, teachers)]
            terms = method.loss(model(x, mask), targets, views, options)
            loss = sum(terms.values())
            for key, value in terms.items():
                terms_sum[key] = terms_sum.get(key, 0.0) + float(value.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step_seconds += time.perf_counter() - tick
            losses.append(float(loss.detach()))
            step += 1
        epoch_metrics = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if val.videos:
            epoch_metrics.update(validate(model, val, config.protocol, config.device))
        if client is not None:
            for key, value in epoch_metrics.items():
                if key != "epoch":
                    client.log_metric(run_id, key, value, step=epoch)
            for key, value in terms_sum.items():
                client.log_metric(run_id, f"train_{key}", value / len(losses), step=epoch)
        if on_epoch is not None:
            on_epoch(epoch_metrics)
    result_metrics = evaluate_detector(model, test, config.protocol, config.device)
    segment = result_metrics.get("segment")
    metrics = segment.metrics() if segment else {"frame_mAP": result_metrics["frame_map"]}
    step_ms = 1000 * step_seconds / max(step, 1)
    metrics["step_ms"] = step_ms
    result = DetectorResult(run_id, model, metrics, segment, step_ms, time.perf_counter() - began)
    if client is not None:
        from vidistill.trainers import tracking

        for key, value in metrics.items():
            client.log_metric(run_id, key.replace("@", "_at_"), value)
        if segment is not None:
            client.log_dict(run_id, segment.to_dict(), "segment_map.json")
        if register:
            _register(client, run_id, tracking.log_model(run_id, model), name, config, test.streams, result)
        else:
            client.set_tag(run_id, TAG_LOGGED_MODEL, tracking.log_model(run_id, model))
        client.set_terminated(run_id)
    result.seconds = time.perf_counter() - began
    return result


def train_detector_on_ray(config: DetectorTrainConfig, on_run=None) -> DetectorResult:
    """train_detector in one Ray Train worker: the platform's way (the train-detector job), so the
    worker holds the job's CPU or GPU where Ray placed it, like every other training.

    The driver checks the data and opens the MLflow run first (`on_run` records it on the queue
    job at once); the worker trains, evaluates and registers. One worker is a choice: a batch is
    a few whole videos of snippet features and an epoch takes seconds, so data parallelism would
    buy nothing. The result is read back from MLflow: its `model` is None (the trained detector is
    in the registry), and with `registry` off it holds no metrics either.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from vidistill.datasets.ray_session import connect_ray
    from vidistill.trainers import tracking
    from vidistill.trainers.detection.methods import MODULES_VARIABLE

    config.check()
    began = time.perf_counter()
    get_detection_method(config.method)  # an unknown method fails here, before a worker is placed
    test = load_detection_data(config.root, config.layout, config.features, config.test_subset, config.annotations)
    run_id = None
    if config.registry:
        name = detector_name(config, test.streams)
        client, run_id = _open_run(config, name, test, None)
        if on_run is not None:
            on_run(run_id)
    env = {"VIDISTILL_HOME": str(tracking.vidistill_home()), "MLFLOW_TRACKING_URI": tracking.tracking_uri(),
           **{k: os.environ[k] for k in ("VIDISTILL_METHOD_MODULES", MODULES_VARIABLE) if os.environ.get(k)}}
    connect_ray()
    trainer = TorchTrainer(
        _detector_worker, train_loop_config={"config": config, "run_id": run_id, "env": env},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=config.device.startswith("cuda")),
        run_config=RunConfig(name=f"detector-{run_id or int(time.time())}",
                             storage_path=str(tracking.vidistill_home() / "ray_results"),
                             failure_config=FailureConfig(max_failures=0)))
    try:
        result = trainer.fit()
        if result.error:
            raise result.error
    except BaseException:
        if run_id is not None:
            client.set_terminated(run_id, status="FAILED")
        raise
    result = DetectorResult(run_id, None, {}, None, float("nan"), time.perf_counter() - began)
    if run_id is not None:  # what the worker logged and registered, read back from MLflow
        run = client.get_run(run_id)
        result.metrics = {k.replace("_at_", "@"): v for k, v in sorted(run.data.metrics.items())
                          if not k.startswith("train_")}
        result.step_ms = result.metrics.get("step_ms", float("nan"))
        versions = client.search_model_versions(f"run_id = '{run_id}'")
        if versions:
            result.registered_name, result.model_version = versions[0].name, str(versions[0].version)
            result.model_uri = f"models:/{result.registered_name}/{result.model_version}"
    return result


def _detector_worker(args: dict) -> None:
    """The Ray Train worker of train_detector_on_ray: train_detector into the driver's run."""
    os.environ.update(args["env"])  # the driver's stores, not those the Ray cluster was started with
    train_detector(args["config"], run_id=args["run_id"])


def _frozen_teacher(uri: str | None, device: str):
    """The teacher detector, loaded once, eval mode, no gradient: never updated nor re-registered."""
    if uri is None:
        return None
    teacher, _ = load_detector(uri, device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def _teacher_batch(features: torch.Tensor, mask: torch.Tensor, weight: float, detector) -> TeacherBatch:
    if detector is None:
        return TeacherBatch(features, mask, weight)
    output = detector(features, mask)
    return TeacherBatch(features, mask, weight, detector, output["embedding"], output)


def data_tag(config: DetectorTrainConfig) -> dict:
    return {"root": str(Path(config.root).resolve()), "layout": config.layout, "annotations": config.annotations,
            "features": [str(Path(f).resolve()) for f in config.features], "test_subset": config.test_subset,
            "protocol": config.protocol}


def _open_run(config: DetectorTrainConfig, name: str, train: DetectionData, parent_run_id: str | None):
    from vidistill.trainers import tracking

    client = tracking.configure()
    tags = {tracking.TAG_ROLE: "detector", TAG_STREAMS: train.streams, tracking.TAG_CODE: tracking.code_version(),
            "vidistill.feature_models": json.dumps([load_manifest(f)["settings"]["model"] for f in config.features]),
            TAG_METHOD: config.method, TAG_TEACHERS: json.dumps([t.model_dump() for t in config.teachers])}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(tracking.experiment_id(client, config.experiment), run_name=name, tags=tags)
    tracking.log_params(client, run.info.run_id, {k: json.dumps(v) if isinstance(v, (list, dict)) else v
                                                  for k, v in config.model_dump().items()})
    return client, run.info.run_id


def register_detector(client, run_id: str, model_uri: str, name: str, config: DetectorTrainConfig, streams: str,
                      *, alias: str | None = None, tags: dict | None = None):
    """The one way a detector enters the registry: a model logged to its run, with what it was
    trained on as tags (so evaluate-detectors needs only its URI), plus `tags` and `alias`."""
    import mlflow

    from vidistill.trainers import tracking

    version = mlflow.register_model(model_uri, name, tags={
        tracking.TAG_ROLE: "detector", TAG_STREAMS: streams, TAG_DATA: json.dumps(data_tag(config)),
        tracking.TAG_CODE: tracking.code_version(), "vidistill.run_id": run_id, TAG_METHOD: config.method,
        TAG_TEACHERS: json.dumps([t.model_dump() for t in config.teachers]),
        **{k: "" if v is None else str(v) for k, v in (tags or {}).items()}})
    client.set_registered_model_tag(name, tracking.TAG_ROLE, "detector")
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def _register(client, run_id: str, model_uri: str, name: str, config: DetectorTrainConfig, streams: str,
              result: DetectorResult) -> None:
    version = register_detector(client, run_id, model_uri, name, config, streams)
    result.registered_name, result.model_version = name, str(version.version)
    result.model_uri = f"models:/{name}/{version.version}"


def load_detector(uri: str, device: str = "cpu") -> tuple[Detector, dict]:
    """A registered detector and the data it was trained on (from its version's tags)."""
    import mlflow

    from vidistill.trainers import tracking

    tracking.configure()
    entry = tracking.resolve_model_version(uri)
    if entry.tags.get(tracking.TAG_ROLE) != "detector":
        raise ValueError(f"{uri} is not a detector (role {entry.tags.get(tracking.TAG_ROLE)!r})")
    model = mlflow.pytorch.load_model(f"models:/{entry.name}/{entry.version}", map_location=device)
    return model.eval(), json.loads(entry.tags[TAG_DATA])
