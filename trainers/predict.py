"""Top-k classes of video files from registered models, and their attention over the frames.

    models = load_models(["models:/ucf101-student-rgb/1"])
    result = predict_videos(["walk.mp4"], models)        # [VideoPrediction], top-5 per video

A video is read as the model's training data was prepared (the prepared folder's manifest,
recorded on the model's run as `data.prepared`: frame rate, frame size, flow method and
bound): resampled and resized, and, for a model that reads flow (a teacher), its optical flow
computed on the fly with the same method and quantised with the same bound. Its clips are
`evaluate`'s plan (`data.test_clips_per_video` full-frame clips of `data.clip_length` frames,
evenly spaced over the frames that have flow), each model's clip scores are averaged over the
video, and several models are late-fused (Tables 2 and 3) as `evaluate` fuses them. On CUDA
the forward passes replay CUDA graphs (trainers/graphs.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from vidistill.datasets.errors import DatasetError, VideoDecodeError
from vidistill.datasets.flow import FlowEstimator, quantise_flow, resolve_flow_backend
from vidistill.datasets.loaders.augment import crop_flip, flow_to_unit, rgb_to_unit, to_channels_first
from vidistill.datasets.loaders.plan import ClipLoaderConfig, ClipSpec, VideoExtent, plan_epoch
from vidistill.datasets.rawframes import Manifest
from vidistill.datasets.video import read_resampled
from vidistill.trainers.fusion import late_fusion
from vidistill.trainers.graphs import graphed


class PredictError(ValueError):
    """Input that prediction cannot use: the message names it and what to do."""


@dataclass(frozen=True)
class Preprocessing:
    """How a model's videos were prepared and clipped (from its run and its prepared manifest)."""

    classes: tuple[str, ...]
    fps: float
    width: int
    height: int
    flow_method: str | None
    flow_bound: float | None
    clip_length: int
    clips_per_video: int


@dataclass
class RegisteredModel:
    uri: str  # as given
    version: str  # models:/NAME/VERSION it resolved to (an alias moves)
    model: torch.nn.Module
    preprocessing: Preprocessing

    @property
    def reads_flow(self) -> bool:
        return self.model.in_channels == 2


@dataclass
class VideoPrediction:
    video: str
    clips: int
    frames: int
    top: list[tuple[str, float]]  # (class, probability), best first
    models: list[str]  # the registry versions whose (fused) scores these are


def _preprocessing(client, found, prepared: str | Path | None) -> Preprocessing:
    params = client.get_run(found.run_id).data.params if found.run_id else {}
    folder = prepared or params.get("data.prepared")
    if not folder:
        raise PredictError(f"models:/{found.name}/{found.version} records no prepared data set (data.prepared), "
                           "so its classes and frame size are unknown; pass --prepared FOLDER of its training data")
    try:
        manifest = Manifest.load(Path(folder))
    except DatasetError as error:
        raise PredictError(f"models:/{found.name}/{found.version} was trained on {folder}, whose manifest gives "
                           f"its classes and frame size: {error}; pass --prepared FOLDER with that manifest") from None
    return Preprocessing(tuple(manifest.classes), manifest.fps, manifest.width, manifest.height,
                         manifest.flow_method, manifest.flow_bound, int(params.get("data.clip_length", 24)),
                         int(params.get("data.test_clips_per_video", 5)))


def load_models(uris: list[str], device: str | torch.device = "cpu",
                prepared: str | Path | None = None) -> list[RegisteredModel]:
    """Load registered models (eval mode) with how their videos are read; one class list for all."""
    import mlflow

    from vidistill.trainers import tracking

    if not uris:
        raise PredictError("give at least one model: --model models:/NAME/VERSION or models:/NAME@ALIAS")
    client = tracking.configure()
    loaded = []
    for uri in uris:
        try:
            found = tracking.resolve_model_version(uri)
        except (mlflow.exceptions.MlflowException, ValueError) as error:
            reason = error.message if isinstance(error, mlflow.exceptions.MlflowException) else str(error)
            raise PredictError(f"model {uri} is not in the model registry at "
                               f"{tracking.scrub_credentials(tracking.tracking_uri())} ({reason[:200]}); "
                               "give models:/NAME/VERSION or models:/NAME@ALIAS of a registered model "
                               "(`vidistill ui` lists them)") from None
        version = f"models:/{found.name}/{found.version}"
        model = mlflow.pytorch.load_model(version, map_location=torch.device(device)).eval()
        loaded.append(RegisteredModel(uri, version, model, _preprocessing(client, found, prepared)))
    first = loaded[0]
    for other in loaded[1:]:
        if other.preprocessing.classes != first.preprocessing.classes:
            raise PredictError(f"{other.uri} and {first.uri} predict different classes: fuse models of one data set")
        # One clip plan for all (as evaluate's paired clips): the frames must be read alike.
        first_read = dataclasses.replace(first.preprocessing, flow_method=None, flow_bound=None)
        if dataclasses.replace(other.preprocessing, flow_method=None, flow_bound=None) != first_read:
            raise PredictError(f"{other.uri} and {first.uri} read videos differently (frame rate, size, clip "
                               "length or clips per video): predict with them one at a time")
    return loaded


@dataclass
class VideoClips:
    """A video's test clips, as the loaders give them: rgb (N, 3, T, H, W), flow (N, 2, T, H, W) or None."""

    specs: list[ClipSpec]
    rgb: torch.Tensor
    flow: torch.Tensor | None
    frames: int


