"""Clip loaders for training and testing: the contract the trainers rely on.

    prepared = open_rawframes("/data/ucf101-frames")            # vidistill.datasets.rawframes
    loader = make_clip_loader(prepared, ClipLoaderConfig(modality="paired", batch_size=8,
                              shard_id=rank, num_shards=world_size, seed=0))
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader: ...

A batch is a dict:

``rgb``          float32 (B, 3, T, H, W), RGB, pixel / 127.5 - 1 in [-1, 1] (what the I3D
                 Kinetics weights expect); colour-perturbed in training.
``flow``         float32 (B, 2, T, H, W), channels x then y, stored value v in 0..255 mapped to
                 v / 127.5 - 1 = flow / bound; horizontal flips negate channel 0 (x). Flow image
                 t is the motion from frame t to t + 1, so a paired clip's RGB frame t and flow
                 image t start at the same instant. (Only for modality ``flow`` / ``paired``.)
``label``        int64 (B,)
``video_index``  int64 (B,), index into ``prepared.videos`` (``listing.videos`` for raw videos);
                 test clips are aggregated per video by it
``start``        int64 (B,), first frame of the clip (0-based)
``crop``         int64 (B, 2), (y0, x0) of the crop box in the full frame (320x256 when prepared
                 with the defaults); box size is ``crop_size`` in training, the full frame in test
``flip``         bool (B,), whether the clip was mirrored left-right *after* cropping

So a map M computed once on the full frame becomes the clip's map as
``M[..., y0:y0+h, x0:x0+w]``, then ``.flip(-1)`` where ``flip`` (pixel coordinates: divide by
the map's stride for a feature map; the trainers cache the teacher's attention maps this way
instead of running the teacher at every step).

Clips: T consecutive frames (default 24); training draws one clip per video per epoch with a
random start, a random 224x224 crop, a random flip and, for RGB only, colour perturbation; paired
RGB + flow clips share crop and flip. Test clips are full frames, ``test_clips_per_video``
evenly spaced starts per video, in video order. Frames past a short video's end repeat its last
frame. A video with flow is read over its frames that have flow (all but the last), whatever the
modality, so RGB, flow and paired loaders of one seed plan the same clips. Every random choice comes from (seed, epoch), so loading is deterministic and identical
across backends; the epoch's clips are drawn for the whole dataset and dealt to shards
(``shard_id=rank, num_shards=world_size``); training pads by wrapping so all shards take the
same number of steps, test does not pad. ``rgb``/``flow`` lie on the loader's ``device``
(``cuda:N`` for DALI on a GPU), the other entries on the CPU.

Backends (``ClipLoaderConfig.backend``):

``dali``    rawframes JPEG -> DALI (``mixed`` nvJPEG decoding on a GPU, ``cpu`` otherwise); or
            raw encoded videos (a ``Listing``, RGB only) -> DALI's video decoder (NVDEC on a
            GPU: H.264, HEVC, MPEG-4, VP8/9, AV1, MJPEG; on a CPU only VP8, VP9, MJPEG).
``opencv``  rawframes JPEG -> OpenCV decoding in torch DataLoader workers; same tensors as dali.
``pyav``    raw encoded videos, RGB only, any codec FFmpeg reads, PyAV decoding in workers.
``auto``    on a GPU: dali (raw videos: pyav when a codec is one NVDEC lacks). On a CPU: the
            backend ``benchmarks/bench_loaders.py`` measured faster, DEFAULT_CPU_BACKEND for
            rawframes and DEFAULT_CPU_VIDEO_BACKEND for raw videos (pyav when DALI lacks a codec).
Raw-video clips are resampled and resized as preparation does, so their tensors match the
rawframes ones in layout, dtype and normalisation (not bit for bit: no JPEG rounding, and each
decoder resizes its own way). Which backend and device ran is logged once per process.
"""
from __future__ import annotations

import logging

from vidistill.datasets.errors import DatasetError
from vidistill.datasets.layouts import Listing
from vidistill.datasets.loaders.plan import ClipLoaderConfig, ClipSpec, augmentation_bank, plan_epoch
from vidistill.datasets.rawframes import PreparedSet

__all__ = [
    "ClipLoaderConfig",
    "ClipSpec",
    "DEFAULT_CPU_BACKEND",
    "DEFAULT_CPU_VIDEO_BACKEND",
    "augmentation_bank",
    "make_clip_loader",
    "plan_epoch",
    "resolve_backend",
]

