"""The teacher-map cache reads long videos in chunks with overlap (issue 18): the maps are those
of one pass over the whole video, and the overlap is what makes them so."""
from __future__ import annotations

import pytest
import torch

from vidistill.trainers import teacher as teacher_module
from vidistill.trainers.models import create_teacher
from vidistill.trainers.teacher import video_map_logits


@pytest.fixture(scope="module", params=["Mixed_4f", "Mixed_5c"])
def teacher(request):
    torch.manual_seed(0)
    model = create_teacher("i3d_tiny", num_classes=4, map_block=request.param).eval()
    for module in model.modules():  # BN statistics away from (0, 1): a wrong cut would show
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_chunked_maps_equal_the_whole_video_pass(teacher, monkeypatch):
    flow = torch.randn(2, 147, 32, 32, generator=torch.Generator().manual_seed(1))  # odd length: SAME padding
    whole = video_map_logits(teacher, flow, chunk_frames=1024)  # one pass
    chunked = video_map_logits(teacher, flow, chunk_frames=16)  # 10 (Mixed_4f) or 19 chunks (Mixed_5c)
    # Mixed_5c: stride 8 in time and space, so a 32 px clip has one cell a slice.
    assert chunked.shape == whole.shape == ((37, 2, 2) if teacher.map_block == "Mixed_4f" else (19, 1, 1))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    # With less context than a cell's receptive field, the cells near a cut change.
    stride, _ = teacher_module.MAP_TIME_GEOMETRY[teacher.map_block]
    monkeypatch.setitem(teacher_module.MAP_TIME_GEOMETRY, teacher.map_block, (stride, 8))
    assert (video_map_logits(teacher, flow, chunk_frames=16) - whole).abs().max() > 1e-6


def test_a_chunk_length_off_the_stride_is_refused(teacher):
    stride, _ = teacher_module.MAP_TIME_GEOMETRY[teacher.map_block]
    with pytest.raises(ValueError, match=f"multiple of {stride}"):
        video_map_logits(teacher, torch.zeros(2, 8, 32, 32), chunk_frames=10)
