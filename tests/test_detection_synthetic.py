"""The synthetic untrimmed benchmark: real video files, THUMOS14-style annotations that match them."""
import json

from click.testing import CliRunner

from vidistill.datasets.detection.annotations import read_detection_set
from vidistill.datasets.detection.synthetic import render_untrimmed, untrimmed_config
from vidistill.datasets.layouts import DatasetConfig
from vidistill.datasets.video import probe
from vidistill.platform.cli.main import cli

import numpy as np


def test_actions_are_the_only_sustained_motion_and_match_their_annotation():
    config = untrimmed_config(min_seconds=8, max_seconds=8, distractors=1, noise=0.0, actions_per_video=(1, 1))
    frames, segments = render_untrimmed(config, np.random.default_rng(3))
    ((start, end, label),) = segments
    assert frames.shape == (80, 72, 96, 3) and 0 <= label < 4
    diff = np.abs(np.diff(frames.astype(int), axis=0)).sum(axis=(1, 2, 3))
    inside = diff[int(start * config.fps) + 1: int(end * config.fps) - 2].mean()
    outside = np.concatenate([diff[: int(start * config.fps) - 1], diff[int(end * config.fps) + 1:]])
    # the random-walk distractor moves too, but the acting object adds clearly more change
    assert inside > 1.5 * outside.mean()


def test_make_untrimmed_cli_writes_videos_read_by_the_thumos14_layout(tmp_path):
    out = tmp_path / "u"
    result = CliRunner().invoke(cli, ["datasets", "make-untrimmed", str(out), "--train-videos", "2",
                                      "--test-videos", "1", "--seconds", "6-8"])
    assert result.exit_code == 0, result.output
    config = DatasetConfig(root=out, layout="thumos14")
    val = read_detection_set(config, "val")
    assert [v.video_id for v in val.videos] == ["video_validation_0000001", "video_validation_0000002"]
    info = probe(val.videos[0].path)
    assert info["fps"] == 10.0 and (info["width"], info["height"]) == (96, 72)
    assert all(0 <= s.start < s.end <= 8.0 for v in val.videos for s in v.segments)
    assert json.loads((out / "synthetic_untrimmed.json").read_text())["train_videos"] == 2
    assert read_detection_set(config, "test").videos[0].path.name == "video_test_0000001.avi"
    again = CliRunner().invoke(cli, ["datasets", "make-untrimmed", str(out)])
    assert again.exit_code != 0 and "already holds a data set" in again.output
