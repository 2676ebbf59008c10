"""The frozen teacher of a distillation run: loading it from the registry, checking it fits the
student before any training starts, and the full-frame map cache that training no longer uses.

Training reads the teacher's exact map of each clip from a bank of augmentations per video
(trainers/teacher_bank.py). `TeacherMapCache` below is the older shortcut, kept to measure what
it approximates: one teacher pass per video over the whole video at full frame, whose map
logits are then sampled at a clip's window (frames `start .. start + T`, the crop box, mirrored
when the clip is flipped) and re-normalised. That is *not* the map the teacher gives for the
cropped clip: a Mixed_4f cell's receptive field covers most of an 80-224 px crop, so cropping
changes every cell, not only the border ones (measured over 200 training clips of a trained
teacher: sum_t KL[live || cut] 0.35, max 2.6, against 0.84 for a uniform map; aligning crops to
the cell grid gave 0.42). Mirroring the map assumes a mirror-equivariant teacher, and a flipped
clip's flow also has its x component negated: with flips the cut map is further from the live
one than a uniform map is (1.87 against 1.07). It is exact only for a clip that is the whole,
unflipped video (tests/test_teacher_maps.py holds both facts).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from vidistill.datasets.rawframes import PreparedSet

from vidistill.trainers.models.attention import spatial_log_softmax


class TeacherMismatchError(ValueError):
    """A teacher that cannot teach this student; raised before training starts."""


def pin_teacher(uri: str) -> str:
    """models:/NAME/VERSION of a teacher given by version or alias; refuses one not registered.

    A run records and uses this exact version, so moving an alias later changes nothing
    about what the student learned from.
    """
    import mlflow

    from vidistill.trainers import tracking

    try:
        entry = tracking.resolve_model_version(uri)
    except (mlflow.exceptions.MlflowException, ValueError) as exc:
        raise TeacherMismatchError(
            f"teacher {uri} is not in the model registry at {tracking.tracking_uri()}: train one first "
            "(role teacher) or pass an existing models:/NAME/VERSION"
        ) from exc
    return f"models:/{entry.name}/{entry.version}"


def pin_run_teacher(config, run_id: str | None = None):
    """The config with its teacher pinned to one registry version: the one place a run decides it.

    A resumed run keeps the version it started with (its MLflow tag), so moving an alias
    meanwhile changes nothing; every other step (the run's tags, loading the teacher, a Tune
    search's trials) uses the pinned URI this returns. Configs without a teacher pass through.
    """
    if config.role != "distill":
        return config
    from vidistill.trainers import tracking

    started_with = tracking.configure().get_run(run_id).data.tags.get(tracking.TAG_TEACHER) if run_id else None
    teacher = started_with or pin_teacher(config.distill.teacher)
    return config.model_copy(update={"distill": config.distill.model_copy(update={"teacher": teacher})})


def load_teacher(uri: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Load a registered flow teacher, frozen and in eval mode."""
    import mlflow

    from vidistill.trainers import tracking

    tracking.configure()
    model = mlflow.pytorch.load_model(pin_teacher(uri), map_location=torch.device(device))
    return model.eval().requires_grad_(False)


def state_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, to show a frozen teacher stayed bit-identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_teacher_fits(teacher: torch.nn.Module, student: torch.nn.Module, clip_shape: tuple[int, int, int],
                       objective: str, uri: str = "the teacher") -> None:
    """Refuse, with the reason, a teacher that cannot supply the signals the method `objective` reads."""
    from vidistill.trainers.methods import get_method

    method = get_method(objective)
    signals = method.signals
    t, h, w = clip_shape
    channels = getattr(teacher, "in_channels", 2)
    # A flow teacher (cross-modal) or, for methods that read no motion map, an RGB teacher
    # (compression: a wider RGB network teaching a lighter one; train.teacher_input feeds it RGB).
    if channels not in (2, 3) or (channels == 3 and "maps" in signals):
        raise TeacherMismatchError(f"{uri} takes {channels}-channel input; a teacher reads 2-channel flow"
                                   + ("" if "maps" in signals else " or 3-channel RGB"))
    with torch.device("meta"):
        clip, rgb = torch.empty(1, channels, t, h, w), torch.empty(1, 3, t, h, w)
    teacher_out, student_out = _meta_forward(teacher, clip), _meta_forward(student, rgb)
    if "maps" in signals:
        if len(teacher_out.attention) != 1:
            raise TeacherMismatchError(
                f"{uri} has {len(teacher_out.attention)} attention maps; attention distillation needs a teacher "
                "with exactly one (train it with an attention variant, not 'none')"
            )
        teacher_grid = tuple(next(iter(teacher_out.attention.values())).log_probs.shape[1:])
        student_grid = tuple(student_out.attention["motion"].log_probs.shape[1:])
        if teacher_grid != student_grid:
            raise TeacherMismatchError(
                f"{uri}'s attention grid {teacher_grid} does not match the student's {student_grid} for "
                f"{t}x{h}x{w} clips: use a teacher with the student's backbone"
            )
    if "features" in signals and method.adapts_feature_width:
        if teacher_out.features.shape[2:] != student_out.features.shape[2:]:
            raise TeacherMismatchError(
                f"{uri}'s block-5 feature grid {tuple(teacher_out.features.shape[2:])} differs from the student's "
                f"{tuple(student_out.features.shape[2:])}: use clips of the same size for both")
    elif "features" in signals and teacher_out.features.shape != student_out.features.shape:
        raise TeacherMismatchError(
            f"{uri}'s block-5 features {tuple(teacher_out.features.shape[1:])} differ from the student's "
            f"{tuple(student_out.features.shape[1:])}: feature distillation needs the same width"
        )
    if "logits" in signals and teacher_out.logits.shape != student_out.logits.shape:
        raise TeacherMismatchError(
            f"{uri} predicts {teacher_out.logits.shape[1]} classes, the student {student_out.logits.shape[1]}"
        )


def _meta_forward(model: torch.nn.Module, x: torch.Tensor):
    """Shapes of a forward pass without computing it (a copy on the meta device)."""
    meta = copy.deepcopy(model).to("meta").eval()
    with torch.no_grad():
        return meta(x)


@dataclass(frozen=True)
class MapGeometry:
    """How a clip's frames and pixels map onto the phi grid of the teacher."""

    frames_per_cell: float  # temporal stride of phi (4 for I3D)
    pixels_per_cell: float  # spatial stride of phi (16 for I3D)
    grid: tuple[int, int, int]  # (T, H, W) of a training clip's map


def map_geometry(model: torch.nn.Module, clip_length: int, crop_size: int) -> MapGeometry:
    with torch.device("meta"):
        x = torch.empty(1, model.in_channels, clip_length, crop_size, crop_size)
    out = _meta_forward(model, x)
    t, h, w = next(iter(out.attention.values())).log_probs.shape[1:]
    return MapGeometry(clip_length / t, crop_size / h, (t, h, w))


class TeacherMapCache:
    """The teacher's motion-map logits per video, and a clip's map cut from them.

    `video_logits[i]` is (T_cells, H_cells, W_cells) for the whole of video i at full frame.
    """

    def __init__(self, video_logits: list[np.ndarray], geometry: MapGeometry):
        self.video_logits = [torch.as_tensor(v, dtype=torch.float32) for v in video_logits]
        self.geometry = geometry

    @classmethod
    def for_run(cls, teacher: torch.nn.Module, videos: PreparedSet, config, device, rank: int = 0,
                world_size: int = 1) -> "TeacherMapCache":
        """The maps of every training video, computed once and kept on disk.

        The folder is named by the teacher's registry version, the data and the clip
        geometry, so later runs and tuning trials with the same teacher reuse it. Each rank
        computes the videos `i % world_size == rank` that are missing, then all read all.
        """
        from vidistill.trainers import tracking

        entry = tracking.resolve_model_version(config.distill.teacher)
        key = hashlib.sha256(json.dumps([entry.name, entry.version, videos.content_hash, config.data.clip_length,
                                         config.data.crop_size]).encode()).hexdigest()[:16]
        folder = tracking.vidistill_home() / "teacher_maps" / key
        folder.mkdir(parents=True, exist_ok=True)
        geometry = map_geometry(teacher, config.data.clip_length, config.data.crop_size)
        for i in range(rank, len(videos.videos), world_size):
            path = folder / f"{i:06d}.npy"
            if path.exists():
                continue
            flow = pad_in_time(read_video_flow(videos, i), config.data.clip_length)
            logits = video_map_logits(teacher, flow.to(device))
            partial = path.with_suffix(f".{rank}.tmp.npy")
            np.save(partial, logits.numpy())
            os.replace(partial, path)  # a killed run never leaves half a file under the final name
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return cls([np.load(folder / f"{i:06d}.npy") for i in range(len(videos.videos))], geometry)

    def clip_log_probs(self, video_index: torch.Tensor, start: torch.Tensor, crop: torch.Tensor,
                       flip: torch.Tensor) -> torch.Tensor:
        """The teacher's log p(A) for a batch of clips, as the loader's metadata describes them."""
        maps = [
            self._window(int(v), int(s), int(y0), int(x0), bool(f))
            for v, s, (y0, x0), f in zip(video_index, start, crop, flip)
        ]
        return spatial_log_softmax(torch.stack(maps))

    def _window(self, video: int, start: int, y0: int, x0: int, flip: bool) -> torch.Tensor:
        g = self.geometry
        logits = self.video_logits[video]  # (T, H, W) cells
        t, h, w = g.grid
        # Cell centres of the clip's map, in the video map's cell coordinates.
        coords = [
            (start + (torch.arange(t) + 0.5) * g.frames_per_cell) / g.frames_per_cell - 0.5,
            (y0 + (torch.arange(h) + 0.5) * g.pixels_per_cell) / g.pixels_per_cell - 0.5,
            (x0 + (torch.arange(w) + 0.5) * g.pixels_per_cell) / g.pixels_per_cell - 0.5,
        ]
        window = logits
        for axis, c in enumerate(coords):
            window = _linear_sample(window, c, axis)
        return window.flip(-1) if flip else window


# I3D's phi (Mixed_4f) in time: stride 4 (Conv3d_1a and MaxPool3d_4a, stride 2 each), and a cell
# sees its 4 frames and up to 31 more on either side (Conv3d_1a 3, Conv3d_2c 2, Mixed_3b/3c 2
# each, MaxPool3d_4a 2, Mixed_4b-4f 4 each); 32 keeps the margin a multiple of the stride.
# A map from Mixed_5c (map_block, issue 13): stride 8 (MaxPool3d_5a merges two Mixed_4f cells), and
# Mixed_5b/5c see 8 frames more each: 47 frames, 48 a multiple of the stride.
PHI_TIME_STRIDE, PHI_TIME_MARGIN = 4, 32
MAP_TIME_GEOMETRY = {"Mixed_4f": (PHI_TIME_STRIDE, PHI_TIME_MARGIN), "Mixed_5c": (8, 48)}
CHUNK_FRAMES = 256  # frames of a chunk's own cells: long untrimmed videos never go through in one pass


def video_map_logits(teacher: torch.nn.Module, flow: torch.Tensor, chunk_frames: int = CHUNK_FRAMES) -> torch.Tensor:
    """The teacher's map logits (w_a * phi, before the softmax) over a whole (2, T, H, W) flow video.

    A long video goes through in chunks of `chunk_frames` frames' cells, each read with the map
    block's margin of context (PHI_TIME_MARGIN frames for Mixed_4f) on either side, so every cell
    sees exactly the frames it sees in one pass over the whole video: the maps are unchanged (to
    float rounding). Chunks start on the stride and their lengths are the video's modulo the
    stride, so SAME padding puts their grids where the whole video's lies.
    """
    stride, margin = MAP_TIME_GEOMETRY[getattr(teacher, "map_block", "Mixed_4f")]
    if chunk_frames % stride or chunk_frames < stride:
        raise ValueError(f"chunk_frames must be a positive multiple of {stride}, got {chunk_frames}")
    frames = flow.shape[1]

    def logits_of(part: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            phi, _ = teacher.forward_features(part.unsqueeze(0))
            return teacher.head.proj(phi)[0, 0].float().cpu()  # channel 0: the teacher's one branch

    if frames <= chunk_frames + 2 * margin:
        return logits_of(flow)
    cells = math.ceil(frames / stride)
    step = chunk_frames // stride
    pieces = []
    for first in range(0, cells, step):
        last = min(first + step, cells)
        begin = max(0, first * stride - margin)
        end = min(frames, last * stride + margin)
        end = min(frames, end + (frames - end) % stride)  # length = the video's, mod the stride
        offset = begin // stride
        pieces.append(logits_of(flow[:, begin:end])[first - offset:last - offset])
    return torch.cat(pieces)


def read_video_flow(videos: PreparedSet, index: int) -> torch.Tensor:
    """All flow images of one prepared video as (2, T, H, W) in [-1, 1] (the loaders' scaling)."""
    video = videos.videos[index]
    planes = []
    for pair in range(video.flow_frames):
        x_name, y_name = videos.templates.flow_names(pair)
        pair_planes = [cv2.imread(str(video.directory / name), cv2.IMREAD_GRAYSCALE) for name in (x_name, y_name)]
        if any(p is None for p in pair_planes):
            raise FileNotFoundError(f"flow image {video.directory / x_name} (or its y pair) is missing or unreadable; "
                                    "re-prepare this video")
        planes.append(np.stack(pair_planes))
    flow = torch.from_numpy(np.stack(planes, axis=1)).float()  # (2, T, H, W)
    return flow / 127.5 - 1.0


def pad_in_time(flow: torch.Tensor, length: int) -> torch.Tensor:
    """A (C, T, H, W) video shorter than `length` frames, its last frame repeated up to `length`:
    the padding the loaders give a clip longer than its video, so the whole video's map is the
    map of that clip."""
    missing = length - flow.shape[1]
    if missing <= 0:
        return flow
    return torch.cat([flow, flow[:, -1:].expand(-1, missing, -1, -1)], dim=1)


def _linear_sample(x: torch.Tensor, coords: torch.Tensor, axis: int) -> torch.Tensor:
    """x sampled at fractional positions along one axis (linear, clamped at the edges)."""
    size = x.shape[axis]
    coords = coords.clamp(0, size - 1)
    lo = coords.floor().long().clamp(max=size - 1)
    hi = (lo + 1).clamp(max=size - 1)
    frac = (coords - lo).to(x.dtype)
    shape = [1] * x.dim()
    shape[axis] = -1
    frac = frac.reshape(shape)
    return x.index_select(axis, lo) * (1 - frac) + x.index_select(axis, hi) * frac

