"""Which clips an epoch reads, with every random choice made here, once, in Python.

All loader backends (DALI, OpenCV in a torch DataLoader, PyAV on raw video) take the same
``ClipSpec`` list, so for the same seed they read the same frames with the same crop, flip and
colour perturbation, and a trainer can apply that crop/flip to a teacher attention map cached
on the full frame. The plan of an epoch is drawn for the whole dataset from (seed, epoch) and
then dealt to the shards, so it does not depend on the number of workers reading it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

MODALITIES = ("rgb", "flow", "paired")


@dataclass(frozen=True)
class ClipLoaderConfig:
    """How clips are drawn and batched. Defaults are the paper's (Sec. 3.6)."""

    modality: str = "rgb"  # rgb | flow | paired (RGB + flow with the same crop and flip)
    train: bool = True  # train: random crop/flip/colour; test: full frames, clips evenly spaced
    clip_length: int = 24  # T consecutive frames
    crop_size: int = 224  # training crop, square; test clips are the full frame
    test_clips_per_video: int = 5
    batch_size: int = 8
    flip: bool = True  # random horizontal flip in training
    colour_jitter: bool = True  # colour perturbation in training, RGB only
    brightness: float = 0.15  # max shift, fraction of 255
    contrast: float = 0.2  # factor in [1 - c, 1 + c]
    saturation: float = 0.2  # factor in [1 - s, 1 + s]
    seed: int = 0
    shard_id: int = 0  # rank of this data-parallel worker
    num_shards: int = 1  # world size
    drop_last: bool = True  # training only: every batch full
    backend: str = "auto"  # auto | dali | opencv | pyav
    device: str = "auto"  # auto | cpu | gpu (DALI only: mixed decoders on the GPU)
    num_workers: int = 2  # DALI threads, or DataLoader worker processes
    video_fps: float = 24.0  # raw-video loading (pyav) resamples and resizes as preparation does
    video_width: int = 320
    video_height: int = 256
    # Training only: > 0 draws each clip's start, crop and flip from a bank of this many per
    # video, drawn once from the seed (colour perturbation stays fresh every epoch), so a
    # frozen teacher's map of every clip can be computed once (see augmentation_bank).
    bank_size: int = 0

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, not {self.modality!r}")
        if not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard_id {self.shard_id} is not in 0..{self.num_shards - 1}")
        if self.clip_length < 1 or self.batch_size < 1 or self.test_clips_per_video < 1:
            raise ValueError("clip_length, batch_size and test_clips_per_video must be >= 1")

    @property
    def jitter(self) -> bool:
        return self.train and self.colour_jitter and self.modality != "flow"


@dataclass(frozen=True)
class VideoExtent:
    """What the plan needs to know of a video."""

    label: int
    length: int  # frames a clip may start in: RGB frames, or flow images for flow/paired
    width: int
    height: int


@dataclass(frozen=True)
class ClipSpec:
    """One clip: which frames, where the crop lies, and the random augmentation drawn."""

    video_index: int
    label: int
    start: int  # first frame (0-based); frames past the video's end repeat its last frame
    crop_y: int
    crop_x: int
    crop_height: int
    crop_width: int
    flip: bool
    contrast: float = 1.0  # colour perturbation (identity unless jitter); see augment.py
    brightness_shift: float = 0.0
    saturation: float = 1.0

    def frame_indices(self, clip_length: int, length: int) -> list[int]:
        return [min(self.start + i, length - 1) for i in range(clip_length)]


def plan_epoch(
    videos: Sequence[VideoExtent], config: ClipLoaderConfig, epoch: int
) -> list[ClipSpec]:
    """This shard's clips of one epoch, in reading order."""
    if not videos:
        raise ValueError("no videos to load")
    rng = np.random.default_rng([config.seed, epoch])
    specs = _plan_train(videos, config, rng) if config.train else _plan_test(videos, config)
    if config.train and len(specs) % config.num_shards:
        # Pad by wrapping so every rank takes the same number of steps (as DistributedSampler).
        specs += specs[: config.num_shards - len(specs) % config.num_shards]
    # Test clips are not padded: a duplicated clip would count twice in the evaluation.
    return specs[config.shard_id :: config.num_shards]


# Random stream of the augmentation bank, apart from the epochs' streams (seed, epoch).
BANK_STREAM = 1 << 20


def augmentation_bank(videos: Sequence[VideoExtent], config: ClipLoaderConfig) -> list[list[ClipSpec]]:
    """``config.bank_size`` training clips per video (start, crop, flip), the same for every
    epoch and every modality of one seed: what a training epoch of a banked loader picks from."""
    rng = np.random.default_rng([config.seed, BANK_STREAM])
    return [[_draw_clip(index, video, config, rng) for _ in range(config.bank_size)]
            for index, video in enumerate(videos)]


