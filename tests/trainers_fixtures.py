"""A tiny prepared synthetic data set and an isolated vidistill home for trainer tests."""
import os

import pytest

from vidistill.datasets.layouts import DatasetConfig, list_all_videos
from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic

# 4 motion classes; reduced-width I3D on 8-frame 64x64 crops of 96x80 frames; 2 Ray Train workers.
TINY = [
    "model.name=i3d_tiny", "data.clip_length=8", "data.crop_size=64", "data.test_clips_per_video=2",
    "data.loader_workers=1", "data.backend=opencv", "batch_size=8", "num_workers=2", "epochs=2",
]


@pytest.fixture(scope="module")
def trainer_home(tmp_path_factory):
    """VIDISTILL_HOME in a temporary folder, with MLflow on its SQLite file; Ray shut down after."""
    import ray

    home = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("VIDISTILL_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["VIDISTILL_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield home
    if ray.is_initialized():
        ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """(source root, prepared folder) of a 4-class synthetic motion set, flow by Farneback."""
    root = tmp_path_factory.mktemp("synthetic")
    source, prepared = root / "source", root / "prepared"
    make_synthetic(source, SyntheticConfig(classes=4, videos_per_class=6, frames=32, width=128, height=96, seed=0))
    prepare_dataset(list_all_videos(DatasetConfig(root=source, layout="generic")),
                    PrepareConfig(out=prepared, width=96, height=80, flow_method="farneback", workers=2))
    return source, prepared


def tiny_overrides(dataset, *extra):
    source, prepared = dataset
    return [f"data.prepared={prepared}", f"data.root={source}", "data.name=tiny", *TINY, *extra]
