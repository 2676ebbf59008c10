"""Clip loaders on a real prepared set: DALI and the OpenCV fallback give equal tensors, flips
negate flow x, crop/flip metadata maps full frames to clips, sharding and seeds are
deterministic, other rawframes name templates load, raw videos load through PyAV."""
import dataclasses
import logging
import shutil

import cv2
import numpy as np
import pytest
import torch

from datasets_fixtures import SMALL_PREPARED_SIZE, prepared_dataset, synthetic_dataset
from vidistill.datasets import loaders
from vidistill.datasets.errors import DatasetError
from vidistill.datasets.layouts import DatasetConfig, list_videos
from vidistill.datasets.loaders import ClipLoaderConfig, make_clip_loader, plan_epoch, resolve_backend
from vidistill.datasets.loaders.plan import ClipSpec, VideoExtent
from vidistill.datasets.rawframes import FrameTemplates, open_rawframes

SMALL = dict(clip_length=8, crop_size=112, batch_size=3, test_clips_per_video=2, num_workers=2)
WIDTH, HEIGHT = SMALL_PREPARED_SIZE


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return open_rawframes(prepared_dataset(tmp_path_factory))


def batches(source, backend, **overrides):
    config = ClipLoaderConfig(backend=backend, **{**SMALL, **overrides})
    return list(make_clip_loader(source, config))


def assert_same_batches(left, right):
    assert len(left) == len(right) > 0
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("modality, train", [("rgb", True), ("paired", True), ("paired", False)])
def test_dali_and_the_opencv_fallback_give_equal_tensors(prepared, modality, train):
    dali = batches(prepared, "dali", modality=modality, train=train)
    fallback = batches(prepared, "opencv", modality=modality, train=train)
    assert_same_batches(dali, fallback)
    first = dali[0]
    if train:
        assert first["rgb"].shape == (3, 3, 8, 112, 112)
        assert first["flip"].any() or dali[1]["flip"].any()  # flips happen
    else:
        assert first["rgb"].shape == (3, 3, 8, HEIGHT, WIDTH) and first["crop"].tolist() == [[0, 0]] * 3
    if modality == "paired":
        assert first["flow"].shape[:3] == (3, 2, 8) and first["flow"].dtype == torch.float32
    assert first["label"].dtype == torch.int64
    assert first["label"].tolist() == [prepared.videos[i].label for i in first["video_index"].tolist()]
    assert -1.0 <= first["rgb"].min() and first["rgb"].max() <= 1.0


def video_index(prepared, video_id):
    return [v.video_id for v in prepared.videos].index(video_id)


@pytest.mark.parametrize("backend", ["dali", "opencv"])
def test_a_horizontal_flip_mirrors_the_clip_and_negates_flow_x(prepared, backend):
    index = video_index(prepared, "move-right/move-right_000")
    plain = ClipSpec(index, 0, 4, 10, 30, 112, 112, flip=False)
    mirrored = ClipSpec(index, 0, 4, 10, 30, 112, 112, flip=True)
    loader = make_clip_loader(prepared, ClipLoaderConfig(backend=backend, modality="paired",
                                                         colour_jitter=False, **SMALL))
    (batch,) = list(loader.load([[plain, mirrored]]))
    assert batch["flip"].tolist() == [False, True] and batch["crop"].tolist() == [[10, 30], [10, 30]]
    rgb, flow = batch["rgb"], batch["flow"]
    assert torch.equal(rgb[1], rgb[0].flip(-1))
    assert torch.equal(flow[1, 0], -flow[0, 0].flip(-1))  # x: mirrored and negated
    assert torch.equal(flow[1, 1], flow[0, 1].flip(-1))  # y: only mirrored
    moving = flow[0, 0].abs() > 2 / 20  # more than 2 px per frame (bound 20)
    assert moving.sum() > 20
    assert flow[0, 0][moving].mean() > 0 > flow[1, 0][moving.flip(-1)].mean()  # right, then left


def test_crop_and_flip_returned_per_clip_map_the_full_frame_onto_the_clip(prepared):
    """What the trainers rely on to cut a teacher map cached on the full frame."""
    common = dict(SMALL, modality="paired", colour_jitter=False, batch_size=4)
    train = make_clip_loader(prepared, ClipLoaderConfig(train=True, **common))
    full = make_clip_loader(prepared, ClipLoaderConfig(train=False, **common))
    specs = plan_epoch(train.files.extents(), train.config, epoch=0)
    clips = list(train.load([specs[:4], specs[4:]]))
    flips = torch.cat([b["flip"] for b in clips])
    assert flips.any() and not flips.all()
    for batch in clips:
        wholes = [ClipSpec(int(v), 0, int(s), 0, 0, HEIGHT, WIDTH, False)
                  for v, s in zip(batch["video_index"], batch["start"])]
        (whole,) = list(full.load([wholes]))
        for i in range(len(wholes)):
            y0, x0 = batch["crop"][i].tolist()
            for key in ("rgb", "flow"):
                expected = whole[key][i, ..., y0:y0 + 112, x0:x0 + 112]
                if batch["flip"][i]:
                    expected = expected.flip(-1)
                    if key == "flow":
                        expected = expected * torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1)
                assert torch.equal(batch[key][i], expected), (key, i)


