"""A synthetic motion benchmark: real encoded videos whose class is defined by motion only.

Every video shows several identical objects (same shape, same colour) on a noisy background.
One of them moves; the others (distractors) stand still. The class is the moving object's
motion pattern (direction, speed change, oscillation, rotation...). No single frame tells the
class, and no object looks different from another, so an appearance model cannot solve it
while a flow model can: the test bed for "does distilling motion attention help the RGB
student". The harder levels (`DIFFICULTIES`) add decoys: smaller copies that also move with
class patterns, so that the class is only in the larger mover's motion, read where it is.
Output is the generic layout::

    <out>/classes.txt                class names, line order = label
    <out>/<class>/<class>_000.avi    encoded videos (mpeg4 .avi, h264 .mp4, vp9 .webm, mjpeg .avi)
    <out>/train.txt, <out>/test.txt  `<class>/<file> <label>` lines
    <out>/synthetic.json             the generator config, for lineage
    <out>/actors.json                the moving actor's centre in every frame of every video

Deterministic for a seed: each video draws from its own generator seeded by
(seed, class, video), so changing the number of videos never changes the existing ones.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from vidistill.datasets.errors import DatasetError
from vidistill.datasets.video import CODECS, write_video

ACTORS_FILE = "actors.json"


def _still(t: np.ndarray) -> np.ndarray:
    return np.zeros_like(t)


# name -> t -> (dx, dy, rotation) at normalised times t in [0, 1]: offsets in units of the travel
# span (a fraction of the frame, drawn per video), rotation in radians.
MOTION_PATTERNS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "move-right": lambda t: (t, _still(t), _still(t)),
    "move-left": lambda t: (-t, _still(t), _still(t)),
    "move-down": lambda t: (_still(t), t, _still(t)),
    "move-up": lambda t: (_still(t), -t, _still(t)),
    "accelerate-right": lambda t: (t * t, _still(t), _still(t)),
    "oscillate-horizontal": lambda t: (0.5 * np.sin(4 * math.pi * t), _still(t), _still(t)),
    "rotate-clockwise": lambda t: (_still(t), _still(t), 2 * math.pi * t),
    "rotate-anticlockwise": lambda t: (_still(t), _still(t), -2 * math.pi * t),
}


@dataclass(frozen=True)
class SyntheticConfig:
    classes: int = 4  # the first N motion patterns
    videos_per_class: int = 8
    frames: int = 48
    width: int = 160
    height: int = 120
    fps: float = 25.0
    distractors: int = 3
    noise: float = 0.03  # std of per-pixel Gaussian noise, fraction of 255
    codec: str = "mpeg4"
    test_fraction: float = 0.25
    seed: int = 0
    # The difficulty levers (issue 13): where-to-look matters more with smaller actors among
    # more identical static copies, and distractors that drift make "something moves" no
    # longer enough to find the actor (a flow teacher must see *how* it moves).
    actor_size: float = 0.18  # the object's size as a fraction of min(width, height)
    distractor_drift: float = 0.0  # pixels per frame each distractor drifts, in a random direction
    # Decoys: smaller copies that move like an actor, each with a motion pattern drawn from the
    # classes (the actor's own included). Without them the actor is the only thing that moves, so
    # a Mixed_4f cell anywhere in the crop, whose receptive field covers most of it, sees the
    # class, and the teacher's map is free to encode the class by *where* it looks (measured: a
    # border cell per class, 0.7-1.3x uniform on the actor). With decoys "something moves right"
    # no longer gives the class: only the larger mover's motion does, which a cell sees best where
    # that mover is, and an RGB network can find it by its size once told where to look.
    # How far the actor travels over the video, as a fraction of the frame (drawn per video). A
    # long travel ties where the actor is to its class (a move-right actor starts on the left),
    # a place a teacher's map can encode the class by; a short one frees it.
    travel: tuple[float, float] = (0.35, 0.55)
    decoys: int = 0
    decoy_scale: float = 0.6  # a decoy's size over the actor's

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= len(MOTION_PATTERNS):
            raise DatasetError(
                f"classes must be 2..{len(MOTION_PATTERNS)} (the motion patterns: "
                f"{', '.join(MOTION_PATTERNS)})"
            )
        if self.codec not in CODECS:
            raise DatasetError(f"unknown codec {self.codec!r}; choose one of {sorted(CODECS)}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 32:
            raise DatasetError("width and height must be even and at least 32")
        if self.frames < 2 or self.videos_per_class < 1 or self.distractors < 0:
            raise DatasetError("need frames >= 2, videos_per_class >= 1, distractors >= 0")
        if not 0.0 < self.travel[0] <= self.travel[1] <= 0.8:
            raise DatasetError(f"travel must be (low, high) with 0 < low <= high <= 0.8, got {self.travel}")
        if self.decoys < 0 or not 0.2 <= self.decoy_scale <= 0.9:
            raise DatasetError(f"need decoys >= 0 (got {self.decoys}) and decoy_scale in [0.2, 0.9] (got "
                               f"{self.decoy_scale}): a decoy must stay visibly smaller than the actor")
        if not 0.04 <= self.actor_size <= 0.4 or self.distractor_drift < 0:
            raise DatasetError(f"need actor_size in [0.04, 0.4] (got {self.actor_size}) and distractor_drift >= 0 "
                               f"(got {self.distractor_drift})")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(MOTION_PATTERNS)[: self.classes]


def _object_outline(size: float) -> np.ndarray:
    """An arrow-like outline (asymmetric, so rotation is visible), centred on the origin."""
    return size * np.array(
        [[-0.5, -0.3], [0.1, -0.3], [0.1, -0.5], [0.5, 0.0], [0.1, 0.5], [0.1, 0.3], [-0.5, 0.3]]
    )


def _draw(image: np.ndarray, centre, angle: float, outline: np.ndarray, colour) -> None:
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = outline @ rotation.T + np.asarray(centre)
    shift = 4  # sub-pixel precision, so slow motion moves smoothly
    cv2.fillPoly(image, [np.rint(points * (1 << shift)).astype(np.int32)], colour, cv2.LINE_AA, shift)


def _trajectory(pattern: str, config: SyntheticConfig, rng: np.random.Generator, size: float):
    """(centres (frames, 2), angles (frames,)) of an object of `size` px moving with `pattern`,
    at a speed and start drawn so that it stays inside the frame."""
    width, height = config.width, config.height
    t = np.linspace(0.0, 1.0, config.frames)
    dx, dy, angle = MOTION_PATTERNS[pattern](t)
    span = rng.uniform(*config.travel) * np.array([width, height])  # speed varies across videos
    path = np.stack([dx, dy], axis=1) * span
    margin = size * 0.6
    low = margin - path.min(axis=0)
    high = np.array([width, height]) - margin - path.max(axis=0)
    start = rng.uniform(low, np.maximum(low, high))
    start_angle = rng.uniform(0, 2 * math.pi)
    return start + path, start_angle + angle


def render_video(pattern: str, config: SyntheticConfig, rng: np.random.Generator,
                 actor_track: list | None = None) -> np.ndarray:
    """(frames, height, width, 3) uint8 RGB frames of one video of the given motion pattern;
    the moving actor's centre (x, y) in pixels at every frame is appended to `actor_track`."""
    width, height = config.width, config.height
    size = config.actor_size * min(width, height)
    outline = _object_outline(size)
    background = rng.integers(30, 100, size=3)
    colour = tuple(int(c) for c in rng.integers(150, 256, size=3))
    centres, angles = _trajectory(pattern, config, rng, size)
    margin = size * 0.6
    distractors = [
        (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin),
         rng.uniform(0, 2 * math.pi))
        for _ in range(config.distractors)
    ]
    # Drawn after everything else, and only when asked for, so the default set stays as it was.
    drift = np.zeros((len(distractors), 2))
    if config.distractor_drift > 0:
        heading = rng.uniform(0, 2 * math.pi, len(distractors))
        drift = config.distractor_drift * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    decoy_size = config.decoy_scale * size
    decoys = [_trajectory(str(rng.choice(config.class_names)), config, rng, decoy_size)
              for _ in range(config.decoys)]
    decoy_outline = _object_outline(decoy_size)
    video = np.empty((config.frames, height, width, 3), np.uint8)
    for i in range(config.frames):
        image = np.empty((height, width, 3), np.uint8)
        image[:] = background
        for (x, y, a), (vx, vy) in zip(distractors, drift):
            _draw(image, (x + vx * i, y + vy * i), a, outline, colour)
        for decoy_centres, decoy_angles in decoys:
            _draw(image, decoy_centres[i], decoy_angles[i], decoy_outline, colour)
        _draw(image, centres[i], angles[i], outline, colour)
        if actor_track is not None:
            actor_track.append([float(c) for c in centres[i]])
        noisy = image + rng.normal(0.0, config.noise * 255.0, image.shape)
        video[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return video


# The generator's difficulty axis: SyntheticConfig fields per level, on top of a size's own
# (classes, videos, frames). "easy" is the set the accuracy benchmark and quickstart use.
# "medium" and "hard" add decoys: without moving clutter the flow teacher has no reason to look
# at the actor (see SyntheticConfig.decoys), and a comparison gated on its actor mass needs one.
DIFFICULTIES: dict[str, dict] = {
    "easy": dict(distractors=1),
    "medium": dict(distractors=2, actor_size=0.16, decoys=2, decoy_scale=0.55),
    "hard": dict(distractors=3, actor_size=0.13, distractor_drift=0.6, decoys=3, decoy_scale=0.7),
}


def make_synthetic(out: Path | str, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the benchmark into ``out`` (generic layout); returns ``out``."""
    out = Path(out)
    if (out / "classes.txt").exists():
        raise DatasetError(
            "already holds a dataset; choose an empty folder (generation is deterministic, so "
            "delete it to regenerate)",
            out,
        )
    out.mkdir(parents=True, exist_ok=True)
    extension = CODECS[config.codec][2]
    lists: dict[str, list[str]] = {"train": [], "test": []}
    actors: dict[str, list[list[float]]] = {}
    for label, name in enumerate(config.class_names):
        (out / name).mkdir(exist_ok=True)
        tests = max(1, round(config.videos_per_class * config.test_fraction))
        if config.videos_per_class == 1:
            tests = 0
        for index in range(config.videos_per_class):
            rng = np.random.default_rng([config.seed, label, index])
            relative = f"{name}/{name}_{index:03d}{extension}"
            actors[relative] = []
            write_video(out / relative, render_video(name, config, rng, actors[relative]), config.fps, config.codec)
            subset = "test" if index >= config.videos_per_class - tests else "train"
            lists[subset].append(f"{relative} {label}")
    (out / "classes.txt").write_text("\n".join(config.class_names) + "\n")
    for subset, lines in lists.items():
        (out / f"{subset}.txt").write_text("".join(line + "\n" for line in lines))
    (out / "synthetic.json").write_text(json.dumps(asdict(config), indent=1))
    # Where the moving actor is in every frame (source pixels): what a teacher's map should find.
    (out / ACTORS_FILE).write_text(json.dumps({"width": config.width, "height": config.height, "fps": config.fps,
                                               "centres": actors}))
    return out
