"""Dataset layouts: listing the official splits of UCF101, HMDB51, EGTEA Gaze+, SSv2 and the
generic layout, and the errors bad input gets (naming file and line). Listing never decodes, so
the trees here hold empty placeholder files named as the real datasets name them."""
import json

import pytest
from click.testing import CliRunner

from vidistill.datasets.errors import DatasetError
from vidistill.datasets.layouts import DatasetConfig, list_all_videos, list_videos, subsets
from vidistill.platform.cli.main import cli


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def ucf101(tmp_path):
    root = tmp_path / "UCF-101"
    classes = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    lists = root / "ucfTrainTestlist"
    write(lists / "classInd.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    for label, name in enumerate(classes):
        for group in (1, 2, 8, 9):
            # the official lists spell one class HandStandPushups in file names: case differs
            file_name = f"v_{name}_g{group:02d}_c01.avi"
            touch(root / name / file_name)
            listed = file_name.replace("Handstand", "HandStand")
            if group < 8:
                test.append(f"{name}/{listed}\n")
            else:
                train.append(f"{name}/{listed} {label + 1}\n")
    for split in (1, 2, 3):
        write(lists / f"trainlist0{split}.txt", "".join(train))
        write(lists / f"testlist0{split}.txt", "".join(test))
    return root


def test_ucf101_lists_train_and_test_of_a_split_with_labels_from_classind(ucf101):
    config = DatasetConfig(ucf101, "ucf101", split=2)
    assert subsets(config) == ("train", "test")
    train = list_videos(config, "train")
    test = list_videos(config, "test")
    assert train.classes == ("ApplyEyeMakeup", "HandstandPushups", "YoYo")
    assert len(train.videos) == 6 and len(test.videos) == 6
    assert train.counts_per_class() == {"ApplyEyeMakeup": 2, "HandstandPushups": 2, "YoYo": 2}
    first = train.videos[0]
    assert first.video_id == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"
    assert first.label == 0 and first.path.is_file()
    # the case mismatch of the official list resolves to the file on disk
    handstand = [v for v in test.videos if v.label == 1][0]
    assert handstand.path.name == "v_HandstandPushups_g01_c01.avi"
    assert len(list_all_videos(config).videos) == 12


def test_a_split_file_naming_an_absent_video_is_an_error_with_file_and_line(ucf101):
    (ucf101 / "YoYo" / "v_YoYo_g09_c01.avi").unlink()
    with pytest.raises(DatasetError) as caught:
        list_videos(DatasetConfig(ucf101, "ucf101", split=1), "train")
    message = str(caught.value)
    assert message.startswith(f"{ucf101 / 'ucfTrainTestlist' / 'trainlist01.txt'}:6: ")
    assert "'YoYo/v_YoYo_g09_c01.avi'" in message and "restore the file" in message


def test_a_wrong_label_and_a_malformed_class_index_name_their_line(ucf101):
    lists = ucf101 / "ucfTrainTestlist"
    text = (lists / "trainlist01.txt").read_text().replace("v_YoYo_g08_c01.avi 3", "v_YoYo_g08_c01.avi 2")
    write(lists / "trainlist01.txt", text)
    with pytest.raises(DatasetError, match=r"trainlist01.txt:5: label 2 disagrees with the class folder YoYo"):
        list_videos(DatasetConfig(ucf101, "ucf101"), "train")
    write(lists / "classInd.txt", "1 ApplyEyeMakeup\n3 YoYo\n")
    with pytest.raises(DatasetError, match=r"classInd.txt:2: expected `2 ClassName`"):
        list_videos(DatasetConfig(ucf101, "ucf101"), "test")


def test_missing_root_unknown_layout_and_bad_split_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: dataset root does not exist .* point --root"):
        list_videos(DatasetConfig(tmp_path / "nowhere", "ucf101"), "train")
    with pytest.raises(DatasetError, match=r"unknown layout 'kinetics'; choose one of \['activitynet', 'charades', 'egtea', 'generic'"):
        list_videos(DatasetConfig(tmp_path, "kinetics"), "train")
    with pytest.raises(DatasetError, match="splits 1, 2 and 3, not 4"):
        list_videos(DatasetConfig(tmp_path, "hmdb51", split=4), "train")


def test_hmdb51_reads_the_per_class_7030_split_files(tmp_path):
    root = tmp_path / "hmdb51"
    splits = root / "testTrainMulti_7030_splits"
    for name in ("brush_hair", "wave"):
        lines = []
        for i, usage in enumerate([1, 1, 1, 2, 0]):
            touch(root / name / f"{name}_clip{i}.avi")
            lines.append(f"{name}_clip{i}.avi {usage} \n")
        for split in (1, 2, 3):
            write(splits / f"{name}_test_split{split}.txt", "".join(lines))
    config = DatasetConfig(root, "hmdb51", split=3)
    train, test = list_videos(config, "train"), list_videos(config, "test")
    assert train.classes == ("brush_hair", "wave")
    assert [v.video_id for v in test.videos] == ["brush_hair/brush_hair_clip3", "wave/wave_clip3"]
    assert len(train.videos) == 6 and [v.label for v in test.videos] == [0, 1]
    write(splits / "wave_test_split1.txt", "wave_clip0.avi 1\nwave_clip1.avi 7\n")
    with pytest.raises(DatasetError, match=r"wave_test_split1.txt:2: expected `video.avi 0\|1\|2`"):
        list_videos(DatasetConfig(root, "hmdb51", split=1), "train")


def test_egtea_reads_action_lists_and_finds_clips_in_session_folders(tmp_path):
    root = tmp_path / "egtea"
    notes = root / "action_annotation"
    write(notes / "action_idx.txt", "Inspect/Read recipe 1\nOpen fridge 2\nCut tomato 3\n")
    clips = ["OP01-R01-PastaSalad-1002316-1004005-F024051-F024101",
             "P20-R03-BaconAndEggs-40100-43230-F000962-F001036"]
    for clip in clips:
        touch(root / "cropped_clips" / "-".join(clip.split("-")[:3]) / f"{clip}.mp4")
    write(notes / "train_split1.txt", f"{clips[0]} 3 10 12\n")
    write(notes / "test_split1.txt", f"{clips[1]} 1 4 7\n")
    config = DatasetConfig(root, "egtea", split=1)
    train, test = list_videos(config, "train"), list_videos(config, "test")
    assert train.classes == ("Inspect/Read recipe", "Open fridge", "Cut tomato")
    assert train.videos[0].label == 2 and test.videos[0].label == 0
    assert test.videos[0].video_id == f"P20-R03-BaconAndEggs/{clips[1]}"
    write(notes / "test_split1.txt", f"{clips[1]} 1 4 7\n{clips[1]} 9 4 7\n")
    with pytest.raises(DatasetError, match=r"test_split1.txt:2: expected .* action in 1..3"):
        list_videos(config, "test")


def test_ssv2_reads_json_label_files_and_webm_ids(tmp_path):
    root = tmp_path / "ssv2"
    labels = root / "labels"
    write(labels / "something-something-v2-labels.json",
          json.dumps({"Pushing something from left to right": "1", "Approaching something with your camera": "0"}))
    write(labels / "something-something-v2-train.json", json.dumps([
        {"id": "78687", "label": "pushing a cup from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a cup"]},
        {"id": "42", "label": "approaching a tree", "template": "Approaching [something] with your camera"},
    ]))
    write(labels / "something-something-v2-validation.json", json.dumps([
        {"id": "7", "label": "x", "template": "Approaching [something] with your camera"}]))
    for video_id in ("78687", "42", "7"):
        touch(root / "20bn-something-something-v2" / f"{video_id}.webm")
    config = DatasetConfig(root, "ssv2")
    train = list_videos(config, "train")
    assert train.classes == ("Approaching something with your camera", "Pushing something from left to right")
    assert [(v.video_id, v.label) for v in train.videos] == [("78687", 1), ("42", 0)]
    assert len(list_videos(config, "validation").videos) == 1
    (root / "20bn-something-something-v2" / "42.webm").unlink()
    with pytest.raises(DatasetError, match=r"something-something-v2-train.json: entry 1 names video '42'"):
        list_videos(config, "train")


