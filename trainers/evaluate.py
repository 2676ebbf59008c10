"""Evaluation (Sec. 3.6 and 4.1): several full-resolution clips per video, scores aggregated to
the video, mean class accuracy, top-1 and top-5, a confusion matrix, inference speed, and the
late fusion of two streams (RGB + flow I3D, Prob-Distill student + flow teacher; Tables 2, 3).

    report = evaluate(["models:/ucf101-student-rgb/1", "models:/ucf101-teacher-flow/1"], data)

Each model reads what its first layer takes (3 channels: RGB, 2: flow); with two or more
models the clips are paired, so every model sees the same clips, and their fusion is
reported too. A model evaluated alone reads those same clips as well: the loaders plan a
video's clips over its frames that have flow whatever the modality, so "RGB" and
"RGB + flow" rows of separate evaluations compare on one clip plan per video. Results are logged to an MLflow run of their own.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vidistill.datasets.rawframes import Manifest, PreparedSet
from vidistill.trainers import tracking
from vidistill.trainers.config import DataConfig
from vidistill.trainers.data import clip_loader, open_splits
from vidistill.trainers.fusion import late_fusion
from vidistill.trainers.graphs import graphed


@dataclass
class Scores:
    """Video-level class probabilities of one model (or a fusion) on the test videos."""

    name: str
    probabilities: np.ndarray  # (videos, classes): mean of the clips' softmax scores
    labels: np.ndarray  # (videos,)
    clips: int = 0
    model_seconds: float = 0.0  # forward passes only: what inference costs once clips are decoded
    needs_flow: bool = False  # a flow model is among them: each clip first needs its optical flow


@dataclass
class Metrics:
    name: str
    top1: float
    top5: float
    mean_class_accuracy: float
    videos: int
    clips_per_second: float | None
    confusion: list[list[int]]  # rows: true class, columns: predicted
    # What a deployed model pays per clip: flow extraction first (clip_length frame pairs), for
    # the models that read flow. None for RGB-only models, whose figure is clips_per_second.
    clips_per_second_with_flow: float | None = None


@dataclass(frozen=True)
class FlowCost:
    """Seconds to compute the optical flow a clip needs, on this machine's CPU."""

    method: str
    seconds_per_pair: float  # one frame pair at the prepared frame size
    pairs_per_clip: int

    @property
    def seconds_per_clip(self) -> float:
        return self.seconds_per_pair * self.pairs_per_clip


def measure_flow_cost(videos: PreparedSet, method: str, pairs_per_clip: int, pairs: int = 4) -> FlowCost:
    """Time `method` on consecutive frames of the first video (median of `pairs`)."""
    import cv2

    from vidistill.datasets.flow import FlowEstimator

    estimator = FlowEstimator(method)
    video = videos.videos[0]
    frames = [cv2.imread(str(video.directory / videos.templates.rgb_name(i)), cv2.IMREAD_GRAYSCALE)
              for i in range(min(pairs + 1, video.frames))]
    seconds = []
    for previous, following in zip(frames, frames[1:]):
        began = time.perf_counter()
        estimator(previous, following)
        seconds.append(time.perf_counter() - began)
    return FlowCost(method, float(np.median(seconds)), pairs_per_clip)


def metrics_of(scores: Scores, flow: FlowCost | None = None) -> Metrics:
    probs, labels = scores.probabilities, scores.labels
    classes = probs.shape[1]
    ranked = np.argsort(-probs, axis=1)
    top1 = float(np.mean(ranked[:, 0] == labels))
    top5 = float(np.mean([label in row[:5] for row, label in zip(ranked, labels)]))
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    present = confusion.sum(axis=1) > 0  # classes without test videos do not count (Sec. 4.1)
    per_class = np.diag(confusion)[present] / confusion.sum(axis=1)[present]
    speed = scores.clips / scores.model_seconds if scores.model_seconds > 0 else None
    with_flow = None
    if scores.needs_flow and flow is not None and scores.clips:
        with_flow = scores.clips / (scores.model_seconds + scores.clips * flow.seconds_per_clip)
    return Metrics(scores.name, top1, top5, float(per_class.mean()), len(labels), speed, confusion.tolist(),
                   with_flow)


