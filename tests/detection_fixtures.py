"""A tiny untrimmed set, prepared without Ray, and two registered (untrained) i3d_tiny feature models."""
from pathlib import Path

import pytest

from vidistill.datasets.detection.synthetic import make_untrimmed, untrimmed_config
from vidistill.datasets.layouts import DatasetConfig, list_all_videos
from vidistill.datasets.prepare import PrepareConfig, prepare_video


def prepare_tiny_untrimmed(root: Path, prepared: Path, train_videos=2, test_videos=1) -> None:
    make_untrimmed(root, untrimmed_config(train_videos=train_videos, test_videos=test_videos, min_seconds=6,
                                          max_seconds=7, actions_per_video=(1, 2), width=64, height=48))
    listing = list_all_videos(DatasetConfig(root=root, layout="thumos14"))
    config = PrepareConfig(out=prepared, fps=10, width=64, height=48, flow_method="farneback", flow_bound=4)
    manifest = config.new_manifest(listing.classes)
    for video in listing.videos:  # one by one: the Ray path is covered by the prepare tests
        manifest.videos[video.video_id] = prepare_video(video, config)
    manifest.save(prepared)


def register_feature_model(name: str, in_channels: int) -> str:
    import mlflow

    from vidistill.trainers import tracking
    from vidistill.trainers.models.factory import create_model

    tracking.configure()
    model = create_model("i3d_tiny", num_classes=4, in_channels=in_channels)
    with mlflow.start_run() as run:
        pass
    version = mlflow.register_model(tracking.log_model(run.info.run_id, model), name)
    return f"models:/{name}/{version.version}"


@pytest.fixture(scope="module")
def untrimmed(tmp_path_factory, trainer_home):
    """(root, prepared, {rgb: uri, flow: uri}) in an isolated vidistill home."""
    base = tmp_path_factory.mktemp("untrimmed")
    root, prepared = base / "source", base / "prepared"
    prepare_tiny_untrimmed(root, prepared)
    return root, prepared, {"rgb": register_feature_model("tiny-rgb", 3), "flow": register_feature_model("tiny-flow", 2)}