def test_tensors_are_the_stored_values_scaled_to_unit_range(prepared):
    video = prepared.videos[2]
    spec = ClipSpec(2, video.label, 5, 0, 0, HEIGHT, WIDTH, False)
    loader = make_clip_loader(prepared, ClipLoaderConfig(train=False, modality="paired", **SMALL))
    (batch,) = list(loader.load([[spec]]))
    image = cv2.cvtColor(cv2.imread(str(video.directory / "img_00006.jpg")), cv2.COLOR_BGR2RGB)
    expected = torch.from_numpy(image.astype(np.float32) / np.float32(127.5) - 1).permute(2, 0, 1)
    assert torch.equal(batch["rgb"][0, :, 0], expected)
    flow_y = cv2.imread(str(video.directory / "flow_y_00006.jpg"), cv2.IMREAD_GRAYSCALE)
    assert torch.equal(batch["flow"][0, 1, 0], torch.from_numpy(flow_y.astype(np.float32) / np.float32(127.5) - 1))


def test_clips_longer_than_the_video_repeat_its_last_frame(prepared):
    # A video with flow is read up to its last flow image (28 of its 29 frames), by every modality.
    frames = prepared.videos[0].flow_frames
    config = ClipLoaderConfig(train=False, backend="opencv", **{**SMALL, "clip_length": 40, "test_clips_per_video": 1})
    batch = next(iter(make_clip_loader(prepared, config)))
    assert batch["start"][0] == 0 and batch["rgb"].shape[2] == 40
    clip = batch["rgb"][0]
    assert all(torch.equal(clip[:, t], clip[:, frames - 1]) for t in range(frames, 40))
    assert not torch.equal(clip[:, frames - 2], clip[:, frames - 1])


def test_epoch_plans_are_seeded_and_dealt_to_equal_shards():
    videos = [VideoExtent(i % 3, 30 + i, 320, 256) for i in range(10)]
    base = ClipLoaderConfig(seed=7)
    whole = plan_epoch(videos, base, epoch=0)
    assert whole == plan_epoch(videos, base, epoch=0)
    assert whole != plan_epoch(videos, base, epoch=1)
    assert whole != plan_epoch(videos, ClipLoaderConfig(seed=8), epoch=0)
    assert sorted(s.video_index for s in whole) == list(range(10))
    for shards in (2, 3, 4):
        parts = [plan_epoch(videos, ClipLoaderConfig(seed=7, shard_id=r, num_shards=shards), 0)
                 for r in range(shards)]
        assert len({len(p) for p in parts}) == 1  # every rank takes the same number of steps
        dealt = [spec for step in zip(*parts) for spec in step]
        assert dealt[:10] == whole and dealt[10:] == whole[: len(dealt) - 10]  # padded by wrapping
    test_parts = [plan_epoch(videos, ClipLoaderConfig(train=False, shard_id=r, num_shards=3), 0) for r in range(3)]
    assert sum(len(p) for p in test_parts) == 10 * 5  # test clips are never duplicated
    for spec in whole:
        assert 0 <= spec.start <= videos[spec.video_index].length - 24
        assert 0 <= spec.crop_y <= 256 - 224 and 0 <= spec.crop_x <= 320 - 224


def test_sharded_loaders_read_disjoint_clips_and_repeat_under_a_seed(prepared):
    config = dict(SMALL, batch_size=2, seed=11)
    runs = [[batches(prepared, "dali", shard_id=r, num_shards=2, **config) for r in range(2)] for _ in range(2)]
    for first, second in zip(*runs):
        assert_same_batches(first, second)
    seen = [torch.cat([b["video_index"] for b in shard]).tolist() for shard in runs[0]]
    assert len(seen[0]) == len(seen[1]) == 4
    assert sorted(seen[0] + seen[1]) == list(range(8))


