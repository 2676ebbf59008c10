"""The synthetic motion benchmark: deterministic, identical-looking objects, class = motion."""
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from vidistill.datasets.layouts import DatasetConfig, describe, list_videos
from vidistill.datasets.synthetic import MOTION_PATTERNS, SyntheticConfig, make_synthetic, render_video
from vidistill.datasets.video import probe, read_resampled
from vidistill.platform.cli.main import cli

CONFIG = SyntheticConfig(classes=8, frames=24, width=128, height=96, distractors=3, noise=0.0)


def render(pattern, seed=0, config=CONFIG):
    return render_video(pattern, config, np.random.default_rng(seed))


def mean_flow_of_moving_pixels(video, first, second):
    grey = [cv2.cvtColor(video[i], cv2.COLOR_RGB2GRAY) for i in (first, second)]
    flow = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    moving = np.linalg.norm(flow, axis=-1) > 0.3
    return flow[moving].mean(axis=0), moving


def test_every_frame_shows_identical_objects_and_only_one_of_them_moves():
    video = render("move-right")
    background = video[0, 0, 0]
    for frame in (video[0], video[-1]):
        objects = (np.abs(frame.astype(int) - background).sum(axis=-1) > 60).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(objects)
        areas = stats[1:, cv2.CC_STAT_AREA]
        assert count - 1 == CONFIG.distractors + 1
        assert areas.max() / areas.min() < 1.15  # same shape and size (up to rasterising)
        colours = {tuple(frame[labels == k].max(axis=0)) for k in range(1, count)}
        assert len(colours) == 1  # same colour
    changed = np.abs(video[0].astype(int) - video[-1].astype(int)).sum(axis=-1) > 60
    count, _, _, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8))
    assert count - 1 <= 2  # where the one object was and where it is now


@pytest.mark.parametrize("pattern, direction", [
    ("move-right", (1, 0)), ("move-left", (-1, 0)), ("move-down", (0, 1)), ("move-up", (0, -1))])
def test_the_class_is_the_direction_of_motion(pattern, direction):
    for seed in range(3):
        video = render(pattern, seed)
        (dx, dy), _ = mean_flow_of_moving_pixels(video, 10, 11)
        main, other = (dx, dy) if direction[1] == 0 else (dy, dx)
        assert np.sign(main) == sum(direction) and abs(main) > 0.5 and abs(other) < 0.5 * abs(main)


def test_speed_change_oscillation_and_rotation_are_motion_patterns_too():
    accelerate = render("accelerate-right")
    (early, _), _ = mean_flow_of_moving_pixels(accelerate, 3, 4)
    (late, _), _ = mean_flow_of_moving_pixels(accelerate, 21, 22)
    assert late > 2 * max(early, 0.3)
    oscillate = render("oscillate-horizontal")
    (going, _), _ = mean_flow_of_moving_pixels(oscillate, 1, 2)
    (coming, _), _ = mean_flow_of_moving_pixels(oscillate, 8, 9)
    assert going > 0.5 and coming < -0.5
    curls = {}
    for pattern in ("rotate-clockwise", "rotate-anticlockwise"):
        video = render(pattern)
        (dx, dy), moving = mean_flow_of_moving_pixels(video, 6, 7)
        assert moving.sum() > 20 and abs(dx) < 0.5 and abs(dy) < 0.5  # turns in place
        grey = [cv2.cvtColor(video[i], cv2.COLOR_RGB2GRAY) for i in (6, 7)]
        flow = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
        curl = np.gradient(flow[..., 1], axis=1) - np.gradient(flow[..., 0], axis=0)
        curls[pattern] = curl[moving].mean()
    # image y points down, so a clockwise turn on screen has positive curl
    assert curls["rotate-clockwise"] > 0.02 and curls["rotate-anticlockwise"] < -0.02


def test_generation_is_deterministic_for_a_seed(tmp_path):
    config = SyntheticConfig(classes=2, videos_per_class=2, frames=12, width=64, height=48, seed=5)
    first, second = make_synthetic(tmp_path / "a", config), make_synthetic(tmp_path / "b", config)
    other = make_synthetic(tmp_path / "c", SyntheticConfig(**{**config.__dict__, "seed": 6}))
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 4 + 5  # videos + classes.txt, train.txt, test.txt, synthetic.json, actors.json
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    video = "move-right/move-right_000.avi"
    assert (first / video).read_bytes() != (other / video).read_bytes()
    # more videos per class leave the existing ones unchanged
    more = make_synthetic(tmp_path / "d", SyntheticConfig(**{**config.__dict__, "videos_per_class": 3}))
    assert (more / video).read_bytes() == (first / video).read_bytes()


