"""The clip tensor math on the CPU, in numpy: crop, flip, colour perturbation, normalisation.

The OpenCV and PyAV backends use these functions; the DALI pipeline (dali.py) builds the same
operations, in the same order and float32 precision, from DALI operators. A test holds the two
equal, so change both together.

    RGB   x = float32(frame);  x = x * contrast + shift;  g = .299 R + .587 G + .114 B
          x = g + (x - g) * saturation;  x = clamp(x, 0, 255);  out = x / 127.5 - 1
    flow  out = v / 127.5 - 1  (= flow / bound);  x component negated on a horizontal flip
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from vidistill.datasets.loaders.plan import ClipSpec

GREY_WEIGHTS = (0.299, 0.587, 0.114)


def crop_flip(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """(T, H, W[, C]) -> the spec's crop, mirrored left-right if the spec flips."""
    out = frames[:, spec.crop_y : spec.crop_y + spec.crop_height, spec.crop_x : spec.crop_x + spec.crop_width]
    return out[:, :, ::-1] if spec.flip else out


def rgb_to_unit(frames: np.ndarray, spec: ClipSpec, jitter: bool) -> np.ndarray:
    """uint8 (T, h, w, 3) RGB -> float32 in [-1, 1], colour-perturbed if ``jitter``."""
    x = frames.astype(np.float32)
    if jitter:
        x = x * np.float32(spec.contrast) + np.float32(spec.brightness_shift)
        r, g, b = (np.float32(w) for w in GREY_WEIGHTS)
        grey = x[..., 0:1] * r + x[..., 1:2] * g + x[..., 2:3] * b
        x = grey + (x - grey) * np.float32(spec.saturation)
        x = np.clip(x, np.float32(0.0), np.float32(255.0))
    return x / np.float32(127.5) - np.float32(1.0)


def flow_to_unit(flow_x: np.ndarray, flow_y: np.ndarray, flipped: bool) -> np.ndarray:
    """uint8 (T, h, w) x and y images -> float32 (T, h, w, 2) in [-1, 1]; a mirrored clip
    moves the other way, so its x component changes sign."""
    x = flow_x.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    y = flow_y.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    if flipped:
        x = -x
    return np.stack([x, y], axis=-1)


def to_channels_first(clip: np.ndarray) -> torch.Tensor:
    """(T, h, w, C) -> (C, T, h, w) torch float32."""
    return torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))


def batch_metadata(specs: Sequence[ClipSpec]) -> dict[str, torch.Tensor]:
    """The non-image entries of a batch dict, from the clips' specs."""
    return {
        "label": torch.tensor([s.label for s in specs], dtype=torch.int64),
        "video_index": torch.tensor([s.video_index for s in specs], dtype=torch.int64),
        "start": torch.tensor([s.start for s in specs], dtype=torch.int64),
        "crop": torch.tensor([[s.crop_y, s.crop_x] for s in specs], dtype=torch.int64),
        "flip": torch.tensor([s.flip for s in specs], dtype=torch.bool),
    }


def collate_clips(items: list[dict]) -> dict:
    """Stack per-clip items ({"spec", "rgb"?, "flow"?}) into the batch dict of the contract."""
    batch = {key: torch.stack([item[key] for item in items]) for key in ("rgb", "flow") if key in items[0]}
    batch.update(batch_metadata([item["spec"] for item in items]))
    return batch
