"""The teacher's actor mass: how much of its map lies on the moving actor's cell, against a
uniform map (1.0: no better than uniform; H*W: all of it on the actor).

Eq. 6 can only distil where-to-look if the teacher looks at the actor; a map with a fixed
centre or border pattern passes on a prior, not motion. The synthetic generator records where
its moving actor is in every frame (`actors.json`), so for a synthetic data set every
distillation run logs `teacher_actor_mass_ratio` on its checked training clips, and every run of
a model with attention logs its own maps' `val_actor_mass_ratio_<branch>` on the validation clips
each epoch (whether, and when, a map finds the actor or leaves it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from vidistill.datasets.synthetic import ACTORS_FILE


def load_actor_tracks(root: str | Path) -> dict | None:
    """The generator's actor centres keyed by video_id (path without extension), or None."""
    path = Path(root) / ACTORS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    centres = {name.rsplit(".", 1)[0]: track for name, track in data["centres"].items()}
    return {"width": data["width"], "height": data["height"], "fps": data["fps"], "centres": centres}


def actor_cells(tracks: dict, video, spec, prepared_fps: float, clip_length: int, frames: int,
                grid: tuple[int, int, int]) -> list[tuple[int, int] | None]:
    """Per time slice of a clip's (T, H, W) map, the cell holding the actor at the slice's middle
    frame (None when the actor is outside the crop)."""
    track = tracks["centres"][video.video_id]
    sx, sy = video.width / tracks["width"], video.height / tracks["height"]
    slices, rows, cols = grid
    cells = []
    for t in range(slices):
        frame = min(spec.start + int((t + 0.5) * clip_length / slices), frames - 1)
        source = min(round(frame * tracks["fps"] / prepared_fps), len(track) - 1)
        x, y = track[source][0] * sx - spec.crop_x, track[source][1] * sy - spec.crop_y
        if spec.flip:
            x = spec.crop_width - x
        if not (0 <= x < spec.crop_width and 0 <= y < spec.crop_height):
            cells.append(None)
            continue
        cells.append((math.floor(y * rows / spec.crop_height), math.floor(x * cols / spec.crop_width)))
    return cells


def actor_mass_ratio(probs: torch.Tensor, cells: list[tuple[int, int] | None]) -> float | None:
    """Mean over the slices with the actor in view of the map's mass on its cell, over 1/(H*W)."""
    _, rows, cols = probs.shape
    masses = [float(probs[t, c[0], c[1]]) * rows * cols for t, c in enumerate(cells) if c is not None]
    return sum(masses) / len(masses) if masses else None


def teacher_actor_mass(live_log_probs: torch.Tensor, videos, specs, tracks: dict, prepared_fps: float,
                       clip_length: int) -> dict[str, float]:
    """{"teacher_actor_mass_ratio": mean over the clips} for the teacher's maps of `specs`."""
    ratios = []
    for log_probs, spec in zip(live_log_probs, specs):
        video = videos.videos[spec.video_index]
        frames = video.flow_frames or video.frames
        cells = actor_cells(tracks, video, spec, prepared_fps, clip_length, frames, tuple(log_probs.shape))
        ratio = actor_mass_ratio(log_probs.exp(), cells)
        if ratio is not None:
            ratios.append(ratio)
    return {"teacher_actor_mass_ratio": sum(ratios) / len(ratios)} if ratios else {}


def model_actor_mass(model: torch.nn.Module, loader, videos, tracks: dict, prepared_fps: float, clip_length: int,
                     input_key: str, device) -> dict[str, float]:
    """{"val_actor_mass_ratio_<branch>": mean over `loader`'s clips} of each attention branch of `model`.

    `loader` is a clip loader of `videos` (the validation clips); runs in eval mode, no gradient.
    """
    specs = [spec for batch in loader.planned_batches() for spec in batch]
    if not specs or not all(videos.videos[s.video_index].video_id in tracks["centres"] for s in specs):
        return {}
    was_training = model.training
    model.eval()
    maps: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in loader.load(loader.planned_batches()):
            for branch, amap in model(batch[input_key].to(device)).attention.items():
                maps.setdefault(branch, []).append(amap.log_probs.float().cpu())
    model.train(was_training)
    result = {}
    for branch, parts in maps.items():
        ratio = teacher_actor_mass(torch.cat(parts), videos, specs, tracks, prepared_fps, clip_length)
        if ratio:
            result[f"val_actor_mass_ratio_{branch}"] = ratio["teacher_actor_mass_ratio"]
    return result