def test_generic_layout_from_class_folders_or_list_files(tmp_path):
    root = tmp_path / "mine"
    for name, count in (("jump", 3), ("run", 2)):
        for i in range(count):
            touch(root / name / f"{name}{i}.mp4")
    touch(root / "run" / "notes.md")  # not a video: ignored
    config = DatasetConfig(root, "generic")
    assert subsets(config) == ("all",)
    everything = list_videos(config, "all")
    assert everything.classes == ("jump", "run")
    assert everything.counts_per_class() == {"jump": 3, "run": 2}
    write(root / "train.txt", "jump/jump0.mp4 0\nrun/run1.mp4 run\n")
    write(root / "val.txt", "jump/jump2.mp4 1\nrun/ghost.mp4 1\n")
    assert subsets(config) == ("train", "val")
    assert [(v.video_id, v.label) for v in list_videos(config, "train").videos] == [
        ("jump/jump0", 0), ("run/run1", 1)]
    with pytest.raises(DatasetError, match=r"val.txt:2: names video 'run/ghost.mp4'"):
        list_videos(config, "val")
    write(root / "val.txt", "jump/jump2.mp4 swim\n")
    with pytest.raises(DatasetError, match=r"val.txt:1: expected `path label` with a label in 0..1 or a class name"):
        list_videos(config, "val")


