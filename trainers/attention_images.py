"""Attention maps drawn over video frames, as in Fig. 2 of the paper.

Each clip gives two rows, its first and its last frame (or, as frames of a short video, one
row per frame: `attention_frames`). A row is a strip of panels, each with
one caption above it (never over the picture): the frame itself, then every map of the model
drawn semi-transparent over the frame, the teacher's motion map right after the student's
motion map when there is a teacher (the two the distillation loss compares), and a colour bar.
The map of a frame is the time slice of phi's grid that covers it, upsampled to the frame
size, and scaled to its own maximum (the colour bar's top).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def _frame_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8 BGR for OpenCV."""
    image = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


CAPTION_HEIGHT = 14
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)


def overlay(frame: np.ndarray, attention: torch.Tensor, alpha: float = 0.45) -> np.ndarray:
    """One (h, w) map over one BGR frame, `alpha` opaque so the frame stays readable; the map is
    scaled to its own maximum."""
    height, width = frame.shape[:2]
    heat = attention.float().cpu().numpy()
    heat = cv2.resize(heat / max(float(heat.max()), 1e-12), (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(frame, 1 - alpha, colour, alpha, 0)


def captioned(image: np.ndarray, caption: str) -> np.ndarray:
    """`image` under a black strip holding `caption` (cut to the width), so no text covers a map."""
    strip = np.zeros((CAPTION_HEIGHT, image.shape[1], 3), np.uint8)
    scale = 0.33
    while caption and cv2.getTextSize(caption, _FONT, scale, 1)[0][0] > image.shape[1] - 4:
        caption = caption[:-1]
    cv2.putText(strip, caption, (2, CAPTION_HEIGHT - 4), _FONT, scale, _WHITE, 1, cv2.LINE_AA)
    return np.concatenate([strip, image], axis=0)


def colour_bar(height: int, width: int = 34) -> np.ndarray:
    """A vertical JET bar from 0 (bottom) to the map's maximum (top), labelled, captioned like the panels."""
    ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(10, axis=1)
    bar = np.zeros((height, width, 3), np.uint8)
    bar[:, 2:12] = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)
    cv2.putText(bar, "max", (13, 10), _FONT, 0.3, _WHITE, 1, cv2.LINE_AA)
    cv2.putText(bar, "0", (13, height - 3), _FONT, 0.3, _WHITE, 1, cv2.LINE_AA)
    return captioned(bar, "scale")


def _panel_order(names: list[str], teacher: dict | None) -> list[tuple[str, str]]:
    """(source, map name) per panel: the model's maps, the teacher's motion map after the motion map."""
    order = []
    for name in names:
        order.append(("model", name))
        if teacher and name == "motion":
            order += [("teacher", key) for key in teacher]
    if teacher and "motion" not in names:
        order += [("teacher", key) for key in teacher]
    return order


def _row(rgb_clips: torch.Tensor, b: int, frame_index: int, map_index: int, maps: dict[str, torch.Tensor],
         teacher_maps: dict[str, torch.Tensor] | None, caption: str) -> np.ndarray:
    """One row: frame `frame_index` of clip `b`, then each map's time slice `map_index` over it, then the bar."""
    frame = _frame_uint8(rgb_clips[b, :, frame_index])
    panels = [captioned(frame, caption)]
    for source, name in _panel_order(list(maps), teacher_maps):
        attention = (maps if source == "model" else teacher_maps)[name][b, map_index]
        # Short, to fit one panel: the model's maps by name, the teacher's as "teacher".
        label = ("teacher" if name == "motion" else f"teacher {name}") if source == "teacher" else name
        panels.append(captioned(overlay(frame, attention), label))
    panels.append(colour_bar(frame.shape[0]))
    return np.concatenate(panels, axis=1)


def attention_grid(rgb_clips: torch.Tensor, maps: dict[str, torch.Tensor], label_names: list[str] | None = None,
                   teacher_maps: dict[str, torch.Tensor] | None = None) -> np.ndarray:
    """rgb_clips (B, 3, T, H, W) in [-1, 1]; maps name -> (B, T', h, w) probabilities, and the teacher's
    (motion) maps of the same clips when there is a teacher. Returns a BGR image."""
    rows = []
    for b in range(rgb_clips.shape[0]):
        for frame_index, which in ((0, "first"), (-1, "last")):
            label = f"{label_names[b]}, " if label_names else ""
            rows.append(_row(rgb_clips, b, frame_index, frame_index, maps, teacher_maps, f"{label}{which} frame"))
    return np.concatenate(rows, axis=0)


def attention_frames(rgb_clip: torch.Tensor, maps: dict[str, torch.Tensor], label: str = "",
                     teacher_maps: dict[str, torch.Tensor] | None = None) -> list[np.ndarray]:
    """The row of `attention_grid` for every frame of one clip ((1, 3, T, H, W), maps (1, T', h, w)):
    frames of a short video. Frame t shows the map's time slice that covers it (t * T' // T)."""
    frames = rgb_clip.shape[2]
    slices = next(iter(maps.values())).shape[1]
    # The frame number first: a long label is cut to the panel's width, the number must stay.
    return [_row(rgb_clip, 0, t, t * slices // frames, maps, teacher_maps, f"{t + 1}/{frames} {label}".strip())
            for t in range(frames)]


def write_png(image: np.ndarray, path) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


ANIMATION_SUFFIXES = (".mp4", ".gif")


def write_animation(frames: list[np.ndarray], path, fps: float) -> None:
    """BGR images of one size into an H.264 .mp4 (sizes padded to even) or an animated .gif."""
    from pathlib import Path

    path = Path(path)
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
    if path.suffix.lower() == ".gif":
        from PIL import Image  # with matplotlib, a dependency

        images = [Image.fromarray(f) for f in rgb]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{path}: write .mp4 or .gif (or .png with write_png)")
    from vidistill.datasets.video import write_video

    height, width = rgb[0].shape[:2]
    rgb = [np.pad(f, ((0, height % 2), (0, width % 2), (0, 0))) for f in rgb]  # yuv420p needs even sizes
    write_video(path, rgb, fps, codec="h264")
