"""Which prepared videos a run trains, validates and tests on, and the clip loaders over them.

The prepared folder (`vidistill datasets prepare`) holds every video once; the source data
set's official split lists say which of them belong to which subset.
"""
from __future__ import annotations

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

    return Splits(subset(data.train_subset), subset(data.val_subset), subset(data.test_subset),
                  prepared.classes, prepared.content_hash)


def clip_loader(videos: PreparedSet, data: DataConfig, *, modality: str, train: bool, batch_size: int,
                seed: int, rank: int = 0, world_size: int = 1, device: str = "auto",
                clips_per_video: int | None = None):
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
    )
    return make_clip_loader(videos, config)
