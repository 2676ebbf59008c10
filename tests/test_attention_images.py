"""The attention images logged each epoch (Fig. 2): frame, semi-transparent maps, captions, teacher beside student."""
from __future__ import annotations

import numpy as np
import torch

from vidistill.trainers.attention_images import CAPTION_HEIGHT, attention_grid


def peaked(batch, t, h, w, y, x):
    maps = torch.full((batch, t, h, w), 1e-3)
    maps[:, :, y, x] = 1.0
    return maps / maps.sum(dim=(-2, -1), keepdim=True)


def test_rows_show_the_frame_then_maps_over_it_with_the_teacher_beside_the_student_motion_map():
    size = 64
    clips = torch.zeros(2, 3, 8, size, size)
    clips[:, :, :, :, : size // 2] = 0.8  # a bright left half: the frame, visible under the maps
    motion, appearance, teacher = peaked(2, 4, 4, 4, 0, 0), peaked(2, 4, 4, 4, 3, 3), peaked(2, 4, 4, 4, 0, 3)
    image = attention_grid(clips, {"motion": motion, "appearance": appearance}, ["walk", "run"],
                           {"motion": teacher})
    # Two clips x (first, last frame) rows; panels: frame, student motion, teacher motion, appearance, bar.
    panel = size
    assert image.shape[0] == 4 * (size + CAPTION_HEIGHT)
    assert image.shape[1] == 4 * panel + 34
    row = image[CAPTION_HEIGHT:CAPTION_HEIGHT + size]
    frame, student_motion, teacher_motion, student_appearance = (row[:, i * panel:(i + 1) * panel] for i in range(4))
    # The frame panel is the frame alone; in the map panels the frame still shows through.
    assert frame[:, : size // 2].mean() > 200 and frame[:, size // 2:].mean() < 160
    for tile in (student_motion, teacher_motion, student_appearance):
        grey = tile.mean(axis=2)
        assert grey[size // 2:, : size // 4].mean() > grey[size // 2:, size // 2: 3 * size // 4].mean() + 30
    # Each map's hottest place (JET: red) is where that map peaks: the teacher's top right.
    def red_peak(tile):
        redness = tile[..., 2].astype(int) - tile[..., 0].astype(int)
        y, x = np.unravel_index(np.argmax(redness), redness.shape)
        return y < size // 2, x < size // 2

    assert red_peak(student_motion) == (True, True)
    assert red_peak(teacher_motion) == (True, False)
    assert red_peak(student_appearance) == (False, False)
    # Captions live in their own strip above each panel: black apart from the text.
    strip = image[:CAPTION_HEIGHT, :4 * panel]
    assert (strip.max(axis=2) == 0).mean() > 0.6 and strip.max() > 150
    assert (image[CAPTION_HEIGHT:CAPTION_HEIGHT + 12, panel: 2 * panel] == student_motion[:12]).all()


def test_a_model_without_a_teacher_draws_its_maps_and_the_colour_bar():
    clips = torch.zeros(1, 3, 4, 32, 32)
    image = attention_grid(clips, {"motion": peaked(1, 2, 2, 2, 0, 0)})
    assert image.shape == (2 * (32 + CAPTION_HEIGHT), 2 * 32 + 34, 3)
    bar = image[CAPTION_HEIGHT:CAPTION_HEIGHT + 32, 2 * 32 + 2: 2 * 32 + 12]
    assert bar[1, 5, 2] > bar[1, 5, 0] and bar[-2, 5, 0] > bar[-2, 5, 2]  # red at the top, blue at the bottom
