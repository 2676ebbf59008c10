"""Where a clip's encoded data lies: JPEG frame files of a rawframes folder, or the frames of
an encoded video (shared by the backends that read each)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vidistill.datasets.errors import DatasetError, VideoDecodeError
from vidistill.datasets.layouts import Listing
from vidistill.datasets.loaders.plan import ClipLoaderConfig, ClipSpec, VideoExtent
from vidistill.datasets.rawframes import PreparedSet
from vidistill.datasets.video import ResampledIndex, resampled_index


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
        return [VideoExtent(v.label, self._length(v), v.width, v.height) for v in self.prepared.videos]

    def _length(self, video) -> int:
        """Frames a clip may start in and read: those that have flow, whenever the video has
        flow, whatever this loader reads. So RGB, flow and paired loaders plan the same clips
        (one clip plan per video for every model of an evaluation), and an RGB clip's teacher
        map (computed on its flow) never reads past the last flow image."""
        flow = self.config.modality != "rgb" or video.flow_frames > 0
        return video.flow_frames if flow else video.frames

    def _indices(self, spec: ClipSpec) -> list[int]:
        video = self.prepared.videos[spec.video_index]
        return spec.frame_indices(self.config.clip_length, self._length(video))

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


class RawVideoFiles:
    """Maps clip specs to the source frames of encoded videos, resampled to ``video_fps`` as
    preparation resamples them (indexing demuxes every video once, without decoding)."""

    def __init__(self, listing: Listing, config: ClipLoaderConfig):
        if config.modality != "rgb":
            raise DatasetError(
                f"{config.modality!r} clips need flow, which raw videos do not have; run "
                "`vidistill datasets prepare` and load the rawframes"
            )
        self.listing = listing
        self.config = config
        self.indices: list[ResampledIndex] = []
        for video in listing.videos:
            try:
                self.indices.append(resampled_index(video.path, config.video_fps))
            except VideoDecodeError as error:
                raise DatasetError(f"{error.reason}; check or remove this video", video.path) from None

    def extents(self) -> list[VideoExtent]:
        return [
            VideoExtent(video.label, len(index), self.config.video_width, self.config.video_height)
            for video, index in zip(self.listing.videos, self.indices)
        ]

    def path(self, spec: ClipSpec) -> Path:
        return self.listing.videos[spec.video_index].path

    def source_frames(self, spec: ClipSpec) -> list[int]:
        """Frame numbers in the encoded video (presentation order) of the clip's frames."""
        index = self.indices[spec.video_index]
        return [index.source_frames[i] for i in spec.frame_indices(self.config.clip_length, len(index))]
