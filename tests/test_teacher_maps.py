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
