"""The teacher-map cache: a clip's map cut from the whole video's map, with the clip's crop and flip."""
import torch

from vidistill.trainers.models import create_teacher
from vidistill.trainers.teacher import MapGeometry, TeacherMapCache, map_geometry, video_map_logits

GEOMETRY = MapGeometry(frames_per_cell=4, pixels_per_cell=16, grid=(2, 3, 3))


def cache_of(logits):
    return TeacherMapCache([logits.numpy()], GEOMETRY)


def test_i3d_maps_have_a_stride_of_4_frames_and_16_pixels():
    geometry = map_geometry(create_teacher("i3d_tiny", num_classes=3), clip_length=16, crop_size=80)
    assert geometry == MapGeometry(frames_per_cell=4.0, pixels_per_cell=16.0, grid=(4, 5, 5))


def test_an_aligned_clip_takes_exactly_its_cells():
    logits = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(5, 6, 7)
    cache = cache_of(logits)
    # Frames 8..15 are cells 2..3; the crop at (16, 32) covers rows 1..3 and columns 2..4.
    window = cache._window(0, start=8, y0=16, x0=32, flip=False)
    torch.testing.assert_close(window, logits[2:4, 1:4, 2:5])
    mirrored = cache._window(0, start=8, y0=16, x0=32, flip=True)
    torch.testing.assert_close(mirrored, logits[2:4, 1:4, 2:5].flip(-1))


def test_offsets_between_cells_interpolate_linearly():
    logits = torch.randn(5, 6, 7)
    cache = cache_of(logits)
    half_frame = cache._window(0, start=2, y0=0, x0=0, flip=False)  # half a cell later in time
    torch.testing.assert_close(half_frame, (logits[0:2, 0:3, 0:3] + logits[1:3, 0:3, 0:3]) / 2)
    quarter_pixel = cache._window(0, start=0, y0=0, x0=4, flip=False)  # a quarter cell to the right
    torch.testing.assert_close(quarter_pixel, 0.75 * logits[0:2, 0:3, 0:3] + 0.25 * logits[0:2, 0:3, 1:4])


def test_clip_maps_are_distributions_per_time_slice():
    cache = cache_of(torch.randn(5, 6, 7) * 3)
    log_probs = cache.clip_log_probs(torch.tensor([0, 0]), torch.tensor([0, 6]), torch.tensor([[0, 0], [20, 50]]),
                                     torch.tensor([False, True]))
    assert log_probs.shape == (2, 2, 3, 3)
    torch.testing.assert_close(log_probs.exp().flatten(2).sum(-1), torch.ones(2, 2))


def test_a_clip_covering_the_whole_video_gets_the_teachers_own_map():
    torch.manual_seed(0)
    teacher = create_teacher("i3d_tiny", num_classes=3).eval()
    flow = torch.randn(2, 16, 64, 64) * 0.5
    cache = TeacherMapCache([video_map_logits(teacher, flow).numpy()], map_geometry(teacher, 16, 64))
    cached = cache.clip_log_probs(torch.tensor([0]), torch.tensor([0]), torch.tensor([[0, 0]]), torch.tensor([False]))
    with torch.no_grad():
        live = teacher(flow.unsqueeze(0)).attention["motion"].log_probs
    torch.testing.assert_close(cached, live, rtol=1e-4, atol=1e-5)


# -- the bank: the teacher's own map of the clip the student sees (issue 13, defects 1 and 6) -----

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from datasets_fixtures import prepared_dataset  # noqa: E402
from vidistill.datasets.rawframes import open_rawframes  # noqa: E402
from vidistill.trainers.config import DataConfig  # noqa: E402
from vidistill.trainers.data import clip_loader  # noqa: E402
from vidistill.trainers.precise_bn import recompute_batchnorm  # noqa: E402
from vidistill.trainers.teacher import pad_in_time, read_video_flow  # noqa: E402
from vidistill.trainers.teacher_bank import TeacherBank, batch_keys, live_map_divergence, teacher_log_probs  # noqa: E402