def _plan_train(videos, config: ClipLoaderConfig, rng: np.random.Generator) -> list[ClipSpec]:
    bank = augmentation_bank(videos, config) if config.bank_size > 0 else None
    specs = []
    for index in rng.permutation(len(videos)):
        spec = _draw_clip(int(index), videos[index], config, rng)
        if bank is not None:
            chosen = bank[index][int(rng.integers(config.bank_size))]
            spec = replace(spec, start=chosen.start, crop_y=chosen.crop_y, crop_x=chosen.crop_x, flip=chosen.flip)
        specs.append(spec)
    return specs


def _draw_clip(index: int, video: VideoExtent, config: ClipLoaderConfig, rng: np.random.Generator) -> ClipSpec:
    size = config.crop_size
    if video.width < size or video.height < size:
        raise ValueError(
            f"video {index} is {video.width}x{video.height}, smaller than the "
            f"{size}x{size} crop; prepare at a larger size or lower crop_size"
        )
    start = int(rng.integers(0, max(video.length - config.clip_length, 0) + 1))
    crop_y = int(rng.integers(0, video.height - size + 1))
    crop_x = int(rng.integers(0, video.width - size + 1))
    flip = bool(rng.random() < 0.5) if config.flip else False
    colour = {}
    # Drawn for every modality, used for RGB only: the random stream, so the starts, crops
    # and flips, is then the same for RGB, flow and paired loaders of one seed.
    contrast = float(np.float32(rng.uniform(1 - config.contrast, 1 + config.contrast)))
    brightness = rng.uniform(-config.brightness, config.brightness) * 255.0
    saturation = rng.uniform(1 - config.saturation, 1 + config.saturation)
    if config.jitter:
        colour = {
            "contrast": contrast,
            # x * c + (b + (1 - c) * 128): contrast about mid-grey, then brightness
            "brightness_shift": float(np.float32(brightness + (1.0 - contrast) * 128.0)),
            "saturation": float(np.float32(saturation)),
        }
    return ClipSpec(int(index), video.label, start, crop_y, crop_x, size, size, flip, **colour)


def _plan_test(videos, config: ClipLoaderConfig) -> list[ClipSpec]:
    sizes = {(v.width, v.height) for v in videos}
    if len(sizes) > 1:
        raise ValueError(
            f"test clips are full frames, so all videos must share one size; found {sorted(sizes)}"
        )
    specs = []
    for index, video in enumerate(videos):
        last_start = max(video.length - config.clip_length, 0)
        starts = np.rint(np.linspace(0, last_start, config.test_clips_per_video)).astype(int)
        for start in starts:
            specs.append(
                ClipSpec(index, video.label, int(start), 0, 0, video.height, video.width, False)
            )
    return specs


def batch_specs(specs: list[ClipSpec], config: ClipLoaderConfig) -> list[list[ClipSpec]]:
    """Group an epoch's clips into batches; training drops a last partial batch if asked."""
    batches = [specs[i : i + config.batch_size] for i in range(0, len(specs), config.batch_size)]
    if config.train and config.drop_last and batches and len(batches[-1]) < config.batch_size:
        batches.pop()
    return batches


class PlannedEpochs:
    """What every loader does with the plan: epochs, their length, and iteration.

    A loader sets ``files`` (with ``extents()``) and ``config``, and implements
    ``load(batches)``; call ``set_epoch`` before each epoch, as with DistributedSampler.
    """

    files: object
    config: ClipLoaderConfig
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def planned_batches(self) -> list[list[ClipSpec]]:
        return batch_specs(plan_epoch(self.files.extents(), self.config, self.epoch), self.config)

    def __len__(self) -> int:
        return len(self.planned_batches())

    def __iter__(self):
        return self.load(self.planned_batches())

    def load(self, batches: list[list[ClipSpec]]):
        raise NotImplementedError


class FixedBatchSampler:
    """A torch batch sampler over an epoch's specs: consecutive index ranges of the planned
    batch sizes (the plan already fixed order and batches)."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self):
        begin = 0
        for size in self.sizes:
            yield list(range(begin, begin + size))
            begin += size


def planned_batches_loader(dataset: Dataset, batches: list[list[ClipSpec]], num_workers: int,
                           collate_fn) -> DataLoader:
    """A torch DataLoader over `dataset` (item i = the clip of spec i) in the planned batches.

    It has a generator of its own because without one every pass over a DataLoader draws its
    workers' base seed from the global torch RNG, which also draws the training's dropout masks
    and Gumbel noise: one more pass over a loader (a validation, precise BN, a logged metric)
    would change every later training step, so a run that logs one more metric would not
    reproduce one that does not. The workers draw nothing at random (the plan fixed every clip),
    so the generator's seed does not matter.
    """
    return DataLoader(
        dataset,
        batch_sampler=FixedBatchSampler([len(b) for b in batches]),
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(0),
    )
