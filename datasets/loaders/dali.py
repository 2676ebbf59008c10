"""DALI loaders: rawframes JPEG (RGB, flow, paired) and raw encoded videos (RGB).

Python reads each batch's encoded bytes (cheap) and the plan's crop/flip/colour parameters and
hands them to one external_source; DALI decodes (``cpu``, or ``mixed`` on the GPU: nvJPEG for
JPEG, NVDEC for video), crops, flips and normalises with its own threads, prefetching the next
batches meanwhile. The math mirrors augment.py exactly (a test holds the rawframes path equal to
the OpenCV fallback, bit for bit).

Rawframes: the frames of a batch's clips are one DALI batch of B*T images, decoded only inside
their crop window, regrouped into (B, C, T, H, W) afterwards.
Raw videos: one DALI sample per clip; DALI's video decoder takes the source frame numbers of the
clip's 24 fps frames (video.resampled_index) and the frames are resized to the prepared size.
Its CPU decoder takes VP8, VP9 and MJPEG only; the mixed one also H.264, HEVC, MPEG-4, AV1.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np
import torch

from vidistill.datasets.errors import DatasetError
from vidistill.datasets.loaders.augment import GREY_WEIGHTS, batch_metadata
from vidistill.datasets.loaders.frames import RawframesFiles, RawVideoFiles, read_encoded
from vidistill.datasets.loaders.plan import ClipLoaderConfig, ClipSpec, PlannedEpochs
from vidistill.datasets.rawframes import PreparedSet

# FFmpeg codec names DALI's video decoder accepts, per decoder device (its documentation, and
# measured: the CPU decoder refuses H.264, HEVC and MPEG-4 part 2).
VIDEO_CODECS = {
    "cpu": frozenset({"vp8", "vp9", "mjpeg"}),
    "mixed": frozenset({"vp8", "vp9", "mjpeg", "h264", "hevc", "mpeg4", "av1"}),
}


def _scalar(value: float) -> np.ndarray:
    # (1, 1, 1) broadcasts against one (H, W, C) image and one (T, H, W, C) sequence
    return np.full((1, 1, 1), value, dtype=np.float32)


def _clip_parameters(spec: ClipSpec) -> dict[str, np.ndarray]:
    return {
        "anchor": np.array([spec.crop_y, spec.crop_x], dtype=np.int32),
        "flip": np.array(int(spec.flip), dtype=np.int32),
        "contrast": _scalar(spec.contrast),
        "shift": _scalar(spec.brightness_shift),
        "saturation": _scalar(spec.saturation),
        "flow_x_sign": _scalar(-1.0 if spec.flip else 1.0),
    }


class _BatchFeeder:
    """The external_source callback: the next planned batch, as columns of samples; raising
    StopIteration ends DALI's epoch. Kept apart from the loader so the pipeline does not hold the
    loader in a reference cycle: a cycle frees the pipeline at some later gc, possibly inside a
    forked DataLoader worker, where DALI's shutdown aborts the process."""

    def __init__(self, files, columns: dict[str, str], samples: Callable[..., list[dict]]):
        self.files = files
        self.columns = columns  # name -> element type
        self.samples = samples  # (files, columns, spec) -> the DALI samples of one clip
        self.batches = iter(())
        self.pending: deque[list[ClipSpec]] = deque()  # batches handed to DALI, not yet out

    def __call__(self):
        specs = next(self.batches)
        self.pending.append(specs)
        columns: dict[str, list[np.ndarray]] = {name: [] for name in self.columns}
        for spec in specs:
            for sample in self.samples(self.files, self.columns, spec):
                for name in self.columns:
                    columns[name].append(sample[name])
        return tuple(columns.values())


