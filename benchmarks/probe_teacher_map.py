"""Where a registered flow teacher looks, on the test videos of a synthetic set (issue 13).

For every test video: the teacher's map on a centre crop of its first `clip` flow frames, its
mass on the moving actor's cell over a uniform map's (trainers/actor_mass.py, the measure every
distillation run logs on training clips), and the map averaged per class. A map that sits on
the same cells for every video of a class, away from the actor, encodes the class by *where*
it looks: Eq. 6 would distil that code, not where-to-look. With --receptive-field it also
prints how far a Mixed_4f cell sees: the share of |d phi / d input| of a centre and a corner
cell within a radius, on a clip of small noise.

    VIDISTILL_HOME=... python benchmarks/probe_teacher_map.py STUDY/easy models:/NAME@job-N --crop 80
    VIDISTILL_HOME=... python benchmarks/probe_teacher_map.py STUDY/easy models:/NAME@job-N --crop 80 --receptive-field

`STUDY/easy` is a folder holding `source/` (the synthetic set, with actors.json) and `prepared/`.
Measured (2026-12-07): see the README's "What the study says (issue 13)".
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vidistill.datasets.rawframes import open_rawframes
from vidistill.trainers.actor_mass import actor_mass_ratio, load_actor_tracks
from vidistill.trainers.models.attention import pool_attention_to_grid
from vidistill.trainers.teacher import load_teacher, read_video_flow


def actor_cells_of_centre_crop(track, scale, crop, origin, clip, grid):
    slices, rows, cols = grid
    cells = []
    for t in range(slices):
        x, y = np.asarray(track[int((t + 0.5) * clip / slices)]) * scale - origin
        inside = 0 <= x < crop and 0 <= y < crop
        cells.append((int(y * rows // crop), int(x * cols // crop)) if inside else None)
    return cells


def offset_actor_mass(followed: list) -> dict:
    """The actor mass at the best fixed offset (rows, cols) from the actor's cell, over uniform.
    A map that follows the actor at a constant displacement (measured at a 256 px crop: 4-5 cells
    above and 3-4 right of it, as far as a Mixed_4f cell sees) has a high ratio here and a low one
    on the actor's own cell; a class code (the same cells for every video of a class, wherever
    its actor is) has neither. The offset is chosen on the same maps, so a uniform map scores a
    little above 1."""
    rows, cols = followed[0][0].shape
    best = (0.0, (0, 0))
    for dr in range(-rows // 2, rows // 2 + 1):
        for dc in range(-cols // 2, cols // 2 + 1):
            masses = [m[r + dr, c + dc] for m, (r, c) in followed if 0 <= r + dr < rows and 0 <= c + dc < cols]
            if len(masses) >= len(followed) // 2:  # an offset most actors' cells can take
                best = max(best, (float(np.mean(masses)) * rows * cols, (dr, dc)))
    return {"offset_actor_mass_ratio": best[0], "best_offset_cells": list(best[1])}


def probe(folder: Path, uri: str, crop: int, clip: int) -> dict:
    teacher = load_teacher(uri)
    videos = open_rawframes(folder / "prepared")
    tracks = load_actor_tracks(folder / "source")
    tests = {line.split()[0].rsplit(".", 1)[0] for line in (folder / "source" / "test.txt").read_text().splitlines()}
    ratios, block5_ratios, per_class, per_class_ratios, correct, followed = [], [], {}, {}, [], []
    for index, video in enumerate(videos.videos):
        if video.video_id not in tests:
            continue
        flow = read_video_flow(videos, index)
        height, width = flow.shape[-2:]
        top, left = (height - crop) // 2, (width - crop) // 2
        with torch.no_grad():
            x = flow[:, :clip, top:top + crop, left:left + crop].unsqueeze(0)
            phi, features = teacher.forward_features(x)  # one backbone pass: the head and the block-5 grid
            output = teacher.forward_head(phi, features)
        probs = next(iter(output.attention.values())).probs[0]
        correct.append(int(output.logits[0].argmax()) == video.label)
        scale = np.array([width / tracks["width"], height / tracks["height"]])
        origin = np.array([left, top])
        cells = actor_cells_of_centre_crop(tracks["centres"][video.video_id], scale, crop, origin, clip,
                                           tuple(probs.shape))
        ratio = actor_mass_ratio(probs, cells)
        # The map as it weights the block-5 features (Mixed_4f's carried onto their grid, Eq. 4):
        # the same measure for a map from either block.
        pooled = pool_attention_to_grid(probs.unsqueeze(0), tuple(features.shape[2:]))[0]
        pooled_ratio = actor_mass_ratio(pooled, actor_cells_of_centre_crop(
            tracks["centres"][video.video_id], scale, crop, origin, clip, tuple(pooled.shape)))
        name = video.video_id.split("/")[0]
        if ratio is not None:
            ratios.append(ratio)
            per_class_ratios.setdefault(name, []).append(ratio)
        if pooled_ratio is not None:
            block5_ratios.append(pooled_ratio)
        per_class.setdefault(name, []).append(probs.mean(0).numpy())
        followed.extend((probs[t].numpy(), cell) for t, cell in enumerate(cells) if cell is not None)
    # Top-1 of this one centre clip per test video: whether the probed teacher learnt at all
    # (the evaluate job's accuracy averages several clips).
    return {"videos": len(ratios), "centre_clip_top1": float(np.mean(correct)), "actor_mass_ratio_mean": float(np.mean(ratios)),
            "actor_mass_ratio_median": float(np.median(ratios)), "grid": list(probs.shape),
            "actor_mass_ratio_per_class": {name: round(float(np.mean(r)), 2) for name, r in sorted(per_class_ratios.items())},
            "block5_actor_mass_ratio_mean": float(np.mean(block5_ratios)),
            "block5_actor_mass_ratio_median": float(np.median(block5_ratios)), "block5_grid": list(pooled.shape),
            **offset_actor_mass(followed),
            "mean_map_per_class": {name: np.mean(maps, 0).round(3).tolist() for name, maps in per_class.items()}}


def receptive_field(uri: str, crop: int, clip: int) -> list[dict]:
    teacher = load_teacher(uri)
    x = (torch.randn(1, 2, clip, crop, crop, generator=torch.Generator().manual_seed(0)) * 0.05).requires_grad_(True)
    phi, _ = teacher.forward_features(x)
    _, _, slices, rows, cols = phi.shape
    ys, xs = np.mgrid[:crop, :crop]
    cells = []
    for row, col in ((rows // 2, cols // 2), (0, 0)):
        gradient, = torch.autograd.grad(phi[0, :, slices // 2, row, col].sum(), x, retain_graph=True)
        weight = gradient.abs().sum((0, 1, 2)).numpy()
        weight /= weight.sum()
        cy, cx = (weight * ys).sum(), (weight * xs).sum()
        radius = np.hypot(ys - cy, xs - cx).ravel()
        order = np.argsort(radius)
        r90 = radius[order][np.searchsorted(np.cumsum(weight.ravel()[order]), 0.9)]
        cells.append({"cell": [row, col], "gradient_centre_px": [round(float(cy)), round(float(cx))],
                      "radius_90_percent_px": round(float(r90))})
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("teacher")
    parser.add_argument("--crop", type=int, default=80)
    parser.add_argument("--clip", type=int, default=16)
    parser.add_argument("--receptive-field", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = probe(args.folder, args.teacher, args.crop, args.clip)
    if args.receptive_field:
        result["receptive_field"] = receptive_field(args.teacher, args.crop, args.clip)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
