"""Snippet features: a registered model slid over every prepared video.

The feature grid (the THUMOS14 I3D convention of ActionFormer/TriDet features): snippet ``i``
covers frames ``[i * stride, i * stride + snippet_length)`` of the prepared frames, so its
centre lies at ``(i * stride + snippet_length / 2) / fps`` seconds; a video of ``F`` frames
has ``max(1, (F - snippet_length) // stride + 1)`` snippets. Frames past the end repeat the
last one. Flow pair ``j`` (between frames ``j`` and ``j + 1``) takes frame ``j``'s place, so
RGB and flow features of a video have the same grid and concatenate into two-stream features.

A snippet's feature is the model's block-5 output (``ModelOutput.features``) averaged over
time and space. Videos are processed in chunks of ``chunk_snippets`` snippets: only the
frames of one chunk are in memory, whatever the video's length. Output::

    <out>/<video_id>.npy      float32, snippets x channels
    <out>/features.json       model (pinned registry version), modality, fps, snippet length,
                              stride, input size, prepared data's manifest hash, per-video
                              snippet counts, and the videos that failed with their reason

Resumable: a video is written to a temporary file and renamed when complete and the manifest
is saved after each video, so a rerun into the same folder skips what is done. A video whose
frames cannot be read is listed under ``failed`` and skipped; a rerun tries it again.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import cv2
import numpy as np
import torch
from pydantic import Field

from vidistill.datasets.rawframes import Manifest, PreparedSet, PreparedVideo, open_rawframes
from vidistill.trainers.schema import ConfigError, Schema

MANIFEST = "features.json"


class FeatureConfig(Schema):
    """How to extract; the fields that decide the features are recorded in the manifest."""

    prepared: str = Field(description="prepared frames/flow folder (`vidistill datasets prepare --out`)")
    out: str = Field(description="folder for the .npy files and features.json (rerun into it to resume)")
    model: str = Field(description="registry URI of the feature model, models:/NAME/VERSION or @ALIAS")
    modality: Literal["auto", "rgb", "flow"] = Field("auto", description="auto: from the model's input channels")
    snippet_length: int = Field(16, ge=1, description="frames per snippet (THUMOS14 I3D convention: 16)")
    stride: int = Field(4, ge=1, description="frames between snippet starts")
    input_size: int | None = Field(None, ge=16, description="centre crop side; None: the whole prepared frame")
    chunk_snippets: int = Field(32, ge=1, description="snippets per forward pass (bounds memory)")
    device: str = Field("cpu", description="torch device, e.g. cpu or cuda")
    bf16: bool = Field(True, description="bf16 autocast on a GPU (ignored on the CPU)")
    videos: list[str] | None = Field(None, description="only these video ids (default: every prepared one)")

    def check(self) -> None:
        if not self.model.startswith("models:/"):
            raise ConfigError("model", f"{self.model!r} is not a registry URI; "
                                       "use models:/NAME/VERSION or models:/NAME@ALIAS")


def snippet_count(frames: int, snippet_length: int, stride: int) -> int:
    return max(1, (frames - snippet_length) // stride + 1)


def snippet_centres(count: int, snippet_length: int, stride: int, fps: float) -> np.ndarray:
    """Seconds at the centre of each snippet of the grid."""
    return (np.arange(count) * stride + snippet_length / 2.0) / fps


@dataclass
class FeatureResult:
    out: Path
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # done by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # video id -> reason
    seconds: float = 0.0


class FrameReadError(Exception):
    pass


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise FrameReadError(f"cannot read {path.name} (missing or corrupt)")
    return image


def _load_frames(video: PreparedVideo, prepared: PreparedSet, modality: str, indices: range,
                 input_size: int | None) -> np.ndarray:
    """(len(indices), C, H, W) float32 in [-1, 1] (the training normalisation), indices clipped at the end."""
    t = prepared.templates
    last = (video.frames if modality == "rgb" else video.flow_frames) - 1
    if last < 0:
        raise FrameReadError(f"no {modality} frames prepared")
    out = []
    for i in indices:
        i = min(i, last)
        if modality == "rgb":
            image = _read(video.directory / t.rgb_name(i), cv2.IMREAD_COLOR)[:, :, ::-1]
        else:
            fx, fy = t.flow_names(i)
            image = np.stack([_read(video.directory / fx, cv2.IMREAD_GRAYSCALE),
                              _read(video.directory / fy, cv2.IMREAD_GRAYSCALE)], axis=-1)
        if input_size is not None:
            h, w = image.shape[:2]
            if min(h, w) < input_size:
                raise FrameReadError(f"frames {w}x{h} are smaller than input_size {input_size}")
            y, x = (h - input_size) // 2, (w - input_size) // 2
            image = image[y:y + input_size, x:x + input_size]
        out.append(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return np.stack(out).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def model_modality(model: torch.nn.Module) -> str:
    """rgb or flow, from the input channels of the model's first 3D convolution."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d):
            return {3: "rgb", 2: "flow"}.get(module.in_channels) or _bad_channels(module.in_channels)
    raise ValueError("the feature model has no 3D convolution to tell its input channels from; set modality")


def _bad_channels(channels: int):
    raise ValueError(f"the feature model takes {channels} input channels; expected 3 (RGB) or 2 (flow)")