class _DALILoader(PlannedEpochs):
    """Epochs, explicit clip lists and tensor hand-over, common to both DALI loaders."""

    backend = "dali"
    samples_per_clip: int  # DALI samples a clip takes: T frames, or 1 sequence

    def __init__(self, files, config: ClipLoaderConfig, device_id: int | None):
        self.files = files
        self.config = config
        self.device_id = device_id
        self.device = "cpu" if device_id is None else f"cuda:{device_id}"
        self._feeder = _BatchFeeder(files, self._columns(), self._samples)
        self._pipeline = None
        self._clean = True  # the pipeline holds no batch of an abandoned epoch

    def _crop_shape(self) -> list[int]:
        if self.config.train:
            return [self.config.crop_size, self.config.crop_size]
        # test clips are full frames; the plan checks that all videos share one size
        first = self.files.extents()[0]
        return [first.height, first.width]

    def load(self, batches: list[list[ClipSpec]]):
        """Batches of exactly these clips (e.g. to cache teacher maps for chosen clips); at most
        ``batch_size`` clips each, with the crop size of this loader's mode."""
        crop = self._crop_shape()
        for specs in batches:
            if len(specs) > self.config.batch_size:
                raise ValueError(f"a batch of {len(specs)} clips exceeds batch_size {self.config.batch_size}")
            if any([s.crop_height, s.crop_width] != crop for s in specs):
                raise ValueError(f"this loader's pipeline crops {crop[0]}x{crop[1]}; a spec asks otherwise")
        return self._run(batches)

    def _run(self, batches: list[list[ClipSpec]]):
        if self._pipeline is None or not self._clean:
            # An epoch abandoned half-way leaves prefetched batches inside; start afresh.
            self._pipeline = None
            self._feeder.pending.clear()
        self._feeder.batches = iter(batches)
        if self._pipeline is None:
            self._pipeline = self._build()
        self._clean = False
        keys = [k for k in ("rgb", "flow") if self.config.modality in (k, "paired")]
        while True:
            try:
                outputs = self._pipeline.run()
            except StopIteration:
                break
            specs = self._feeder.pending.popleft()
            batch = {key: self._to_clips(out, len(specs)) for key, out in zip(keys, outputs)}
            batch.update(batch_metadata(specs))
            yield batch
        self._pipeline.reset()
        self._clean = True

    def _to_clips(self, frames, clips: int) -> torch.Tensor:
        """DALI output (B*T frames or B sequences, channels last) -> torch (B, C, T, H, W), in
        one copy: DALI's buffer is only valid until the next run, and permuting copies anyway."""
        tensor = frames.as_tensor()
        shape = list(tensor.shape())
        if self.device_id is None:
            flat = torch.from_numpy(np.asarray(tensor))  # a view of DALI's buffer
        else:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            flat = torch.empty(shape, dtype=torch.float32, device=self.device)
            feed_ndarray(tensor, flat, cuda_stream=torch.cuda.current_stream(self.device))
        T = self.config.clip_length
        return flat.view(clips, T, *shape[-3:]).permute(0, 4, 1, 2, 3).contiguous()

    # -- the pipeline ----------------------------------------------------------------------------

    def _columns(self) -> dict[str, str]:
        raise NotImplementedError

    @staticmethod  # not a bound method: the feeder must not hold the loader (see _BatchFeeder)
    def _samples(files, columns: dict[str, str], spec: ClipSpec) -> list[dict]:
        raise NotImplementedError

    def _graph(self, inputs: dict, on_device, crop_shape: list[int], decoder_device: str) -> tuple:
        raise NotImplementedError

    def _parameter_columns(self) -> dict[str, str]:
        columns = {"anchor": "int32", "flip": "int32"}
        if self.config.jitter:
            columns.update(contrast="float32", shift="float32", saturation="float32")
        return columns

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        config = self.config
        gpu = self.device_id is not None
        columns = self._feeder.columns
        dtypes = {"uint8": types.UINT8, "int32": types.INT32, "float32": types.FLOAT}

        @pipeline_def(
            batch_size=config.batch_size * self.samples_per_clip,
            num_threads=config.num_workers,
            device_id=self.device_id,
            prefetch_queue_depth=2,
        )
        def clips():
            nodes = fn.external_source(
                source=self._feeder,
                num_outputs=len(columns),
                batch=True,
                dtype=[dtypes[kind] for kind in columns.values()],
            )

            def on_device(node):
                return node.gpu() if gpu else node

            return self._graph(
                dict(zip(columns, nodes)), on_device, self._crop_shape(), "mixed" if gpu else "cpu"
            )

        pipeline = clips()
        pipeline.build()
        return pipeline

    def _rgb_to_unit(self, rgb, ndim: int, inputs: dict, on_device):
        """uint8 RGB (..., 3) of ``ndim`` dimensions -> float32 [-1, 1], colour-perturbed in
        training: augment.py's math."""
        from nvidia.dali import fn, math as dmath, types

        x = fn.cast(rgb, dtype=types.FLOAT)
        if self.config.jitter:
            x = x * on_device(inputs["contrast"]) + on_device(inputs["shift"])
            r, g, b = GREY_WEIGHTS
            leading = (slice(None),) * (ndim - 1)  # DALI subscripts take no Ellipsis
            red, green, blue = (x[leading + (slice(c, c + 1),)] for c in range(3))
            grey = red * r + green * g + blue * b
            x = grey + (x - grey) * on_device(inputs["saturation"])
            x = dmath.clamp(x, 0.0, 255.0)
        return x / 127.5 - 1.0


