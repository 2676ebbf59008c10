"""Evaluation (Sec. 3.6 and 4.1): several full-resolution clips per video, scores aggregated to
the video, mean class accuracy, top-1 and top-5, a confusion matrix, inference speed, and the
late fusion of two streams (RGB + flow I3D, Prob-Distill student + flow teacher; Tables 2, 3).

    report = evaluate(["models:/ucf101-student-rgb/1", "models:/ucf101-teacher-flow/1"], data)

Each model reads what its first layer takes (3 channels: RGB, 2: flow); with two or more
models the clips are paired, so every model sees the same clips, and their fusion is
reported too. Results are logged to an MLflow run of their own.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vidistill.trainers import tracking
from vidistill.trainers.config import DataConfig
from vidistill.trainers.data import clip_loader, open_splits
from vidistill.trainers.fusion import late_fusion


@dataclass
class Scores:
    """Video-level class probabilities of one model (or a fusion) on the test videos."""

    name: str
    probabilities: np.ndarray  # (videos, classes): mean of the clips' softmax scores
    labels: np.ndarray  # (videos,)
    clips: int = 0
    model_seconds: float = 0.0  # forward passes only: what inference costs once clips are decoded


@dataclass
class Metrics:
    name: str
    top1: float
    top5: float
    mean_class_accuracy: float
    videos: int
    clips_per_second: float | None
    confusion: list[list[int]]  # rows: true class, columns: predicted


def metrics_of(scores: Scores) -> Metrics:
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
    return Metrics(scores.name, top1, top5, float(per_class.mean()), len(labels), speed, confusion.tolist())


def video_scores(models: dict[str, torch.nn.Module], loader, num_videos: int, num_classes: int,
                 device: torch.device) -> dict[str, Scores]:
    """Run every model on every clip, averaging clip scores per video."""
    sums = {name: np.zeros((num_videos, num_classes)) for name in models}
    counts = np.zeros(num_videos)
    labels = np.zeros(num_videos, dtype=np.int64)
    seconds = {name: 0.0 for name in models}
    clips = 0
    on_gpu = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
        for batch in loader:
            index = batch["video_index"].numpy()
            labels[index] = batch["label"].numpy()
            counts += np.bincount(index, minlength=num_videos)
            clips += len(index)
            for name, model in models.items():
                x = batch["flow" if model.in_channels == 2 else "rgb"].to(device)
                if on_gpu:
                    torch.cuda.synchronize()
                began = time.perf_counter()
                probs = model(x).logits.float().softmax(-1)
                if on_gpu:
                    torch.cuda.synchronize()
                seconds[name] += time.perf_counter() - began
                np.add.at(sums[name], index, probs.cpu().numpy())
    seen = counts > 0
    return {name: Scores(name, sums[name][seen] / counts[seen, None], labels[seen], clips, seconds[name])
            for name in models}


def evaluate(model_uris: list[str], data: DataConfig, *, batch_size: int = 8, experiment: str = "vidistill",
             device: str = "auto", run_name: str | None = None) -> dict[str, Metrics]:
    """Evaluate registered models on the test subset; with two or more, also their late fusion."""
    import mlflow

    client = tracking.configure()
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                else "cpu" if device == "auto" else device)
    splits = open_splits(data)
    models = {}
    for uri in model_uris:
        tracking.resolve_model_version(uri)  # a clear error for an unknown name or version
        models[uri] = mlflow.pytorch.load_model(uri, map_location=torch_device).eval()
    modalities = {"flow" if m.in_channels == 2 else "rgb" for m in models.values()}
    modality = "paired" if len(modalities) > 1 else modalities.pop()
    loader = clip_loader(splits.test, data, modality=modality, train=False, batch_size=batch_size, seed=0,
                         device="gpu" if torch_device.type == "cuda" else "cpu")
    scores = video_scores(models, loader, len(splits.test.videos), len(splits.classes), torch_device)
    results = {uri: metrics_of(s) for uri, s in scores.items()}
    if len(scores) > 1:
        fused = late_fusion([torch.as_tensor(s.probabilities).log() for s in scores.values()]).numpy()
        first = next(iter(scores.values()))
        name = " + ".join(scores)
        results[name] = metrics_of(Scores(f"fusion({name})", fused, first.labels, first.clips,
                                          sum(s.model_seconds for s in scores.values())))

    run = client.create_run(tracking.experiment_id(client, experiment),
                            run_name=run_name or f"evaluate {' + '.join(model_uris)}",
                            tags={tracking.TAG_ROLE: "evaluate", tracking.TAG_DATASET: splits.content_hash,
                                  tracking.TAG_CODE: tracking.code_version()})
    for i, uri in enumerate(model_uris):
        client.log_param(run.info.run_id, f"model_{i}", uri)
    for i, (key, m) in enumerate(results.items()):
        prefix = "fusion" if i >= len(model_uris) else f"model_{i}"
        for metric in ("top1", "top5", "mean_class_accuracy", "clips_per_second"):
            value = getattr(m, metric)
            if value is not None:
                client.log_metric(run.info.run_id, f"{prefix}_{metric}", value)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "evaluation.json"
        path.write_text(json.dumps({"classes": list(splits.classes),
                                    "results": {k: asdict(v) for k, v in results.items()}}, indent=1))
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return results
