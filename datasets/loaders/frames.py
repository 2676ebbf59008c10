"""Where a clip's encoded JPEG frames lie in a rawframes folder (shared by all rawframes backends)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vidistill.datasets.errors import DatasetError
from vidistill.datasets.loaders.plan import ClipLoaderConfig, ClipSpec, VideoExtent
from vidistill.datasets.rawframes import PreparedSet


class RawframesFiles:
    """Maps clip specs to the frame files of a PreparedSet."""

    def __init__(self, prepared: PreparedSet, config: ClipLoaderConfig):
        self.prepared = prepared
        self.config = config
        if config.modality != "rgb":
            without_flow = [v.video_id for v in prepared.videos if v.flow_frames == 0]
            if without_flow:
                raise DatasetError(
                    f"{len(without_flow)} video(s) have no flow images (first: "
                    f"{without_flow[0]!r}); prepare with a flow method to load "
                    f"{config.modality!r} clips",
                    prepared.root,
                )

    def extents(self) -> list[VideoExtent]:
        flow = self.config.modality != "rgb"
        return [
            VideoExtent(v.label, v.flow_frames if flow else v.frames, v.width, v.height)
            for v in self.prepared.videos
        ]

    def _indices(self, spec: ClipSpec) -> list[int]:
        video = self.prepared.videos[spec.video_index]
        flow = self.config.modality != "rgb"
        length = video.flow_frames if flow else video.frames
        return spec.frame_indices(self.config.clip_length, length)

    def rgb(self, spec: ClipSpec) -> list[Path]:
        directory = self.prepared.videos[spec.video_index].directory
        return [directory / self.prepared.templates.rgb_name(i) for i in self._indices(spec)]

    def flow(self, spec: ClipSpec) -> tuple[list[Path], list[Path]]:
        directory = self.prepared.videos[spec.video_index].directory
        names = [self.prepared.templates.flow_names(i) for i in self._indices(spec)]
        return [directory / x for x, _ in names], [directory / y for _, y in names]


def read_encoded(path: Path) -> np.ndarray:
    """The bytes of one encoded image, as DALI's decoders and cv2.imdecode take them."""
    try:
        return np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise DatasetError(
            f"cannot read frame ({error.strerror}); re-prepare this video", path
        ) from None