def test_cli_make_synthetic_writes_a_generic_dataset_in_the_chosen_codec(tmp_path):
    out = tmp_path / "motion"
    result = CliRunner().invoke(cli, ["datasets", "make-synthetic", str(out), "--classes", "3",
                                      "--videos-per-class", "4", "--frames", "15", "--size", "80x64",
                                      "--fps", "30", "--codec", "vp9", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"wrote 12 vp9 videos (move-right, move-left, move-down) to {out}")
    description = describe(DatasetConfig(out, "generic"))
    assert description["classes"] == ["move-right", "move-left", "move-down"]
    assert {s: d["videos"] for s, d in description["subsets"].items()} == {"test": 3, "train": 9}
    video = list_videos(DatasetConfig(out, "generic"), "test").videos[0]
    assert video.path.suffix == ".webm"
    info = probe(video.path)
    assert (info["codec"], info["fps"], info["width"], info["height"]) == ("vp9", 30.0, 80, 64)
    assert len(list(read_resampled(video.path, 30.0, 80, 64))) == 15
    again = CliRunner().invoke(cli, ["datasets", "make-synthetic", str(out)])
    assert again.exit_code == 1 and "already holds a dataset; choose an empty folder" in again.output
    bad = CliRunner().invoke(cli, ["datasets", "make-synthetic", str(tmp_path / "x"), "--classes", "9"])
    assert bad.exit_code == 1 and f"classes must be 2..{len(MOTION_PATTERNS)}" in bad.output


def test_difficulty_levers_shrink_the_actor_and_make_distractors_drift():
    from vidistill.datasets.synthetic import DIFFICULTIES

    def foreground(video, frame):
        return (np.abs(video[frame].astype(int) - video[frame, 0, 0]).sum(axis=-1) > 60).sum()

    alone = SyntheticConfig(classes=4, frames=12, width=128, height=96, distractors=0, noise=0.0)
    small = SyntheticConfig(**{**alone.__dict__, "actor_size": 0.09})
    # Area goes with the square of the size: half the size, about a quarter of the pixels.
    ratio = foreground(render("move-right", config=small), 0) / foreground(render("move-right", config=alone), 0)
    assert 0.15 < ratio < 0.35
    # A still pattern (rotation in place) among distractors: with drift the first frame is the
    # same, the last one is not (the distractors moved), and without drift they stay put.
    still = SyntheticConfig(classes=8, frames=12, width=128, height=96, distractors=3, noise=0.0)
    drifting = SyntheticConfig(**{**still.__dict__, "distractor_drift": 2.0})
    a, b = render("rotate-clockwise", config=still), render("rotate-clockwise", config=drifting)
    assert np.array_equal(a[0], b[0])
    assert np.abs(a[-1].astype(int) - b[-1]).sum(axis=-1).astype(bool).sum() > 200
    assert set(DIFFICULTIES) == {"easy", "medium", "hard"}
    with pytest.raises(Exception, match="actor_size"):
        SyntheticConfig(actor_size=0.9)


def test_decoys_are_smaller_copies_that_move_and_nothing_else_moves():
    """Medium and hard add decoys (issue 13: a flow teacher with no moving clutter encodes the class
    by where it looks, not by looking at the actor): smaller copies moving with class patterns.
    Apart from the actor and the decoys nothing changes between frames (no border, no camera)."""
    from vidistill.datasets.synthetic import DIFFICULTIES

    def changed_outside_actor(video, track, radius):
        ys, xs = np.mgrid[: video.shape[1], : video.shape[2]]
        outside = []
        for i in range(len(video) - 1):
            near = np.zeros(video.shape[1:3], bool)
            for x, y in track[i: i + 2]:  # the actor where it was and where it is
                near |= (xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2
            changed = np.abs(video[i].astype(int) - video[i + 1]).sum(axis=-1) > 0
            outside.append(changed & ~near)
        return np.stack(outside)

    base = dict(classes=4, frames=12, width=128, height=96, distractors=2, actor_size=0.16, noise=0.0)

    def render_track(seed):
        track = []
        render_video("move-up", SyntheticConfig(**base), np.random.default_rng(seed), track)
        return track

    radius = 0.6 * 0.16 * 96 + 2  # the outline's farthest point, plus anti-aliasing
    for seed in range(3):
        track, still = [], render_video("move-up", SyntheticConfig(**base), np.random.default_rng(seed), [])
        video = render_video("move-up", SyntheticConfig(**base, decoys=2, decoy_scale=0.55),
                             np.random.default_rng(seed), track)
        assert not changed_outside_actor(still, track, radius).any()  # static copies: only the actor moves
        moving = changed_outside_actor(video, track, radius)
        assert moving.sum(axis=(1, 2)).min() > 10  # the decoys move in every frame
        # Decoys are drawn from the stream's end: the actor and the static copies stay where they were.
        assert track == render_track(seed)
        objects = (np.abs(video[0].astype(int) - video[0, 0, 0]).sum(axis=-1) > 60).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(objects)
        areas = sorted(stats[1:, cv2.CC_STAT_AREA])
        if count - 1 == 5:  # no two objects overlap in the first frame: 2 decoys, 3 actor-sized copies
            assert areas[1] / areas[-1] < 0.55 ** 2 * 1.4 and areas[2] / areas[-1] > 0.85
    assert DIFFICULTIES["medium"]["decoys"] > 0 and DIFFICULTIES["hard"]["decoys"] > 0
    assert "decoys" not in DIFFICULTIES["easy"]  # the quickstart's set stays as it was
    with pytest.raises(Exception, match="decoy_scale"):
        SyntheticConfig(decoys=2, decoy_scale=1.0)


def test_a_short_travel_frees_where_the_actor_is_from_its_class():
    """With the default travel a move-right actor starts in the left part of the frame (a place a
    teacher's map can encode the class by); a short travel lets it start almost anywhere."""
    def starts(travel):
        config = SyntheticConfig(classes=4, frames=8, width=128, height=96, distractors=0, noise=0.0, travel=travel)
        tracks = []
        for seed in range(40):
            track = []
            render_video("move-right", config, np.random.default_rng(seed), track)
            tracks.append(track)
        return np.array([t[0][0] for t in tracks]), np.array([t[-1][0] - t[0][0] for t in tracks])

    long_starts, long_travel = starts((0.35, 0.55))
    short_starts, short_travel = starts((0.1, 0.15))
    assert long_starts.max() < 128 * 0.55 and short_starts.max() > 128 * 0.7
    assert np.all((short_travel >= 0.1 * 128 - 1e-6) & (short_travel <= 0.15 * 128 + 1e-6))
    assert np.all(long_travel >= 0.35 * 128 - 1e-6)
    with pytest.raises(Exception, match="travel"):
        SyntheticConfig(travel=(0.5, 0.2))
