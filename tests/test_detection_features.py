"""Snippet features of registered models over prepared frames/flow: grid, resume after a kill, bad videos."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vidistill.trainers.detection.features import FeatureConfig, extract_features, load_manifest, snippet_count

WORKER = """
import sys
from vidistill.trainers.detection.features import FeatureConfig, extract_features
extract_features(FeatureConfig.model_validate_json(sys.argv[1]))
"""


def test_snippet_grid():
    assert snippet_count(70, 16, 4) == 14  # (70 - 16) // 4 + 1
    assert snippet_count(10, 16, 4) == 1  # a video shorter than a snippet still has one


@pytest.mark.slow
def test_extract_features_resumes_after_a_kill(untrimmed, tmp_path):
    root, prepared, uris = untrimmed
    config = FeatureConfig(prepared=str(prepared), out=str(tmp_path / "rgb"), model=uris["rgb"], chunk_snippets=4)
    process = subprocess.Popen([sys.executable, "-c", WORKER, config.model_dump_json()], env=os.environ.copy())
    manifest = tmp_path / "rgb" / "features.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.is_file() and json.loads(manifest.read_text())["videos"]:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = set(json.loads(manifest.read_text())["videos"])
    assert 1 <= len(done_before)
    result = extract_features(config)
    assert set(result.skipped) == done_before and not result.failed
    assert set(result.skipped) | set(result.extracted) == {
        "video_validation_0000001", "video_validation_0000002", "video_test_0000001"}
    saved = load_manifest(tmp_path / "rgb")
    settings = saved["settings"]
    assert (settings["model"], settings["modality"], settings["snippet_length"], settings["stride"]) == \
        (uris["rgb"], "rgb", 16, 4)
    assert settings["fps"] == 10 and settings["input_size"] == [48, 64]
    for video_id, entry in saved["videos"].items():
        features = np.load(tmp_path / "rgb" / f"{video_id}.npy")
        assert features.shape == (snippet_count(entry["frames"], 16, 4), entry["channels"])
        assert np.isfinite(features).all() and features.std() > 0
    # the same settings give the same numbers, chunked differently or not
    again = extract_features(FeatureConfig(prepared=str(prepared), out=str(tmp_path / "rgb2"), model=uris["rgb"],
                                           chunk_snippets=100, videos=["video_test_0000001"]))
    assert again.extracted == ["video_test_0000001"]
    np.testing.assert_allclose(np.load(tmp_path / "rgb2" / "video_test_0000001.npy"),
                               np.load(tmp_path / "rgb" / "video_test_0000001.npy"), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="other settings \\(stride\\)"):
        extract_features(FeatureConfig(prepared=str(prepared), out=str(tmp_path / "rgb"), model=uris["rgb"], stride=8))


@pytest.mark.slow
def test_unreadable_video_is_listed_and_skipped(untrimmed, tmp_path):
    import shutil

    root, prepared, uris = untrimmed
    broken = tmp_path / "prepared"
    shutil.copytree(prepared, broken)
    (broken / "video_test_0000001" / "flow_x_00003.jpg").write_bytes(b"not a jpeg")
    result = extract_features(FeatureConfig(prepared=str(broken), out=str(tmp_path / "flow"), model=uris["flow"],
                                            videos=["video_test_0000001", "video_validation_0000001"]))
    assert result.extracted == ["video_validation_0000001"]
    assert "flow_x_00003.jpg" in result.failed["video_test_0000001"]
    assert "video_test_0000001" in load_manifest(tmp_path / "flow")["failed"]
    assert load_manifest(tmp_path / "flow")["settings"]["modality"] == "flow"