def test_rawframes_written_with_other_name_templates_load_from_an_mmaction2_list(prepared, tmp_path):
    templates = FrameTemplates(rgb="{:06d}.jpg", flow_x="x_{:06d}.jpg", flow_y="y_{:06d}.jpg", start_index=0)
    lines = []
    for video in prepared.videos:
        target = tmp_path / "frames" / video.video_id.replace("/", "_")
        target.mkdir(parents=True)
        for i in range(video.frames):
            shutil.copy(video.directory / prepared.templates.rgb_name(i), target / templates.rgb_name(i))
        for i in range(video.flow_frames):
            for old, new in zip(prepared.templates.flow_names(i), templates.flow_names(i)):
                shutil.copy(video.directory / old, target / new)
        lines.append(f"{target.name} {video.frames} {video.label}\n")
    (tmp_path / "train_list.txt").write_text("".join(lines))
    other = open_rawframes(tmp_path / "frames", templates, tmp_path / "train_list.txt")
    assert [(v.frames, v.flow_frames, v.width, v.height) for v in other.videos] == [
        (v.frames, v.flow_frames, v.width, v.height) for v in prepared.videos]
    assert_same_batches(batches(other, "dali", modality="paired"), batches(prepared, "dali", modality="paired"))
    with pytest.raises(DatasetError, match=r"train_list.txt:1: no frames named like 'img_N.jpg' .* pass the name "
                                           r"templates"):
        open_rawframes(tmp_path / "frames", FrameTemplates(), tmp_path / "train_list.txt")


def test_the_pyav_loader_reads_raw_videos_into_the_same_clips(prepared, tmp_path_factory):
    listing = list_videos(DatasetConfig(synthetic_dataset(tmp_path_factory), "generic"), "test")
    config = dict(SMALL, train=False, video_width=WIDTH, video_height=HEIGHT)
    raw = batches(listing, "auto", **config)
    selected = prepared.select([v.video_id for v in listing.videos])
    # Raw videos have no flow, so their clips may use every frame: compare with the frames alone.
    without_flow = dataclasses.replace(selected, videos=tuple(dataclasses.replace(v, flow_frames=0)
                                                              for v in selected.videos))
    frames = batches(without_flow, "dali", **config)
    assert len(raw) == len(frames) == 3
    for a, b in zip(raw, frames):
        for key in ("label", "video_index", "start", "crop", "flip"):
            assert torch.equal(a[key], b[key]), key
        assert a["rgb"].shape == b["rgb"].shape and a["rgb"].dtype == torch.float32
        assert (a["rgb"] - b["rgb"]).abs().mean() < 0.02  # the JPEG rounding of the rawframes only
    with pytest.raises(DatasetError, match="need flow, which raw videos do not have"):
        make_clip_loader(listing, ClipLoaderConfig(modality="paired"))


@pytest.mark.parametrize("backend", ["dali", "opencv", "pyav"])
def test_a_pass_over_a_loader_leaves_the_global_torch_rng_as_it_was(prepared, tmp_path_factory, backend):
    """Training draws dropout and Gumbel noise from the global RNG; a validation or metric pass
    that drew from it too would change every later step, so one more logged metric would give
    another model for the same seed."""
    if backend == "pyav":
        source = list_videos(DatasetConfig(synthetic_dataset(tmp_path_factory), "generic"), "test")
        config = ClipLoaderConfig(backend=backend, **SMALL, video_width=WIDTH, video_height=HEIGHT)
    else:
        source, config = prepared, ClipLoaderConfig(backend=backend, **SMALL)
    torch.manual_seed(7)
    untouched = torch.rand(4)
    torch.manual_seed(7)
    assert len(list(make_clip_loader(source, config))) > 0
    assert torch.equal(torch.rand(4), untouched)


def test_the_default_backend_follows_the_benchmark_and_is_logged_once(prepared, monkeypatch, caplog):
    monkeypatch.setattr(loaders, "_announced", set())
    assert resolve_backend(prepared, ClipLoaderConfig()) == (loaders.DEFAULT_CPU_BACKEND, None)
    with caplog.at_level(logging.INFO, logger="vidistill.datasets.loaders"):
        for _ in range(2):
            loader = make_clip_loader(prepared, ClipLoaderConfig(**SMALL))
    assert loader.backend == loaders.DEFAULT_CPU_BACKEND and loader.device == "cpu"
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("clip loading:")]
    assert messages == [f"clip loading: {loader.backend} on cpu ({'rawframes JPEG, DALI CPU decoding' if loader.backend == 'dali' else 'rawframes JPEG, OpenCV decoding in DataLoader workers'})"]
    if not torch.cuda.is_available():
        with pytest.raises(DatasetError, match="no CUDA device"):
            make_clip_loader(prepared, ClipLoaderConfig(device="gpu"))


def test_an_epoch_abandoned_half_way_does_not_leak_into_the_next(prepared):
    loader = make_clip_loader(prepared, ClipLoaderConfig(backend="dali", **{**SMALL, "batch_size": 2}))
    complete = list(loader)
    assert len(complete) == 4
    for batch in loader:  # a trainer that stops early, e.g. on a step limit
        break
    assert_same_batches(list(loader), complete)
    loader.set_epoch(1)
    assert [b["start"].tolist() for b in loader] != [b["start"].tolist() for b in complete]


