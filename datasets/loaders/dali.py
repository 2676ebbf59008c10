"""The DALI rawframes loader: encoded JPEG frames -> decoded, cropped, flipped, normalised clips.

Python reads each batch's JPEG bytes (cheap) and the plan's crop/flip/colour parameters and
hands them to one external_source; DALI decodes (``cpu``, or ``mixed`` = nvJPEG on the GPU),
slices, flips and normalises with its own threads, prefetching the next batches meanwhile.
The frames of a batch's clips are one DALI batch of B*T images; they are regrouped into
(B, C, T, H, W) afterwards. The math mirrors augment.py exactly (a test holds them equal).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

from vidistill.datasets.loaders.augment import GREY_WEIGHTS, batch_metadata
from vidistill.datasets.loaders.frames import RawframesFiles, read_encoded
from vidistill.datasets.loaders.plan import ClipLoaderConfig, ClipSpec, batch_specs, plan_epoch
from vidistill.datasets.rawframes import PreparedSet


def _scalar(value: float) -> np.ndarray:
    # (1, 1, 1) broadcasts against one (H, W, C) image
    return np.full((1, 1, 1), value, dtype=np.float32)


class _BatchFeeder:
    """The external_source callback. Kept apart from the loader so the pipeline does not hold
    the loader in a reference cycle: a cycle frees the pipeline at some later gc, possibly
    inside a forked DataLoader worker, where DALI's shutdown aborts the process."""

    def __init__(self, files: RawframesFiles, config: ClipLoaderConfig):
        self.files = files
        self.config = config
        self.batches = iter(())
        self.pending: deque[list[ClipSpec]] = deque()  # batches handed to DALI, not yet out

    def columns(self) -> dict[str, str]:
        """The external_source outputs, name -> element type (jpeg bytes, int32, float32)."""
        columns = {}
        if self.config.modality in ("rgb", "paired"):
            columns["rgb_jpeg"] = "uint8"
        if self.config.modality in ("flow", "paired"):
            columns.update(flow_x_jpeg="uint8", flow_y_jpeg="uint8", flow_x_sign="float32")
        columns.update(anchor="int32", flip="int32")
        if self.config.jitter:
            columns.update(contrast="float32", shift="float32", saturation="float32")
        return columns

    def __call__(self):
        """external_source callback: the next batch of the epoch, one sample per frame.
        Raising StopIteration ends DALI's epoch."""
        specs = next(self.batches)
        self.pending.append(specs)
        T = self.config.clip_length
        names = list(self.columns())
        columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for spec in specs:
            per_frame = {
                "anchor": np.array([spec.crop_y, spec.crop_x], dtype=np.int32),
                "flip": np.array(int(spec.flip), dtype=np.int32),
                "contrast": _scalar(spec.contrast),
                "shift": _scalar(spec.brightness_shift),
                "saturation": _scalar(spec.saturation),
                "flow_x_sign": _scalar(-1.0 if spec.flip else 1.0),
            }
            for name, value in per_frame.items():
                if name in columns:
                    columns[name] += [value] * T
            if "rgb_jpeg" in columns:
                columns["rgb_jpeg"] += [read_encoded(p) for p in self.files.rgb(spec)]
            if "flow_x_jpeg" in columns:
                paths_x, paths_y = self.files.flow(spec)
                columns["flow_x_jpeg"] += [read_encoded(p) for p in paths_x]
                columns["flow_y_jpeg"] += [read_encoded(p) for p in paths_y]
        return tuple(columns[name] for name in names)


