"""A synthetic untrimmed benchmark: long real videos with short motion-defined actions.

Each video shows identical objects on a noisy background. Every action instance is one of
them performing a motion pattern of the recognition benchmark (`datasets/synthetic.py`) for
1.5-4 s at a random time, standing still before and after; instances may overlap in time.
Clutter: still distractors, and one distractor drifting in a slow random walk the whole video
(motion that is not an action). As in the recognition set, no frame shows which object acts
or what it does: only motion does. Written with THUMOS14-style annotations, so the
`thumos14` layout reads it::

    <out>/videos/video_validation_0000001.avi ...  video_test_0000001.avi ...
    <out>/annotations/<Class>_val.txt, <Class>_test.txt    `video start end` lines (seconds)
    <out>/synthetic_untrimmed.json                         the generator config (lineage)

Deterministic per (seed, subset, video). `size="tiny"` trains a detector on a 2-core CPU in
minutes; `size="large"` is for a GPU.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vidistill.datasets.errors import DatasetError
from vidistill.datasets.synthetic import MOTION_PATTERNS, _draw, _object_outline
from vidistill.datasets.video import CODECS, write_video


@dataclass(frozen=True)
class UntrimmedConfig:
    classes: int = 4  # the first N motion patterns
    train_videos: int = 12  # the `val` subset, trained on (THUMOS14 convention)
    test_videos: int = 6
    min_seconds: float = 20.0
    max_seconds: float = 30.0
    actions_per_video: tuple[int, int] = (2, 4)  # inclusive range
    min_action_seconds: float = 1.5
    max_action_seconds: float = 4.0
    fps: float = 10.0
    width: int = 96
    height: int = 72
    distractors: int = 2
    noise: float = 0.03
    codec: str = "mpeg4"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.classes <= len(MOTION_PATTERNS):
            raise DatasetError(f"classes must be 1..{len(MOTION_PATTERNS)}")
        if self.codec not in CODECS:
            raise DatasetError(f"unknown codec {self.codec!r}; choose one of {sorted(CODECS)}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 32:
            raise DatasetError("width and height must be even and at least 32")
        if not 0 < self.min_action_seconds <= self.max_action_seconds < self.min_seconds <= self.max_seconds:
            raise DatasetError("need 0 < min_action_seconds <= max_action_seconds < min_seconds <= max_seconds")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(MOTION_PATTERNS)[: self.classes]


SIZES = {
    "tiny": UntrimmedConfig(),
    "large": UntrimmedConfig(classes=8, train_videos=200, test_videos=100, min_seconds=30, max_seconds=60,
                             actions_per_video=(3, 8), fps=24.0, width=320, height=256, distractors=3),
}


def untrimmed_config(size: str = "tiny", **overrides) -> UntrimmedConfig:
    if size not in SIZES:
        raise DatasetError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    return replace(SIZES[size], **overrides)


def render_untrimmed(config: UntrimmedConfig, rng: np.random.Generator):
    """(frames (T, H, W, 3) uint8, [(start_s, end_s, label)]) of one video."""
    width, height = config.width, config.height
    fps = config.fps
    frames = int(round(rng.uniform(config.min_seconds, config.max_seconds) * fps))
    size = 0.16 * min(width, height)
    outline = _object_outline(size)
    margin = size * 0.6
    background = rng.integers(30, 100, size=3)
    colour = tuple(int(c) for c in rng.integers(150, 256, size=3))
    low, high = config.actions_per_video
    actions = []
    for _ in range(int(rng.integers(low, high + 1))):
        label = int(rng.integers(config.classes))
        length = int(round(rng.uniform(config.min_action_seconds, config.max_action_seconds) * fps))
        start = int(rng.integers(0, frames - length))
        t = np.clip((np.arange(frames) - start) / max(length - 1, 1), 0.0, 1.0)  # still before and after
        dx, dy, angle = MOTION_PATTERNS[config.class_names[label]](t)
        path = np.stack([dx, dy], axis=1) * rng.uniform(0.3, 0.45) * np.array([width, height])
        lo = margin - path.min(axis=0)
        hi = np.array([width, height]) - margin - path.max(axis=0)
        origin = rng.uniform(lo, np.maximum(lo, hi))
        # Annotated as the frames in which the object moves: [start, start + length) / fps.
        actions.append((origin + path, rng.uniform(0, 2 * math.pi) + angle, (start / fps, (start + length) / fps, label)))
    still = [(rng.uniform(margin, width - margin), rng.uniform(margin, height - margin), rng.uniform(0, 2 * math.pi))
             for _ in range(config.distractors)]
    # A slow random walk (about 1 px per frame), smoothed: motion without an action.
    walk = np.cumsum(rng.normal(0, 1.0, size=(frames, 2)), axis=0)
    walk = np.clip(walk + [width / 2, height / 2], margin, [width - margin, height - margin])
    walk_angle = rng.uniform(0, 2 * math.pi)
    video = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        image = np.empty((height, width, 3), np.uint8)
        image[:] = background
        for x, y, a in still:
            _draw(image, (x, y), a, outline, colour)
        _draw(image, walk[i], walk_angle, outline, colour)
        for positions, angles, _ in actions:
            _draw(image, positions[i], angles[i], outline, colour)
        noisy = image + rng.normal(0.0, config.noise * 255.0, image.shape)
        video[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return video, sorted(segment for _, _, segment in actions)


def make_untrimmed(out: Path | str, config: UntrimmedConfig = UntrimmedConfig()) -> Path:
    """Write the benchmark into `out` (THUMOS14-style annotations); returns `out`."""
    out = Path(out)
    if (out / "synthetic_untrimmed.json").exists():
        raise DatasetError("already holds a data set; choose an empty folder (generation is deterministic, "
                           "so delete it to regenerate)", out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    extension = CODECS[config.codec][2]
    for subset, name, count, code in (("val", "validation", config.train_videos, 0),
                                      ("test", "test", config.test_videos, 1)):
        lines: dict[str, list[str]] = {c: [] for c in config.class_names}
        for index in range(count):
            video_id = f"video_{name}_{index + 1:07d}"
            frames, segments = render_untrimmed(config, np.random.default_rng([config.seed, code, index]))
            write_video(out / "videos" / f"{video_id}{extension}", frames, config.fps, config.codec)
            for start, end, label in segments:
                lines[config.class_names[label]].append(f"{video_id} {start:.2f} {end:.2f}")
        for cls, rows in lines.items():
            (out / "annotations" / f"{cls}_{subset}.txt").write_text("".join(r + "\n" for r in rows))
    (out / "synthetic_untrimmed.json").write_text(json.dumps(asdict(config), indent=1))
    return out