def test_sharded_test_clips_cover_every_clip_once(prepared):
    config = dict(SMALL, train=False, batch_size=4)
    shards = [batches(prepared, "dali", shard_id=r, num_shards=3, **config) for r in range(3)]
    clips = sorted((int(v), int(s)) for shard in shards for b in shard for v, s in zip(b["video_index"], b["start"]))
    everything = batches(prepared, "opencv", **config)
    assert clips == sorted((int(v), int(s)) for b in everything for v, s in zip(b["video_index"], b["start"]))
    assert len(clips) == 8 * 2


def test_a_crop_larger_than_the_frames_is_refused_with_what_to_do(prepared):
    with pytest.raises(ValueError, match=r"smaller than the 224x224 crop; prepare at a larger size or lower crop_size"):
        make_clip_loader(prepared, ClipLoaderConfig(backend="opencv")).__len__()


def test_dali_decodes_raw_vp9_videos_into_the_clips_pyav_gives(tmp_path):
    from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic
    root = make_synthetic(tmp_path / "vp9", SyntheticConfig(classes=2, videos_per_class=2, frames=30, width=96,
                                                            height=72, codec="vp9", test_fraction=0.5, seed=3))
    listing = list_videos(DatasetConfig(root, "generic"), "train")
    config = dict(SMALL, batch_size=2, video_width=WIDTH, video_height=HEIGHT)
    for train in (True, False):
        dali = batches(listing, "dali", train=train, **config)
        pyav = batches(listing, "pyav", train=train, **config)
        assert len(dali) == len(pyav) == (1 if train else 2)
        for a, b in zip(dali, pyav):
            for key in ("label", "video_index", "start", "crop", "flip"):
                assert torch.equal(a[key], b[key]), key
            assert a["rgb"].shape == b["rgb"].shape and a["rgb"].dtype == torch.float32
            # same frames: only the decoders' colour conversion and resizing differ; one frame
            # off differs by the per-frame pixel noise as well, about twice as much
            aligned = (a["rgb"] - b["rgb"]).abs().mean()
            assert aligned < 0.03
            assert (a["rgb"][:, :, 1:] - b["rgb"][:, :, :-1]).abs().mean() > 1.5 * aligned
    assert resolve_backend(listing, ClipLoaderConfig(), {"vp9"}) == (loaders.DEFAULT_CPU_VIDEO_BACKEND, None)


def test_dali_refuses_a_raw_codec_its_cpu_decoder_lacks_and_auto_takes_pyav(tmp_path_factory):
    listing = list_videos(DatasetConfig(synthetic_dataset(tmp_path_factory), "generic"), "test")  # mpeg4
    with pytest.raises(DatasetError, match=r"\.avi: codec mpeg4 is not decoded by DALI's cpu video decoder "
                                           r"\(it takes mjpeg, vp8, vp9\); use the pyav backend"):
        make_clip_loader(listing, ClipLoaderConfig(backend="dali"))
    assert resolve_backend(listing, ClipLoaderConfig(), {"mpeg4"}) == ("pyav", None)
    assert make_clip_loader(listing, ClipLoaderConfig(**SMALL)).backend == "pyav"


def test_rgb_flow_and_paired_loaders_plan_the_same_clips_over_the_frames_that_have_flow(prepared):
    # Issue 13, defects 4 and 6: an RGB model evaluated alone and beside a flow model reads the
    # same clips, and no training start reads past the last flow image (the teacher's input).
    for train in (False, True):
        plans = {modality: [(spec.video_index, spec.start, spec.crop_y, spec.crop_x, spec.flip) for batch in make_clip_loader(prepared, ClipLoaderConfig(
                     train=train, modality=modality, backend="opencv", **SMALL)).planned_batches() for spec in batch]
                 for modality in ("rgb", "flow", "paired")}
        assert plans["rgb"] == plans["flow"] == plans["paired"]
    video = prepared.videos[0]
    last = ClipLoaderConfig(train=False, modality="rgb", backend="opencv", **{**SMALL, "test_clips_per_video": 9})
    starts = [s.start for b in make_clip_loader(prepared, last).planned_batches() for s in b if s.video_index == 0]
    assert max(starts) == video.flow_frames - SMALL["clip_length"] == video.frames - 1 - SMALL["clip_length"]
    train = ClipLoaderConfig(modality="rgb", backend="opencv", **SMALL)
    loader = make_clip_loader(prepared, train)
    for epoch in range(20):
        loader.set_epoch(epoch)
        for batch in loader.planned_batches():
            for spec in batch:
                assert spec.start + SMALL["clip_length"] <= prepared.videos[spec.video_index].flow_frames