@torch.no_grad()
def snippet_features(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """(N, C) features of (N, C_in, T, H, W) clips: block-5 output pooled over time and space."""
    output = model(clips)
    features = getattr(output, "features", output)
    return features.float().flatten(2).mean(-1) if features.dim() > 2 else features.float()


def extract_video(model, video: PreparedVideo, prepared: PreparedSet, config: FeatureConfig, modality: str,
                  device: torch.device) -> np.ndarray:
    """snippets x channels of one video, chunk by chunk."""
    count = snippet_count(video.frames, config.snippet_length, config.stride)
    autocast = device.type == "cuda" and config.bf16
    parts = []
    for first in range(0, count, config.chunk_snippets):
        snippets = range(first, min(count, first + config.chunk_snippets))
        start = snippets[0] * config.stride
        frames = _load_frames(video, prepared, modality,
                              range(start, snippets[-1] * config.stride + config.snippet_length), config.input_size)
        clips = np.stack([frames[s * config.stride - start: s * config.stride - start + config.snippet_length]
                          for s in snippets])  # (N, T, C, H, W)
        x = torch.from_numpy(clips).permute(0, 2, 1, 3, 4).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            parts.append(snippet_features(model, x).cpu().numpy())
    return np.concatenate(parts).astype(np.float32)


def _save_manifest(out: Path, manifest: dict) -> None:
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / MANIFEST)


def load_manifest(folder: Path | str) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no features here; run extract-features into {folder} first")
    return json.loads(path.read_text())


def extract_features(config: FeatureConfig, model: torch.nn.Module | None = None, model_version: str | None = None,
                     progress: Callable[[int, int, str], None] | None = None) -> FeatureResult:
    """Extract (or finish extracting) the features of every prepared video into config.out."""
    config.check()  # a config built directly, not by schema.parse, gets its cross-field rules here
    began = time.perf_counter()
    prepared = open_rawframes(config.prepared)
    if config.videos is not None:
        prepared = prepared.select(config.videos, "--videos")
    if model is None:
        from vidistill.trainers.teacher import load_teacher, pin_teacher

        model_version = pin_teacher(config.model)  # exact version, so a resume uses the same model
        model = load_teacher(model_version, config.device)
    device = torch.device(config.device)
    model = model.to(device).eval()
    modality = model_modality(model) if config.modality == "auto" else config.modality
    frames_manifest = Manifest.load(Path(config.prepared))
    first = prepared.videos[0] if prepared.videos else None
    settings = {
        "model": model_version or config.model, "modality": modality, "fps": frames_manifest.fps,
        "snippet_length": config.snippet_length, "stride": config.stride,
        "input_size": [config.input_size] * 2 if config.input_size else ([first.height, first.width] if first else None),
        "prepared": str(Path(config.prepared).resolve()), "prepared_manifest": prepared.content_hash,
        "grid": "snippet i covers frames [i*stride, i*stride+snippet_length); seconds = frame / fps",
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"settings": settings, "videos": {}, "failed": {}}
    if (out / MANIFEST).is_file():
        previous = load_manifest(out)
        keys = ("model", "modality", "snippet_length", "stride", "input_size", "fps")
        changed = [k for k in keys if previous["settings"].get(k) != settings[k]]
        if changed:
            raise ValueError(f"{out} holds features made with other settings ({', '.join(changed)}); "
                             "choose another --out, or delete it to start over")
        manifest["videos"] = previous["videos"]
    result = FeatureResult(out)
    for number, video in enumerate(prepared.videos, start=1):
        target = out / f"{video.video_id}.npy"
        if video.video_id in manifest["videos"] and target.is_file():
            result.skipped.append(video.video_id)
            continue
        try:
            features = extract_video(model, video, prepared, config, modality, device)
        except FrameReadError as error:
            manifest["failed"][video.video_id] = str(error)
            result.failed[video.video_id] = str(error)
            _save_manifest(out, manifest)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        with open(tmp, "wb") as handle:
            np.save(handle, features)
        os.replace(tmp, target)
        manifest["videos"][video.video_id] = {"snippets": int(features.shape[0]), "channels": int(features.shape[1]),
                                              "frames": video.frames}
        manifest["failed"].pop(video.video_id, None)
        _save_manifest(out, manifest)
        result.extracted.append(video.video_id)
        if progress is not None:
            progress(number, len(prepared.videos), video.video_id)
    _save_manifest(out, manifest)
    result.seconds = time.perf_counter() - began
    return result


def log_feature_run(config: FeatureConfig, result: FeatureResult, parent_run_id: str | None = None) -> str:
    """An MLflow run recording the features' lineage (model version, grid, prepared data); returns its id."""
    from vidistill.trainers import tracking

    client = tracking.configure()
    manifest = load_manifest(result.out)
    tags = {tracking.TAG_CODE: tracking.code_version(), tracking.TAG_ROLE: "features",
            tracking.TAG_DATASET: manifest["settings"]["prepared_manifest"]}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(tracking.experiment_id(client, "vidistill-features"),
                            run_name=f"features-{manifest['settings']['modality']}", tags=tags)
    params = {k: v for k, v in manifest["settings"].items() if k != "grid"}
    params.update(out=str(result.out), chunk_snippets=config.chunk_snippets)
    tracking.log_params(client, run.info.run_id, {k: json.dumps(v) if isinstance(v, list) else v
                                                  for k, v in params.items()})
    client.log_metric(run.info.run_id, "videos", len(manifest["videos"]))
    client.log_metric(run.info.run_id, "failed", len(manifest["failed"]))
    client.log_metric(run.info.run_id, "seconds", result.seconds)
    client.log_artifact(run.info.run_id, str(result.out / MANIFEST))
    client.set_terminated(run.info.run_id)
    return run.info.run_id