DATA = DataConfig(clip_length=8, crop_size=64, flip=True, backend="opencv", loader_workers=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return open_rawframes(prepared_dataset(tmp_path_factory))


@pytest.fixture(scope="module")
def sharp_teacher(videos):
    """A teacher whose maps are far from uniform, so that wrong maps show: untrained weights
    give uniform maps (on the small flow values their phi is ~1e-7), on which every
    approximation looks right. BN statistics of its flow clips and a steeper w_a fix that."""
    torch.manual_seed(0)
    teacher = create_teacher("i3d_tiny", num_classes=4).eval()
    recompute_batchnorm(teacher, clip_loader(videos, DATA, modality="flow", train=True, batch_size=8, seed=1),
                        "flow", "cpu")
    with torch.no_grad():
        teacher.head.proj.weight.mul_(10)
    return teacher


@pytest.fixture(scope="module")
def bank(videos, sharp_teacher):
    return TeacherBank.compute(sharp_teacher, videos, DATA, seed=0, bank_size=4)


def test_the_bank_holds_the_live_teachers_map_of_every_cropped_and_flipped_training_clip(videos, sharp_teacher,
                                                                                         bank):
    loader = clip_loader(videos, DATA, modality="paired", train=True, batch_size=8, seed=0, bank_size=4)
    seen = set()
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            keys = batch_keys(batch)
            seen.update(keys)
            torch.testing.assert_close(bank.clip_log_probs(batch), teacher_log_probs(sharp_teacher, batch["flow"]),
                                       rtol=1e-4, atol=1e-4)
    assert len(seen) > len(videos.videos)  # several bank clips of a video are used across epochs
    assert any(k[4] for k in seen) and any(not k[4] for k in seen) and any(k[2] or k[3] for k in seen)
    specs = [s for b in loader.planned_batches() for s in b][:4]
    divergence = live_map_divergence(sharp_teacher, bank.clip_log_probs, videos, DATA, specs, "cpu")
    assert divergence["teacher_map_kl_live_used_max"] < 1e-5


def test_the_full_frame_cut_is_not_the_map_of_a_cropped_or_flipped_clip(videos, sharp_teacher):
    # What the old cache gave: the whole video's map sampled at the crop window and mirrored.
    geometry = map_geometry(sharp_teacher, DATA.clip_length, DATA.crop_size)
    cache = TeacherMapCache([video_map_logits(sharp_teacher, read_video_flow(videos, i)).numpy()
                             for i in range(len(videos.videos))], geometry)

    def cut(batch):
        return cache.clip_log_probs(batch["video_index"], batch["start"], batch["crop"], batch["flip"])

    loader = clip_loader(videos, DATA, modality="flow", train=True, batch_size=8, seed=0)
    specs = [s for b in loader.planned_batches() for s in b]
    flipped = [s for s in specs if s.flip][:2]
    cropped = [s for s in specs if not s.flip][:2]
    for sample in (flipped, cropped):
        divergence = live_map_divergence(sharp_teacher, cut, videos, DATA, sample, "cpu")
        assert divergence["teacher_map_kl_live_used_max"] > 0.05


def test_a_flipped_clips_map_is_the_teachers_map_of_the_mirrored_flow_with_x_negated(videos, sharp_teacher, bank):
    flipped = next(key for key in bank.maps if key[4])
    video, start, y0, x0, _ = flipped
    flow = read_video_flow(videos, video)[:, start:start + DATA.clip_length, y0:y0 + 64, x0:x0 + 64]
    mirrored = flow.flip(-1)
    mirrored[0] = -mirrored[0]  # a mirrored clip moves the other way
    live = teacher_log_probs(sharp_teacher, mirrored.unsqueeze(0))[0]
    torch.testing.assert_close(bank.maps[flipped], live, rtol=1e-4, atol=1e-4)
    unflipped = teacher_log_probs(sharp_teacher, flow.unsqueeze(0))[0]
    assert not torch.allclose(bank.maps[flipped], unflipped.flip(-1), atol=1e-2)  # the teacher is no mirror


def test_a_video_shorter_than_the_clip_is_padded_as_the_loaders_pad_it(videos, sharp_teacher):
    flow = read_video_flow(videos, 0)
    short = flow[:, :5]
    padded = pad_in_time(short, 8)
    assert padded.shape[1] == 8 and all(torch.equal(padded[:, t], short[:, 4]) for t in range(5, 8))
    # The loaders' clip of a 5-image video repeats its last image: the same input, the same map.
    one = dataclasses.replace(videos, videos=(dataclasses.replace(videos.videos[0], frames=6, flow_frames=5),))
    loader = clip_loader(one, DATA.model_copy(update={"crop_size": 128}), modality="flow", train=False,
                         batch_size=1, seed=0, clips_per_video=1)
    (batch,) = list(loader)
    torch.testing.assert_close(batch["flow"][0, :, :, :128, :128], padded[:, :, :128, :128])
