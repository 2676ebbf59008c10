"""THUMOS14, ActivityNet-1.3 and Charades annotation readers on small files in their real formats."""
import json

import pytest
from click.testing import CliRunner

from vidistill.datasets.detection.annotations import Segment, read_detection_set
from vidistill.datasets.errors import DatasetError
from vidistill.datasets.layouts import DatasetConfig, list_videos
from vidistill.platform.cli.main import cli


def _thumos(root):
    ann = root / "TH14_Temporal_annotations_validation" / "annotation"
    test = root / "TH14_Temporal_Annotations_Test" / "annotations" / "annotation"
    ann.mkdir(parents=True)
    test.mkdir(parents=True)
    (ann / "BaseballPitch_val.txt").write_text("video_validation_0000051  67.5 75.9\nvideo_validation_0000051  85.9 90.6\n")
    (ann / "CliffDiving_val.txt").write_text("video_validation_0000052 1.0 3.5\n")
    (ann / "Ambiguous_val.txt").write_text("video_validation_0000051 10.0 12.0\n")
    (test / "BaseballPitch_test.txt").write_text(
        "video_test_0000004 0.2 1.1\nvideo_test_0000270 3.0 4.0\nvideo_test_0001292 5 6\n")
    (test / "CliffDiving_test.txt").write_text("video_test_0000004 15.0 17.0\n")
    videos = root / "validation"
    videos.mkdir()
    (videos / "video_validation_0000051.mp4").write_bytes(b"")
    return root


def test_thumos14_reader_excludes_the_two_wrong_test_videos(tmp_path):
    config = DatasetConfig(root=_thumos(tmp_path), layout="thumos14")
    val = read_detection_set(config, "val")
    assert val.classes == ("BaseballPitch", "CliffDiving")  # Ambiguous is not a class
    by_id = val.by_id()
    assert by_id["video_validation_0000051"].segments == (Segment(67.5, 75.9, 0), Segment(85.9, 90.6, 0))
    assert by_id["video_validation_0000051"].path.name == "video_validation_0000051.mp4"
    assert by_id["video_validation_0000052"].path is None
    test = read_detection_set(config, "test")
    assert [v.video_id for v in test.videos] == ["video_test_0000004"]
    assert test.excluded == ("video_test_0000270", "video_test_0001292") and "270 and 1292" in test.note
    assert test.videos[0].segments == (Segment(0.2, 1.1, 0), Segment(15.0, 17.0, 1))
    # as a layout: only the videos on disk, for `datasets prepare`
    assert [v.video_id for v in list_videos(config, "val").videos] == ["video_validation_0000051"]


def test_thumos14_bad_line_names_file_and_line(tmp_path):
    _thumos(tmp_path)
    bad = tmp_path / "TH14_Temporal_annotations_validation" / "annotation" / "CliffDiving_val.txt"
    bad.write_text("video_validation_0000052 1.0 3.5\nvideo_validation_0000053 4.0\n")
    with pytest.raises(DatasetError, match=r"CliffDiving_val.txt:2: expected `video start end`"):
        read_detection_set(DatasetConfig(root=tmp_path, layout="thumos14"), "val")


def test_activitynet_json(tmp_path):
    database = {"database": {
        "abc": {"subset": "training", "duration": 82.73, "url": "https://www.youtube.com/watch?v=abc",
                "annotations": [{"segment": [3.1, 20.5], "label": "Long jump"},
                                {"segment": [40.0, 55.2], "label": "Archery"}]},
        "xyz": {"subset": "validation", "duration": 30.0, "annotations": [{"segment": [1, 2], "label": "Archery"}]},
    }, "version": "VERSION 1.3"}
    (tmp_path / "activity_net.v1-3.min.json").write_text(json.dumps(database))
    (tmp_path / "v_abc.mp4").write_bytes(b"")
    config = DatasetConfig(root=tmp_path, layout="activitynet")
    train = read_detection_set(config, "training")
    assert train.classes == ("Archery", "Long jump")
    (video,) = train.videos
    assert video.duration == pytest.approx(82.73) and video.path.name == "v_abc.mp4"
    assert video.segments == (Segment(3.1, 20.5, 1), Segment(40.0, 55.2, 0))
    assert read_detection_set(config, "validation").videos[0].path is None


def test_charades_csv(tmp_path):
    (tmp_path / "Charades_v1_classes.txt").write_text("c000 Holding some clothes\nc092 Holding a laptop\nc147 Sitting\n")
    header = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
    (tmp_path / "Charades_v1_train.csv").write_text(
        header + '46GP8,HR43,Kitchen,6,7,Yes,"A person cooks, then sits.",food;chair,"They cook.",'
                 '"c092 11.90 21.20;c147 0.00 12.60",24.83\n'
                 'ZZZZ9,HR43,Hall,6,7,Yes,script,,desc,,10.0\n')
    config = DatasetConfig(root=tmp_path, layout="charades")
    found = read_detection_set(config, "train")
    assert found.classes == ("Holding some clothes", "Holding a laptop", "Sitting")
    first, empty = found.videos
    assert first.segments == (Segment(11.9, 21.2, 1), Segment(0.0, 12.6, 2)) and first.duration == pytest.approx(24.83)
    assert empty.segments == ()


def test_describe_shows_detection_layouts(tmp_path):
    _thumos(tmp_path)
    result = CliRunner().invoke(cli, ["datasets", "describe", "--root", str(tmp_path), "--layout", "thumos14"])
    assert result.exit_code == 0, result.output
    assert "BaseballPitch" in result.output and "270 and 1292" in result.output
    result = CliRunner().invoke(cli, ["datasets", "describe", "--root", str(tmp_path), "--layout", "thumos14",
                                      "--json"])
    data = json.loads(result.output)
    assert data["subsets"]["val"]["per_class"] == {"BaseballPitch": 2, "CliffDiving": 1}
    assert data["subsets"]["test"]["instances"] == 2
