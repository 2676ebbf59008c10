"""The raw-video loader: RGB clips straight from encoded videos, decoded with PyAV.

For RGB-only work on videos that were never prepared, in any codec FFmpeg reads (DALI's CPU
video decoder takes VP8, VP9 and MJPEG only; see dali.py for DALI on raw videos). Frames are resampled and resized exactly as
preparation does (video.read_resampled), then cropped, flipped and normalised by augment.py,
so the tensors have the layout, dtype and normalisation of the rawframes loaders (not their
JPEG rounding). Flow needs prepared rawframes. Each clip decodes its video from the start up
to the clip's last frame: right for short action clips, slow for long videos.
"""
from __future__ import annotations

import itertools

import numpy as np
from torch.utils.data import Dataset

from vidistill.datasets.loaders.augment import collate_clips, crop_flip, rgb_to_unit, to_channels_first
from vidistill.datasets.loaders.frames import RawVideoFiles
from vidistill.datasets.loaders.plan import (
    ClipSpec,
    PlannedEpochs,
    planned_batches_loader,
)
from vidistill.datasets.video import read_resampled


class VideoClips(Dataset):
    """Map-style dataset over one epoch's clip specs; item i is the clip of spec i."""

    def __init__(self, files: RawVideoFiles, specs: list[ClipSpec]):
        self.files, self.specs, self.config = files, specs, files.config

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> dict:
        spec = self.specs[index]
        config = self.config
        path = self.files.path(spec)
        last = spec.start + config.clip_length
        frames = list(
            itertools.islice(
                read_resampled(path, config.video_fps, config.video_width, config.video_height),
                last,
            )
        )
        indices = spec.frame_indices(config.clip_length, len(frames))
        clip = np.stack([frames[i] for i in indices])
        rgb = rgb_to_unit(crop_flip(clip, spec), spec, config.jitter)
        return {"spec": spec, "rgb": to_channels_first(rgb)}


class PyAVClipLoader(PlannedEpochs):
    """Iterates one epoch of RGB batches from raw videos; call ``set_epoch`` per epoch."""

    backend = "pyav"
    device = "cpu"

    def __init__(self, files: RawVideoFiles):
        self.files = files
        self.config = files.config

    def load(self, batches: list[list[ClipSpec]]):
        """Batches of exactly these clips (e.g. to cache teacher maps for chosen clips)."""
        specs = [spec for batch in batches for spec in batch]
        yield from planned_batches_loader(VideoClips(self.files, specs), batches, self.config.num_workers,
                                          collate_clips)