def test_cli_describe_prints_classes_and_counts_per_subset(ucf101):
    result = CliRunner().invoke(cli, ["datasets", "describe", "--root", str(ucf101), "--layout", "ucf101",
                                      "--split", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{ucf101}  (ucf101, split 1, 3 classes)"
    assert lines[1].split() == ["#", "class", "train", "test"]
    assert lines[3].split() == ["1", "HandstandPushups", "2", "2"]
    assert lines[-1].split() == ["total", "6", "6"]
    as_json = CliRunner().invoke(cli, ["datasets", "describe", "--root", str(ucf101), "--layout", "ucf101",
                                       "--json"])
    data = json.loads(as_json.output)
    assert data["split"] == 1 and data["subsets"]["test"]["videos"] == 6
    assert data["subsets"]["train"]["per_class"]["YoYo"] == 2


def test_cli_describe_all_splits_side_by_side(ucf101):
    lists = ucf101 / "ucfTrainTestlist"
    # split 3 moves YoYo's g08 video from train to test
    write(lists / "trainlist03.txt", (lists / "trainlist03.txt").read_text().replace("YoYo/v_YoYo_g08_c01.avi 3\n", ""))
    write(lists / "testlist03.txt", (lists / "testlist03.txt").read_text() + "YoYo/v_YoYo_g08_c01.avi\n")
    arguments = ["datasets", "describe", "--root", str(ucf101), "--layout", "ucf101", "--all-splits"]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{ucf101}  (ucf101, splits 1-3, 3 classes)"
    assert lines[1].split() == ["#", "class", "train/1", "test/1", "train/2", "test/2", "train/3", "test/3"]
    assert lines[4].split() == ["2", "YoYo", "2", "2", "2", "2", "1", "3"]
    data = json.loads(CliRunner().invoke(cli, arguments + ["--json"]).output)
    assert data["splits"]["3"]["test"]["videos"] == 7 and data["splits"]["1"]["test"]["videos"] == 6
    generic = CliRunner().invoke(cli, ["datasets", "describe", "--root", str(ucf101), "--layout", "generic",
                                       "--all-splits"])
    assert generic.exit_code == 2 and "layout 'generic' has no official splits 1-3" in generic.output


def test_cli_describe_reports_bad_input_with_file_and_line_and_exit_status_1(ucf101, tmp_path):
    write(ucf101 / "ucfTrainTestlist" / "testlist01.txt", "ApplyEyeMakeup/v_gone.avi\n")
    result = CliRunner().invoke(cli, ["datasets", "describe", "--root", str(ucf101), "--layout", "ucf101"])
    assert result.exit_code == 1
    assert f"Error: {ucf101 / 'ucfTrainTestlist' / 'testlist01.txt'}:1: names video 'ApplyEyeMakeup/v_gone.avi'" \
        in result.output
    config = write(tmp_path / "data.yaml", f"root: {ucf101}\nlayout: ucf101\nsplit: 2\nfolder: x\n")
    result = CliRunner().invoke(cli, ["datasets", "describe", "--config", str(config)])
    assert result.exit_code == 1 and "unknown dataset config keys ['folder']" in result.output