def read_video(path: str | Path, prep: Preprocessing, need_flow: bool,
               flow_backend: str = "auto") -> VideoClips:
    """Decode, resample, resize; flow if asked; cut `evaluate`'s test clips."""
    path = Path(path)
    if not path.is_file():
        raise PredictError(f"video {path}: no such file")
    try:
        frames = np.stack(list(read_resampled(path, prep.fps, prep.width, prep.height)))
    except VideoDecodeError as error:
        raise PredictError(f"video {path} cannot be decoded ({error.reason}); check the file, "
                           "or re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)") from None
    except ValueError:  # no frames at all
        raise PredictError(f"video {path} has no frames; check the file") from None
    with_flow = prep.flow_method is not None
    if with_flow and len(frames) < 2:
        raise PredictError(f"video {path} has {len(frames)} frame at {prep.fps:g} fps; its flow needs two")
    # The frames a clip may use are those with flow whenever the model's data had flow, as the
    # loaders plan them: RGB and flow models then see the same clips.
    length = len(frames) - 1 if with_flow else len(frames)
    config = ClipLoaderConfig(modality="rgb", train=False, clip_length=prep.clip_length,
                              test_clips_per_video=prep.clips_per_video)
    specs = plan_epoch([VideoExtent(0, length, prep.width, prep.height)], config, epoch=0)
    rgb = torch.stack([to_channels_first(rgb_to_unit(crop_flip(frames[s.frame_indices(prep.clip_length, length)], s),
                                                     s, jitter=False)) for s in specs])
    flow = None
    if need_flow:
        if not with_flow:
            raise PredictError("a flow model's data set has no flow method in its manifest")
        flow_x, flow_y = _quantised_flow(frames, prep, flow_backend)
        flow = torch.stack([to_channels_first(flow_to_unit(*(crop_flip(f[s.frame_indices(prep.clip_length, length)], s)
                                                             for f in (flow_x, flow_y)), s.flip))
                            for s in specs])
    return VideoClips(specs, rgb, flow, len(frames))


def _quantised_flow(frames: np.ndarray, prep: Preprocessing, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, H, W) x and y flow images, 8-bit as preparation stores them (without the JPEG step)."""
    estimator = FlowEstimator(prep.flow_method, resolve_flow_backend(prep.flow_method, backend))
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    xs, ys = [], []
    for begin in range(0, len(grey) - 1, estimator.batch_size):
        end = min(begin + estimator.batch_size, len(grey) - 1)
        for flow in estimator.many(grey[begin:end], grey[begin + 1:end + 1]):
            x, y = quantise_flow(flow, prep.flow_bound)
            xs.append(x)
            ys.append(y)
    return np.stack(xs), np.stack(ys)


def video_probabilities(models: list[RegisteredModel], clips: VideoClips, device: torch.device,
                        batch_size: int = 8, runners: dict | None = None) -> tuple[list[np.ndarray], dict]:
    """Each model's mean clip softmax over the video, and its maps of the middle clip.

    `runners` (version -> what runs the model, see graphs.graphed) is kept across videos so a
    CUDA graph is captured once per shape, not once per video."""
    runners = runners if runners is not None else {}
    middle = len(clips.specs) // 2
    probabilities, outputs = [], {}
    on_gpu = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu,
                                                cache_enabled=False):
        for entry in models:
            runner = runners.setdefault(entry.version, graphed(entry.model, device))
            inputs = clips.flow if entry.reads_flow else clips.rgb
            scores = []
            for begin in range(0, len(inputs), batch_size):
                out = runner(inputs[begin:begin + batch_size].to(device))
                scores.append(out.logits.float().softmax(-1).cpu())
                if begin <= middle < begin + batch_size:
                    outputs[entry.version] = {name: m.probs[middle - begin:middle - begin + 1].float().cpu()
                                              for name, m in out.attention.items()}
            probabilities.append(torch.cat(scores).mean(0).numpy())
    return probabilities, outputs


def predict_videos(videos: list[str | Path], models: list[RegisteredModel], *, top: int = 5,
                   device: str | torch.device = "cpu", flow_backend: str = "auto",
                   on_clips=None) -> list[VideoPrediction]:
    """Top-`top` classes per video from the models' (late-fused) video scores.

    `on_clips(path, clips, maps)` is called per video with its clips and each model's maps
    of the middle clip (model version -> name -> (1, T', h, w)), e.g. to draw them.
    """
    if top < 1:
        raise PredictError(f"--top must be at least 1, got {top}")
    device = torch.device(device)
    prep = models[0].preprocessing
    need_flow = any(m.reads_flow for m in models)
    versions = [m.version for m in models]
    results, runners = [], {}
    for path in videos:
        clips = read_video(path, prep, need_flow, flow_backend)
        probabilities, maps = video_probabilities(models, clips, device, runners=runners)
        if len(probabilities) > 1:
            fused = late_fusion([torch.as_tensor(p).log() for p in probabilities]).numpy()
        else:
            fused = probabilities[0]
        order = np.argsort(-fused)[:top]
        results.append(VideoPrediction(str(path), len(clips.specs), clips.frames,
                                       [(prep.classes[i], float(fused[i])) for i in order], versions))
        if on_clips is not None:
            on_clips(path, clips, maps)
    return results


def attention_panels(models: list[RegisteredModel], clips: VideoClips, maps: dict, label: str):
    """(rgb clip, model maps, teacher maps) of a video's middle clip for attention_images: the
    first model with attention maps draws its own; a flow model's (teacher's) map goes beside
    them when another model is drawn. None when no model has attention maps."""
    with_maps = [m for m in models if maps.get(m.version)]
    if not with_maps:
        return None
    drawn = next((m for m in with_maps if not m.reads_flow), with_maps[0])
    teacher = next((m for m in with_maps if m.reads_flow and m is not drawn), None)
    clip = clips.rgb[len(clips.specs) // 2:len(clips.specs) // 2 + 1]
    return clip, maps[drawn.version], (maps[teacher.version] if teacher else None), label
