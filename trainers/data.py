"""Which prepared videos a run trains, validates and tests on, and the clip loaders over them.

The prepared folder (`vidistill datasets prepare`) holds every video once; the source data
set's official split lists say which of them belong to which subset.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vidistill.datasets.layouts import DatasetConfig, list_videos
from vidistill.datasets.loaders import ClipLoaderConfig, make_clip_loader
from vidistill.datasets.rawframes import PreparedSet, open_rawframes
from vidistill.trainers.config import DataConfig

# What each network reads: the teacher flow, RGB models RGB, a student RGB with the teacher's
# input beside it (the same crop and flip) when the teacher has to run.
MODALITY = {"teacher": "flow", "rgb": "rgb", "distill": "rgb"}


@dataclass(frozen=True)
class Splits:
    train: PreparedSet
    val: PreparedSet
    test: PreparedSet
    classes: tuple[str, ...]
    content_hash: str  # of the whole prepared folder: the data set lineage recorded on models


def open_splits(data: DataConfig) -> Splits:
    """Open the prepared folder and select each subset's videos by the source split lists."""
    prepared = open_rawframes(data.prepared)
    source = DatasetConfig(root=data.root, layout=data.layout, split=data.split)

    def subset(name: str) -> PreparedSet:
        listing = list_videos(source, name)
        return prepared.select([v.video_id for v in listing.videos], source=f"the {name!r} subset of {data.root}")

    train = subset(data.train_subset)
    if data.val_subset:
        val = subset(data.val_subset)
    else:
        train, val = hold_out_validation(train, data.val_fraction, data.val_seed)
    return Splits(train, val, subset(data.test_subset), prepared.classes, prepared.content_hash)


def hold_out_validation(train: PreparedSet, fraction: float, seed: int) -> tuple[PreparedSet, PreparedSet]:
    """(train, val): about `fraction` of each class's training videos, drawn with `seed`, held out.

    Stratified, so every class with two or more training videos is validated on at least one
    and trains on at least one; seeded apart from the run's seed, so every arm and seed of a
    comparison validates on the same videos.
    """
    import numpy as np

    rng = np.random.default_rng([seed, 13])
    by_class: dict[int, list[int]] = {}
    for i, video in enumerate(train.videos):
        by_class.setdefault(video.label, []).append(i)
    held = set()
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < 2:
            continue
        count = min(max(1, round(len(members) * fraction)), len(members) - 1)
        held.update(members[j] for j in rng.permutation(len(members))[:count])
    if not held:
        raise ValueError(f"no class has two training videos in {train.root}: a validation slice cannot be held "
                         "out; give data.val_subset a subset of the split lists")
    keep = tuple(v for i, v in enumerate(train.videos) if i not in held)
    val = tuple(v for i, v in enumerate(train.videos) if i in held)
    return dataclasses.replace(train, videos=keep), dataclasses.replace(train, videos=val)


def clip_loader(videos: PreparedSet, data: DataConfig, *, modality: str, train: bool, batch_size: int,
                seed: int, rank: int = 0, world_size: int = 1, device: str = "auto",
                clips_per_video: int | None = None, bank_size: int = 0):
    """A loader of this rank's shard; test mode gives full-frame clips evenly spaced in each video."""
    config = ClipLoaderConfig(
        modality=modality,
        train=train,
        clip_length=data.clip_length,
        crop_size=data.crop_size,
        test_clips_per_video=clips_per_video or data.test_clips_per_video,
        flip=data.flip,
        batch_size=batch_size,
        seed=seed,
        shard_id=rank,
        num_shards=world_size,
        backend=data.backend,
        device=device,
        num_workers=data.loader_workers,
        bank_size=bank_size,
    )
    return make_clip_loader(videos, config)
