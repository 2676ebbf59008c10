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


def train_detector_through_the_queue(ray_settings, dispatchers, root: Path, rgb: str, name: str, sets: list[str]):
    """`submit-job train-detector` on the RGB features with --set SETS, one dispatcher, until the
    job ends; the succeeded job (its log in the failure message otherwise)."""
    import json

    from click.testing import CliRunner
    from platform_fixtures import wait_until

    from vidistill.platform.cli.main import cli
    from vidistill.platform.queue import JobQueue

    submitted = CliRunner().invoke(cli, ["submit-job", "train-detector", "--root", str(root), "--features", rgb,
                                         "--name", name, *[a for s in sets for a in ("--set", s)], "--json"])
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.stdout)["id"]
    queue = JobQueue(ray_settings)
    dispatchers.start(1)
    wait_until(lambda: queue.get(job_id).job_state.is_finished, timeout=900, interval=1,
               message=f"the {name} detector's job")
    job = queue.get(job_id)
    assert job.state == "succeeded", Path(job.log_path).read_text()[-4000:]
    return job