class DALIClipLoader(_DALILoader):
    """Clips from rawframes JPEG. Call ``set_epoch`` before each epoch (as with
    DistributedSampler) to draw new clips. ``device_id=None`` runs DALI on the CPU only."""

    def __init__(self, prepared: PreparedSet, config: ClipLoaderConfig, device_id: int | None):
        self.samples_per_clip = config.clip_length
        super().__init__(RawframesFiles(prepared, config), config, device_id)

    def _columns(self) -> dict[str, str]:
        columns = {}
        if self.config.modality in ("rgb", "paired"):
            columns["rgb_jpeg"] = "uint8"
        if self.config.modality in ("flow", "paired"):
            columns.update(flow_x_jpeg="uint8", flow_y_jpeg="uint8", flow_x_sign="float32")
        return {**columns, **self._parameter_columns()}

    @staticmethod
    def _samples(files: RawframesFiles, columns: dict[str, str], spec: ClipSpec) -> list[dict]:
        """One sample per frame, each with its clip's parameters."""
        parameters = _clip_parameters(spec)
        samples = [dict(parameters) for _ in range(files.config.clip_length)]
        if "rgb_jpeg" in columns:
            for sample, path in zip(samples, files.rgb(spec)):
                sample["rgb_jpeg"] = read_encoded(path)
        if "flow_x_jpeg" in columns:
            paths_x, paths_y = files.flow(spec)
            for sample, path_x, path_y in zip(samples, paths_x, paths_y):
                sample["flow_x_jpeg"], sample["flow_y_jpeg"] = read_encoded(path_x), read_encoded(path_y)
        return samples

    def _graph(self, inputs, on_device, crop_shape, decoder_device):
        from nvidia.dali import fn, types

        def decode_crop_flip(jpeg, output_type):
            # Decode only the crop window (libjpeg-turbo / nvJPEG ROI decoding) instead of the
            # full frame; the pixels inside are the same (a test holds them equal).
            image = fn.decoders.image_slice(
                jpeg, inputs["anchor"], crop_shape, axes=[0, 1], normalized_anchor=False,
                normalized_shape=False, device=decoder_device, output_type=output_type,
            )
            return fn.flip(image, horizontal=inputs["flip"])

        outputs = []
        if "rgb_jpeg" in inputs:
            outputs.append(self._rgb_to_unit(decode_crop_flip(inputs["rgb_jpeg"], types.RGB), 3, inputs, on_device))
        if "flow_x_jpeg" in inputs:
            planes = [
                fn.cast(decode_crop_flip(inputs[name], types.GRAY), dtype=types.FLOAT) / 127.5 - 1.0
                for name in ("flow_x_jpeg", "flow_y_jpeg")
            ]
            flow_x = planes[0] * on_device(inputs["flow_x_sign"])  # a mirrored clip moves the other way
            outputs.append(fn.cat(flow_x, planes[1], axis=2))
        return tuple(outputs)


class DALIVideoClipLoader(_DALILoader):
    """RGB clips straight from encoded videos (DALI's video decoder). Call ``set_epoch`` before
    each epoch. Raises DatasetError when a video's codec is one the decoder device refuses."""

    samples_per_clip = 1

    def __init__(self, files: RawVideoFiles, device_id: int | None):
        decoder = "cpu" if device_id is None else "mixed"
        for video, index in zip(files.listing.videos, files.indices):
            if index.codec not in VIDEO_CODECS[decoder]:
                raise DatasetError(
                    f"codec {index.codec} is not decoded by DALI's {decoder} video decoder (it takes "
                    f"{', '.join(sorted(VIDEO_CODECS[decoder]))}); use the pyav backend, or prepare "
                    "rawframes",
                    video.path,
                )
        super().__init__(files, files.config, device_id)

    def _columns(self) -> dict[str, str]:
        return {"video": "uint8", "source_frames": "int32", **self._parameter_columns()}

    @staticmethod
    def _samples(files: RawVideoFiles, columns: dict[str, str], spec: ClipSpec) -> list[dict]:
        sample = _clip_parameters(spec)
        sample["video"] = read_encoded(files.path(spec))
        sample["source_frames"] = np.asarray(files.source_frames(spec), dtype=np.int32)
        return [sample]

    def _graph(self, inputs, on_device, crop_shape, decoder_device):
        from nvidia.dali import fn

        frames = fn.decoders.video(inputs["video"], frames=inputs["source_frames"], device=decoder_device)
        frames = fn.resize(frames, resize_x=self.config.video_width, resize_y=self.config.video_height)
        frames = fn.slice(frames, start=inputs["anchor"], shape=crop_shape, axes=[1, 2])
        frames = fn.flip(frames, horizontal=inputs["flip"])
        return (self._rgb_to_unit(frames, 4, inputs, on_device),)
