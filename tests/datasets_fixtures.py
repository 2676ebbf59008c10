"""Shared test data for the tests/test_datasets_*.py modules: real encoded videos written by the
synthetic generator at test time, and one small prepared rawframes set built once per session.

Plain functions keyed on pytest's session temp folder (not fixtures), so several modules can
share what is built without a conftest.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from vidistill.datasets.layouts import DatasetConfig, list_all_videos
from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic, render_video
from vidistill.datasets.video import write_video

# Small enough for a 2-core CPU: 4 classes x 2 videos, 30 frames at 25 fps -> 29 frames at 24 fps.
SMALL_SYNTHETIC = SyntheticConfig(classes=4, videos_per_class=2, frames=30, width=96, height=72,
                                  fps=25.0, distractors=2, noise=0.02, codec="mpeg4", seed=3)
SMALL_PREPARED_SIZE = (160, 128)  # width, height; crops of 112 fit


def write_motion_video(path: Path, pattern: str, frames: int, fps: float, size: tuple[int, int],
                       codec: str, seed: int = 0, keep: int | None = None) -> Path:
    """A real encoded video of one synthetic motion pattern; ``keep`` writes only its first
    frames (slow motion in a short file)."""
    config = SyntheticConfig(frames=frames, width=size[0], height=size[1], fps=fps, codec=codec,
                             distractors=1, noise=0.01, classes=8)
    video = render_video(pattern, config, np.random.default_rng(seed))
    return write_video(path, video[:keep], fps, codec)


def synthetic_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "shared-synthetic"
    if not (root / "synthetic.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        make_synthetic(root, SMALL_SYNTHETIC)
    return root


def prepared_dataset(tmp_path_factory) -> Path:
    """The small synthetic set prepared with Farneback flow at 160x128 (built once per session)."""
    out = tmp_path_factory.getbasetemp() / "shared-prepared"
    if not (out / "manifest.json").exists():
        root = synthetic_dataset(tmp_path_factory)
        listing = list_all_videos(DatasetConfig(root, "generic"))
        width, height = SMALL_PREPARED_SIZE
        result = prepare_dataset(
            listing,
            PrepareConfig(out, width=width, height=height, flow_method="farneback", workers=2),
        )
        assert not result.failed, result.failed
    return out