log = logging.getLogger(__name__)

# Measured by benchmarks/bench_loaders.py on the 2-core CPU machines (training clips/s, same
# worker count; figures in its docstring): rawframes DALI/OpenCV x1.03, a tie within the noise
# of a shared machine, DALI by a hair; raw VP9 DALI/PyAV x0.89. Rerun when hardware changes.
DEFAULT_CPU_BACKEND = "dali"
DEFAULT_CPU_VIDEO_BACKEND = "pyav"

_BACKENDS = ("auto", "dali", "opencv", "pyav")
_announced: set[tuple[str, str, bool]] = set()  # (backend, device, raw video) logged


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(
    source: PreparedSet | Listing, config: ClipLoaderConfig, codecs: set[str] = frozenset()
) -> tuple[str, int | None]:
    """(backend, CUDA device id or None) that ``make_clip_loader`` uses for this config;
    ``codecs`` are those of a Listing's videos."""
    if config.backend not in _BACKENDS:
        raise DatasetError(f"unknown loader backend {config.backend!r}; choose one of {_BACKENDS}")
    if config.device not in ("auto", "cpu", "gpu"):
        raise DatasetError(f"device must be auto, cpu or gpu, not {config.device!r}")
    if config.device == "gpu" and not _cuda_available():
        raise DatasetError("device 'gpu' asked for, but torch sees no CUDA device")
    gpu = config.device == "gpu" or (config.device == "auto" and _cuda_available())
    raw = isinstance(source, Listing)
    if raw and config.backend == "opencv":
        raise DatasetError("the opencv backend reads rawframes; raw videos load with pyav or dali")
    if not raw and config.backend == "pyav":
        raise DatasetError("the pyav backend reads raw videos: pass a Listing, not rawframes")
    backend = config.backend
    if backend == "auto":
        if gpu:
            backend = "dali"
        else:
            backend = DEFAULT_CPU_VIDEO_BACKEND if raw else DEFAULT_CPU_BACKEND
        if raw and backend == "dali":
            from vidistill.datasets.loaders.dali import VIDEO_CODECS

            if not codecs <= VIDEO_CODECS["mixed" if gpu else "cpu"]:
                backend = "pyav"
    if backend == "dali" and gpu:
        import torch

        return "dali", torch.cuda.current_device()
    return backend, None


def make_clip_loader(source: PreparedSet | Listing, config: ClipLoaderConfig = ClipLoaderConfig()):
    """A loader of clip batches (see the module doc) over prepared rawframes or raw videos.

    It has ``set_epoch(epoch)``, ``len()`` (batches per epoch for this shard), iteration,
    ``load(batches of ClipSpec)``, and ``backend`` / ``device`` attributes naming what runs.
    """
    codecs: set[str] = set()
    if isinstance(source, Listing):
        from vidistill.datasets.loaders.frames import RawVideoFiles

        files = RawVideoFiles(source, config)  # indexes every video once
        codecs = {index.codec for index in files.indices}
    backend, device_id = resolve_backend(source, config, codecs)
    raw = isinstance(source, Listing)
    if backend == "dali" and raw:
        from vidistill.datasets.loaders.dali import DALIVideoClipLoader

        loader = DALIVideoClipLoader(files, device_id)
    elif backend == "dali":
        from vidistill.datasets.loaders.dali import DALIClipLoader

        loader = DALIClipLoader(source, config, device_id)
    elif backend == "opencv":
        from vidistill.datasets.loaders.opencv import OpenCVClipLoader

        loader = OpenCVClipLoader(source, config)
    else:
        from vidistill.datasets.loaders.pyav import PyAVClipLoader

        loader = PyAVClipLoader(files)
    key = (loader.backend, loader.device, raw)
    if key not in _announced:
        _announced.add(key)
        what = {
            ("dali", False): f"rawframes JPEG, DALI {'mixed/nvJPEG' if device_id is not None else 'CPU'} decoding",
            ("dali", True): f"raw video, DALI {'mixed/NVDEC' if device_id is not None else 'CPU'} video decoding",
            ("opencv", False): "rawframes JPEG, OpenCV decoding in DataLoader workers",
            ("pyav", True): "raw video, PyAV decoding in DataLoader workers",
        }[loader.backend, raw]
        log.info("clip loading: %s on %s (%s)", loader.backend, loader.device, what)
    return loader
