"""Attention maps drawn over video frames, as in Fig. 2 of the paper.

Each clip becomes a row: for the first and the last frame, the frame with every map of the
model overlaid (red = more attention). The map of a frame is the time slice of phi's grid
that covers it, upsampled to the frame size.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def _frame_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8 BGR for OpenCV."""
    image = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def overlay(frame: np.ndarray, attention: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """One (h, w) map over one BGR frame; the map is scaled to its own maximum."""
    height, width = frame.shape[:2]
    heat = attention.float().cpu().numpy()
    heat = cv2.resize(heat / max(float(heat.max()), 1e-12), (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(frame, 1 - alpha, colour, alpha, 0)


def attention_grid(rgb_clips: torch.Tensor, maps: dict[str, torch.Tensor], label_names: list[str] | None = None
                   ) -> np.ndarray:
    """rgb_clips (B, 3, T, H, W) in [-1, 1]; maps name -> (B, T', h, w) probabilities. Returns a BGR image."""
    rows = []
    for b in range(rgb_clips.shape[0]):
        tiles = []
        for frame_index, slice_index in ((0, 0), (-1, -1)):
            frame = _frame_uint8(rgb_clips[b, :, frame_index])
            for name, attention in maps.items():
                tile = overlay(frame, attention[b, slice_index])
                caption = f"{name}, {'first' if frame_index == 0 else 'last'}"
                cv2.putText(tile, caption, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
                tiles.append(tile)
        if label_names:  # the true class, once per row
            cv2.putText(tiles[0], label_names[b], (2, tiles[0].shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def write_png(image: np.ndarray, path) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")
