"""`datasets prepare` and the prepare job: success means a folder to train on (issue 12)."""
from __future__ import annotations

import pytest
import ray
from click.testing import CliRunner

from vidistill.datasets.errors import DatasetError
from vidistill.datasets.rawframes import Manifest, open_rawframes
from vidistill.platform.cli.main import cli
from vidistill.platform.kinds import ConfigError, get_kind


@pytest.fixture
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_prepare_exits_non_zero_when_no_video_could_be_prepared_and_names_an_empty_file(tmp_path, local_ray):
    root = tmp_path / "videos" / "walk"
    root.mkdir(parents=True)
    (root / "notes.avi").write_text("a text file renamed .avi\n")
    (root / "empty.mp4").write_bytes(b"")
    out = tmp_path / "frames"
    result = CliRunner().invoke(cli, ["datasets", "prepare", "--root", str(tmp_path / "videos"), "--layout",
                                      "generic", "--out", str(out), "--flow", "none", "--size", "64x48"])
    assert result.exit_code == 1, result.output
    assert "prepared 0, skipped 0 finished before, failed 2" in result.output
    assert f"skipped {root / 'empty.mp4'}: empty file (0 bytes)" in result.output
    assert f"Error: no video of {tmp_path / 'videos'} could be prepared; see the reasons above" in result.output
    # What training and evaluation open is refused too, with the reason.
    assert Manifest.load(out).videos == {}
    with pytest.raises(DatasetError, match="no prepared videos"):
        open_rawframes(out)


@pytest.mark.parametrize("option, value, message", [
    ("--bound", "-5", "bound: the flow clipping bound must be more than 0 pixels, got -5"),
    ("--fps", "0", "fps: must be more than 0, got 0"),
])
def test_prepare_refuses_what_the_job_kind_refuses_with_one_check(tmp_path, option, value, message):
    (tmp_path / "videos" / "walk").mkdir(parents=True)
    out = tmp_path / "frames"
    result = CliRunner().invoke(cli, ["datasets", "prepare", "--root", str(tmp_path / "videos"), "--layout",
                                      "generic", "--out", str(out), option, value])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not out.exists()  # refused before anything was written
    field = option.lstrip("-")
    with pytest.raises(ConfigError, match=f"field '{field}': {message.split(': ', 1)[1]}"):
        get_kind("prepare").validated({"root": str(tmp_path / "videos"), "out": str(out), field: float(value)})
