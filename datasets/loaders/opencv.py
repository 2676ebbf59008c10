"""The fallback rawframes loader: a torch DataLoader whose workers decode JPEG with OpenCV.

It reads the same files as the DALI pipeline and applies augment.py's math, so for the same
plan it yields the same tensors (OpenCV and DALI's CPU decoder are both libjpeg-turbo; a test
holds them equal).
"""
from __future__ import annotations

import cv2
import numpy as np
from torch.utils.data import Dataset

from vidistill.datasets.errors import DatasetError
from vidistill.datasets.loaders.augment import (
    collate_clips,
    crop_flip,
    flow_to_unit,
    rgb_to_unit,
    to_channels_first,
)
from vidistill.datasets.loaders.frames import RawframesFiles, read_encoded
from vidistill.datasets.loaders.plan import (
    ClipLoaderConfig,
    ClipSpec,
    PlannedEpochs,
    planned_batches_loader,
)
from vidistill.datasets.rawframes import PreparedSet


def decode_jpeg(path, grey: bool = False) -> np.ndarray:
    """RGB (H, W, 3) or greyscale (H, W) uint8 of one JPEG file."""
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    image = cv2.imdecode(read_encoded(path), flag)
    if image is None:
        raise DatasetError("not a decodable image; re-prepare this video", path)
    return image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class RawframesClips(Dataset):
    """Map-style dataset over one epoch's clip specs; item i is the clip of spec i."""

    def __init__(self, files: RawframesFiles, specs: list[ClipSpec]):
        self.files = files
        self.specs = specs
        self.config = files.config

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> dict:
        spec = self.specs[index]
        item: dict = {"spec": spec}
        if self.config.modality in ("rgb", "paired"):
            frames = np.stack([decode_jpeg(p) for p in self.files.rgb(spec)])
            item["rgb"] = to_channels_first(rgb_to_unit(crop_flip(frames, spec), spec, self.config.jitter))
        if self.config.modality in ("flow", "paired"):
            paths_x, paths_y = self.files.flow(spec)
            flow_x = crop_flip(np.stack([decode_jpeg(p, grey=True) for p in paths_x]), spec)
            flow_y = crop_flip(np.stack([decode_jpeg(p, grey=True) for p in paths_y]), spec)
            item["flow"] = to_channels_first(flow_to_unit(flow_x, flow_y, spec.flip))
        return item


class OpenCVClipLoader(PlannedEpochs):
    """Iterates one epoch of batches; call ``set_epoch`` before each epoch (as with
    DistributedSampler) to draw new clips."""

    backend = "opencv"
    device = "cpu"

    def __init__(self, prepared: PreparedSet, config: ClipLoaderConfig):
        self.files = RawframesFiles(prepared, config)
        self.config = config

    def load(self, batches: list[list[ClipSpec]]):
        """Batches of exactly these clips (e.g. to cache teacher maps for chosen clips)."""
        specs = [spec for batch in batches for spec in batch]
        # Batches are fixed by the plan, so the DataLoader only splits and orders them.
        yield from planned_batches_loader(RawframesClips(self.files, specs), batches, self.config.num_workers,
                                          collate_clips)

