"""The validation set is a seeded, class-stratified slice of the training list, never the test set
(issue 13, defect 2): the lr schedule, the checkpoint choice and Tune read it; only `evaluate`
reads the test subset."""
from collections import Counter

import pytest

from vidistill.datasets.layouts import DatasetConfig, list_all_videos
from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic
from vidistill.trainers.config import ConfigError, load_config
from vidistill.trainers.data import open_splits


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    source, prepared = root / "source", root / "prepared"
    # 3 classes x 8 videos, 2 of each in the test list; RGB frames only (the split reads no pixels).
    make_synthetic(source, SyntheticConfig(classes=3, videos_per_class=8, frames=3, width=32, height=32, seed=0))
    prepare_dataset(list_all_videos(DatasetConfig(root=source, layout="generic")),
                    PrepareConfig(out=prepared, width=32, height=32, flow_method=None, workers=1))
    return source, prepared


def splits_of(dataset, *extra):
    source, prepared = dataset
    return open_splits(load_config(overrides=[f"data.prepared={prepared}", f"data.root={source}", "role=rgb",
                                              *extra]).data)


def ids(videos):
    return {v.video_id for v in videos.videos}


def test_validation_is_held_out_of_training_and_disjoint_from_test(dataset):
    splits = splits_of(dataset)
    listed_train = ids(splits_of(dataset, "data.val_subset=train").train)
    assert ids(splits.val) and not ids(splits.val) & ids(splits.test)
    assert not ids(splits.val) & ids(splits.train)
    assert ids(splits.val) | ids(splits.train) == listed_train
    # Stratified: each class validates on one of its 6 training videos (15 % rounds up to 1).
    assert Counter(v.label for v in splits.val.videos) == {0: 1, 1: 1, 2: 1}


def test_the_slice_is_seeded_apart_from_the_run(dataset):
    first, again = splits_of(dataset, "seed=1"), splits_of(dataset, "seed=2")
    assert ids(first.val) == ids(again.val)  # every arm and seed of a comparison validates alike
    others = [ids(splits_of(dataset, f"data.val_seed={s}").val) for s in range(1, 6)]
    assert any(o != ids(first.val) for o in others)
    assert Counter(v.label for v in splits_of(dataset, "data.val_fraction=0.5").val.videos) == {0: 3, 1: 3, 2: 3}


def test_validating_on_the_test_subset_is_refused():
    with pytest.raises(ConfigError, match="data.val_subset: 'test' is the test subset"):
        load_config(overrides=["data.prepared=/x", "data.root=/y", "role=rgb", "data.val_subset=test"])
