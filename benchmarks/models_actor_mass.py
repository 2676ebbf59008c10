"""Where registered models look, on the test videos of a synthetic set: each attention branch's
actor mass (trainers/actor_mass.py, against a uniform map's 1.0) over full-frame test clips.

The same measure every run logs on its validation clips each epoch (`val_actor_mass_ratio_<branch>`),
taken here on the test videos for finished models: a flow teacher, an RGB network's own
attention, a distilled student's motion and appearance branches (issue 13).

    VIDISTILL_HOME=H python benchmarks/models_actor_mass.py FOLDER --crop 256 --clip 16 \\
        --flow models:/TEACHER@job-7 --rgb models:/RGB-PROB-ATTEN@job-9 --rgb models:/STUDENT@job-10

`FOLDER` holds `source/` (the synthetic set, with actors.json) and `prepared/`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vidistill.datasets.rawframes import Manifest
from vidistill.trainers.actor_mass import load_actor_tracks, model_actor_mass
from vidistill.trainers.config import load_config
from vidistill.trainers.data import clip_loader, open_splits
from vidistill.trainers.teacher import load_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--flow", action="append", default=[], help="registry URI of a model that reads flow")
    parser.add_argument("--rgb", action="append", default=[], help="registry URI of a model that reads RGB")
    parser.add_argument("--crop", type=int, default=256, help="the training crop (the test clips are full frame)")
    parser.add_argument("--clip", type=int, default=16)
    parser.add_argument("--clips-per-video", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(overrides=[f"data.prepared={args.folder / 'prepared'}", f"data.root={args.folder / 'source'}",
                                    "role=teacher", f"data.crop_size={args.crop}", f"data.clip_length={args.clip}",
                                    "data.loader_workers=1", "data.backend=opencv"])
    splits = open_splits(config.data)
    tracks = load_actor_tracks(config.data.root)
    if tracks is None:
        raise SystemExit(f"{config.data.root} has no actors.json: only a synthetic set knows where its actor is")
    fps = Manifest.load(splits.test.root).fps
    result = {}
    for modality, uris in (("flow", args.flow), ("rgb", args.rgb)):
        loader = clip_loader(splits.test, config.data, modality=modality, train=False, batch_size=8, seed=0,
                             clips_per_video=args.clips_per_video, device="cpu")
        for uri in uris:
            masses = model_actor_mass(load_teacher(uri), loader, splits.test, tracks, fps, args.clip, modality, "cpu")
            result[uri] = {key.removeprefix("val_"): value for key, value in masses.items()}  # test clips here
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