def video_scores(models: dict[str, torch.nn.Module], loader, num_videos: int, num_classes: int,
                 device: torch.device) -> dict[str, Scores]:
    """Run every model on every clip, averaging clip scores per video.

    On CUDA each model's forward is replayed from a CUDA graph (trainers/graphs.py), one per
    batch shape, captured during the untimed warm-up; elsewhere it runs eagerly.
    """
    runners = {name: graphed(model, device) for name, model in models.items()}
    sums = {name: np.zeros((num_videos, num_classes)) for name in models}
    counts = np.zeros(num_videos)
    labels = np.zeros(num_videos, dtype=np.int64)
    seconds = {name: 0.0 for name in models}
    clips = 0
    on_gpu = device.type == "cuda"
    # No autocast cast cache: a captured graph must not hold casts made outside it.
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu,
                                                cache_enabled=False):
        for batch in loader:
            index = batch["video_index"].numpy()
            labels[index] = batch["label"].numpy()
            counts += np.bincount(index, minlength=num_videos)
            clips += len(index)
            for name, model in runners.items():
                x = batch["flow" if model.in_channels == 2 else "rgb"].to(device)
                if clips == len(index) or not getattr(model, "captured", lambda _: True)(x):
                    model(x)  # warm-up, untimed: one-off allocations, a new shape's graph capture
                if on_gpu:
                    torch.cuda.synchronize()
                began = time.perf_counter()
                probs = model(x).logits.float().softmax(-1)
                if on_gpu:
                    torch.cuda.synchronize()
                seconds[name] += time.perf_counter() - began
                np.add.at(sums[name], index, probs.cpu().numpy())
    seen = counts > 0
    return {name: Scores(name, sums[name][seen] / counts[seen, None], labels[seen], clips, seconds[name],
                         needs_flow=model.in_channels == 2)
            for name, model in models.items()}


def evaluate(model_uris: list[str], data: DataConfig, *, batch_size: int = 8, experiment: str = "vidistill",
             device: str = "auto", run_name: str | None = None,
             on_run: Callable[[str], object] | None = None,
             fusions: list[list[str]] | None = None) -> dict[str, Metrics]:
    """Evaluate registered models on the test subset, and late fusions of them.

    `fusions` lists groups of `model_uris` to fuse (e.g. [[student, teacher], [rgb, teacher]]);
    by default all models are fused when there are two or more. Results are keyed by URI, and
    a fusion by its URIs joined with " + ". Every model sees the same clips in one pass, so
    their speeds are measured side by side.

    Models that read flow also get `clips_per_second_with_flow`: the flow method the data was
    prepared with, timed on this machine, is charged to every clip. `on_run(run_id)` is called
    once the MLflow run that keeps the results exists.
    """
    import mlflow

    client = tracking.configure()
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                else "cpu" if device == "auto" else device)
    splits = open_splits(data)
    groups = fusions if fusions is not None else ([list(model_uris)] if len(model_uris) > 1 else [])
    for group in groups:
        if len(group) < 2 or not set(group) <= set(model_uris):
            raise ValueError(f"fusion {group}: give two or more of the evaluated models {list(model_uris)}")
    models, versions = {}, {}
    for uri in model_uris:
        found = tracking.resolve_model_version(uri)  # a clear error for an unknown name or version
        versions[uri] = f"models:/{found.name}/{found.version}"  # an alias moves; the record must not
        models[uri] = mlflow.pytorch.load_model(versions[uri], map_location=torch_device).eval()
    modalities = {"flow" if m.in_channels == 2 else "rgb" for m in models.values()}
    modality = "paired" if len(modalities) > 1 else next(iter(modalities))
    loader = clip_loader(splits.test, data, modality=modality, train=False, batch_size=batch_size, seed=0,
                         device="gpu" if torch_device.type == "cuda" else "cpu")
    scores = video_scores(models, loader, len(splits.test.videos), len(splits.classes), torch_device)
    flow_method = Manifest.load(Path(data.prepared)).flow_method if "flow" in modalities else None
    flow = measure_flow_cost(splits.test, flow_method, data.clip_length) if flow_method else None
    results = {uri: metrics_of(s, flow) for uri, s in scores.items()}
    for group in groups:
        members = [scores[uri] for uri in group]
        fused = late_fusion([torch.as_tensor(s.probabilities).log() for s in members]).numpy()
        name = " + ".join(group)
        results[name] = metrics_of(Scores(f"fusion({name})", fused, members[0].labels, members[0].clips,
                                          sum(s.model_seconds for s in members),
                                          needs_flow=any(s.needs_flow for s in members)), flow)

    run = client.create_run(tracking.experiment_id(client, experiment),
                            run_name=run_name or f"evaluate {' + '.join(model_uris)}",
                            tags={tracking.TAG_ROLE: "evaluate", tracking.TAG_DATASET: splits.content_hash,
                                  tracking.TAG_CODE: tracking.code_version()})
    if on_run is not None:
        on_run(run.info.run_id)
    for i, uri in enumerate(model_uris):
        client.log_param(run.info.run_id, f"model_{i}", versions[uri])
    if flow is not None:
        client.log_param(run.info.run_id, "flow_method", flow.method)
        client.log_metric(run.info.run_id, "flow_seconds_per_pair", flow.seconds_per_pair)
    for i, (key, m) in enumerate(results.items()):
        fusion = i - len(model_uris)
        prefix = f"model_{i}" if fusion < 0 else "fusion" if fusion == 0 else f"fusion_{fusion}"
        for metric in ("top1", "top5", "mean_class_accuracy", "clips_per_second", "clips_per_second_with_flow"):
            value = getattr(m, metric)
            if value is not None:
                client.log_metric(run.info.run_id, f"{prefix}_{metric}", value)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "evaluation.json"
        path.write_text(json.dumps({"classes": list(splits.classes), "models": versions,
                                    "flow": asdict(flow) if flow else None,
                                    "results": {k: asdict(v) for k, v in results.items()}}, indent=1))
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return results