class DALIClipLoader:
    """Iterates one epoch of batches; call ``set_epoch`` before each epoch (as with
    DistributedSampler) to draw new clips. ``device_id=None`` runs DALI on the CPU only."""

    backend = "dali"

    def __init__(self, prepared: PreparedSet, config: ClipLoaderConfig, device_id: int | None):
        self.files = RawframesFiles(prepared, config)
        self.config = config
        self.device_id = device_id
        self.device = "cpu" if device_id is None else f"cuda:{device_id}"
        self.epoch = 0
        self._feeder = _BatchFeeder(self.files, config)
        self._pipeline = None
        self._clean = True  # the pipeline holds no batch of an abandoned epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> list[list[ClipSpec]]:
        return batch_specs(plan_epoch(self.files.extents(), self.config, self.epoch), self.config)

    def __len__(self) -> int:
        return len(self._plan())

    # -- the pipeline ----------------------------------------------------------------------------

    def _crop_shape(self) -> list[int]:
        if self.config.train:
            return [self.config.crop_size, self.config.crop_size]
        # test clips are full frames; the plan checks that all videos share one size
        first = self.files.prepared.videos[0]
        return [first.height, first.width]

    def _build(self):
        from nvidia.dali import fn, math as dmath, pipeline_def, types

        config = self.config
        gpu = self.device_id is not None
        decoder_device = "mixed" if gpu else "cpu"
        columns = self._feeder.columns()
        dtypes = {"uint8": types.UINT8, "int32": types.INT32, "float32": types.FLOAT}
        crop_shape = self._crop_shape()

        @pipeline_def(
            batch_size=config.batch_size * config.clip_length,
            num_threads=config.num_workers,
            device_id=self.device_id,
            seed=config.seed,
            prefetch_queue_depth=2,
        )
        def clips():
            nodes = fn.external_source(
                source=self._feeder,
                num_outputs=len(columns),
                batch=True,
                dtype=[dtypes[kind] for kind in columns.values()],
            )
            inputs = dict(zip(columns, nodes))

            def on_device(node):
                return node.gpu() if gpu else node

            def decode_crop_flip(jpeg, output_type):
                # Decoding only the crop window (libjpeg-turbo / nvJPEG ROI decode) instead of the
                # full frame; the pixels inside are the same (a test holds them equal).
                image = fn.decoders.image_slice(
                    jpeg, inputs["anchor"], crop_shape, axes=[0, 1], normalized_anchor=False,
                    normalized_shape=False, device=decoder_device, output_type=output_type,
                )
                return fn.flip(image, horizontal=inputs["flip"])

            outputs = []
            if "rgb_jpeg" in inputs:
                x = fn.cast(decode_crop_flip(inputs["rgb_jpeg"], types.RGB), dtype=types.FLOAT)
                if config.jitter:
                    x = x * on_device(inputs["contrast"]) + on_device(inputs["shift"])
                    r, g, b = GREY_WEIGHTS
                    grey = x[:, :, 0:1] * r + x[:, :, 1:2] * g + x[:, :, 2:3] * b
                    x = grey + (x - grey) * on_device(inputs["saturation"])
                    x = dmath.clamp(x, 0.0, 255.0)
                outputs.append(x / 127.5 - 1.0)
            if "flow_x_jpeg" in inputs:
                planes = []
                for name in ("flow_x_jpeg", "flow_y_jpeg"):
                    image = decode_crop_flip(inputs[name], types.GRAY)
                    planes.append(fn.cast(image, dtype=types.FLOAT) / 127.5 - 1.0)
                flow_x = planes[0] * on_device(inputs["flow_x_sign"])
                outputs.append(fn.cat(flow_x, planes[1], axis=2))
            return tuple(outputs)

        pipeline = clips()
        pipeline.build()
        return pipeline

    # -- iteration --------------------------------------------------------------------------------

    def __iter__(self):
        return self.load(self._plan())

    def load(self, batches: list[list[ClipSpec]]):
        """Batches of exactly these clips (e.g. to cache teacher maps for chosen clips); at most
        ``batch_size`` clips each, with the crop size of this loader's mode."""
        crop = self._crop_shape()
        for specs in batches:
            if len(specs) > self.config.batch_size:
                raise ValueError(f"a batch of {len(specs)} clips exceeds batch_size {self.config.batch_size}")
            if any([s.crop_height, s.crop_width] != crop for s in specs):
                raise ValueError(f"this loader's pipeline crops {crop[0]}x{crop[1]}; a spec asks otherwise")
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
        """DALI batch of B*T (H, W, C) frames -> torch (B, C, T, H, W), in one copy: DALI's
        buffer is only valid until the next run, and the permutation has to copy anyway."""
        tensor = frames.as_tensor()
        shape = list(tensor.shape())
        if self.device_id is None:
            flat = torch.from_numpy(np.asarray(tensor))  # a view of DALI's buffer
        else:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            flat = torch.empty(shape, dtype=torch.float32, device=self.device)
            feed_ndarray(tensor, flat, cuda_stream=torch.cuda.current_stream(self.device))
        T = self.config.clip_length
        return flat.view(clips, T, *shape[1:]).permute(0, 4, 1, 2, 3).contiguous()
