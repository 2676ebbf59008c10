"""The teacher's actor mass: the generator records where its actor is, and a map's mass on the
actor's cell is measured against a uniform map (issue 13, a benchmark that can rank methods)."""
import json

import numpy as np
import pytest
import torch

from datasets_fixtures import prepared_dataset, synthetic_dataset
from vidistill.datasets.loaders import ClipLoaderConfig, make_clip_loader
from vidistill.datasets.rawframes import Manifest, open_rawframes
from vidistill.datasets.synthetic import SyntheticConfig, render_video
from vidistill.trainers.actor_mass import actor_cells, actor_mass_ratio, load_actor_tracks, teacher_actor_mass


def test_the_recorded_track_is_where_the_actor_is_drawn():
    config = SyntheticConfig(classes=4, frames=6, width=96, height=72, distractors=0, noise=0.0)
    track = []
    video = render_video("move-right", config, np.random.default_rng(0), track)
    assert len(track) == 6 and track[-1][0] > track[0][0]  # it moves right
    for frame, (x, y) in zip(video, track):
        background = frame[0, 0]
        assert not np.array_equal(frame[int(round(y)), int(round(x))], background)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return synthetic_dataset(tmp_path_factory), open_rawframes(prepared_dataset(tmp_path_factory))


def test_the_actor_cell_is_where_the_flow_moves_and_a_map_on_it_scores_h_times_w(prepared):
    root, videos = prepared
    tracks = load_actor_tracks(root)
    assert json.loads((root / "actors.json").read_text())["width"] == 96
    fps = Manifest.load(videos.root).fps
    config = ClipLoaderConfig(modality="flow", train=False, clip_length=8, test_clips_per_video=2, batch_size=16,
                              backend="opencv", num_workers=1)
    loader = make_clip_loader(videos, config)
    agree = total = 0
    for batch, specs in zip(loader, loader.planned_batches()):
        for flow, spec in zip(batch["flow"], specs):
            grid = (2, 8, 10)  # (T/4, H/16, W/16) of a 8 x 128 x 160 clip
            cells = actor_cells(tracks, videos.videos[spec.video_index], spec, fps, 8,
                                videos.videos[spec.video_index].flow_frames, grid)
            # Motion per cell and slice: the actor's cell (or a neighbour) moves most.
            magnitude = flow.norm(dim=0).reshape(2, 4, 8, 16, 10, 16).mean(dim=(1, 3, 5))
            for t, cell in enumerate(cells):
                if cell is None:
                    continue
                total += 1
                peak = np.unravel_index(int(magnitude[t].argmax()), (8, 10))
                agree += abs(peak[0] - cell[0]) <= 1 and abs(peak[1] - cell[1]) <= 1
            one_hot = torch.full(grid, -30.0)
            for t, cell in enumerate(cells):
                if cell is not None:
                    one_hot[t, cell[0], cell[1]] = 0.0
            one_hot = one_hot.flatten(1).log_softmax(-1).reshape(grid)
            ratio = teacher_actor_mass(one_hot[None], videos, [spec], tracks, fps, 8)["teacher_actor_mass_ratio"]
            assert ratio == pytest.approx(80.0, rel=1e-3)
            assert actor_mass_ratio(torch.full(grid, 1 / 80), cells) == pytest.approx(1.0)
    assert total >= 8 and agree / total >= 0.75
