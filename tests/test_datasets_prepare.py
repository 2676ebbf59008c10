"""Preparation on real encoded files: resampling to 24 fps, 320x256 frames, flow for every frame
pair, TV-L1 and Farneback, corrupt/truncated videos skipped and listed, killed runs resumed."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import ray
from click.testing import CliRunner

from datasets_fixtures import write_motion_video
from vidistill.datasets.errors import DatasetError
from vidistill.datasets.flow import FlowEstimator, dequantise_flow, quantise_flow
from vidistill.datasets.layouts import DatasetConfig, list_all_videos
from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
from vidistill.datasets.rawframes import Manifest, manifest_hash
from vidistill.platform.cli.main import cli


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def generic_dataset(root, videos):
    """Class folders + classes.txt of the given {relative path: (pattern, frames, fps, size, codec)}."""
    for relative, (pattern, frames, fps, size, codec) in videos.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        write_motion_video(root / relative, pattern, frames, fps, size, codec)
    classes = sorted({relative.split("/")[0] for relative in videos})
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return list_all_videos(DatasetConfig(root, "generic"))


def files_of(folder, prefix):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


def test_cli_prepare_resamples_any_codec_to_24fps_at_320x256_with_flow_for_every_pair(tmp_path, local_ray):
    root = tmp_path / "videos"
    generic_dataset(root, {
        "move-right/a.avi": ("move-right", 50, 25.0, (64, 48), "mpeg4"),   # 2.0 s  -> 48 frames
        "move-left/b.mp4": ("move-left", 45, 30.0, (96, 72), "h264"),      # 1.5 s  -> 36 frames
        "move-left/c.webm": ("move-left", 18, 15.0, (80, 60), "vp9"),      # 1.2 s  -> 29 frames
    })
    out = tmp_path / "frames"
    result = CliRunner().invoke(cli, ["datasets", "prepare", "--root", str(root), "--layout", "generic",
                                      "--out", str(out), "--flow", "farneback", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["prepared"] == 3 and summary["skipped"] == 0 and summary["failed"] == []
    assert "[3/3]" in result.stderr and "videos/s, ETA" in result.stderr
    manifest = Manifest.load(out)
    expected = {"move-right/a": (48, 25.0), "move-left/b": (36, 30.0), "move-left/c": (29, 15.0)}
    for video_id, (frames, source_fps) in expected.items():
        record = manifest.videos[video_id]
        assert (record.frames, record.flow_frames, record.source_fps) == (frames, frames - 1, source_fps)
        assert (record.flow_method, record.flow_bound, record.width, record.height) == ("farneback", 20.0, 320, 256)
        folder = out / video_id
        assert files_of(folder, "img_") == [f"img_{i:05d}.jpg" for i in range(1, frames + 1)]
        assert files_of(folder, "flow_x_") == [f"flow_x_{i:05d}.jpg" for i in range(1, frames)]
        assert files_of(folder, "flow_y_") == [f"flow_y_{i:05d}.jpg" for i in range(1, frames)]
        assert cv2.imread(str(folder / "img_00001.jpg")).shape == (256, 320, 3)
        assert cv2.imread(str(folder / f"flow_x_{frames - 1:05d}.jpg"), cv2.IMREAD_UNCHANGED).shape == (256, 320)
    assert (manifest.fps, manifest.classes) == (24.0, ["move-left", "move-right"])
    assert summary["manifest_hash"] == manifest_hash(out) == manifest.content_hash()
    # the object moving right has positive x flow, the one moving left negative
    x_right = dequantise_flow(cv2.imread(str(out / "move-right/a/flow_x_00010.jpg"), 0), 20.0)
    x_left = dequantise_flow(cv2.imread(str(out / "move-left/b/flow_x_00010.jpg"), 0), 20.0)
    assert x_right.max() > 1.0 and x_right.min() > -1.0
    assert x_left.min() < -1.0 and x_left.max() < 1.0


def test_truncated_and_unreadable_videos_are_listed_and_skipped_while_the_rest_completes(tmp_path, local_ray):
    root = tmp_path / "videos"
    generic_dataset(root, {
        "move-up/good.avi": ("move-up", 20, 25.0, (64, 48), "mpeg4"),
        "move-up/cut.avi": ("move-up", 50, 25.0, (64, 48), "mpeg4"),
        "move-down/cut.webm": ("move-down", 40, 25.0, (64, 48), "vp9"),
    })
    for name in ("move-up/cut.avi", "move-down/cut.webm"):
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])
    (root / "move-down" / "noise.mp4").write_bytes(os.urandom(3000))
    out = tmp_path / "frames"
    result = CliRunner().invoke(cli, ["datasets", "prepare", "--root", str(root), "--layout", "generic",
                                      "--out", str(out), "--flow", "farneback", "--size", "64x48"])
    assert result.exit_code == 0, result.output
    assert "prepared 1, skipped 0 finished before, failed 3" in result.stdout
    assert re.search(rf"skipped {re.escape(str(root / 'move-up/cut.avi'))}: truncated: decoded \d+ of the 50 frames "
                     "the container declares", result.stdout)
    manifest = Manifest.load(out)
    assert list(manifest.videos) == ["move-up/good"] and manifest.videos["move-up/good"].frames == 20
    assert set(manifest.failed) == {"move-up/cut", "move-down/cut", "move-down/noise"}
    assert manifest.failed["move-down/cut"].reason.startswith("truncated: decoded 0.")
    assert manifest.failed["move-down/noise"].reason.startswith("cannot open")
    assert sorted(p.name for p in (out / "move-up").iterdir()) == ["good"]  # nothing half-written left
    assert not (out / "move-down").exists() or not any((out / "move-down").iterdir())


def test_rerun_skips_finished_videos_and_redoes_a_half_written_one(tmp_path, local_ray):
    root = tmp_path / "videos"
    listing = generic_dataset(root, {
        f"move-right/v{i}.avi": ("move-right", 12, 25.0, (64, 48), "mpeg4") for i in range(3)})
    config = PrepareConfig(tmp_path / "frames", width=64, height=48, flow_method="farneback")
    first = prepare_dataset(type(listing)(listing.classes, "all", listing.videos[:2]), config)
    assert first.prepared == ("move-right/v0", "move-right/v1")
    stamp = (config.out / "move-right/v0/img_00001.jpg").stat().st_mtime_ns
    # what a run killed mid-video leaves: a .partial folder with some of the frames
    half = config.out / "move-right/v2.partial-0123abcd"
    half.mkdir()
    (half / "img_00001.jpg").write_bytes(b"half")
    second = prepare_dataset(listing, config)
    assert second.skipped == ("move-right/v0", "move-right/v1")
    assert second.prepared == ("move-right/v2",) and second.failed == ()
    assert not half.exists()
    assert len(files_of(config.out / "move-right/v2", "img_")) == 12
    assert (config.out / "move-right/v0/img_00001.jpg").stat().st_mtime_ns == stamp  # not rewritten
    assert sorted(Manifest.load(config.out).videos) == ["move-right/v0", "move-right/v1", "move-right/v2"]
    with pytest.raises(DatasetError, match=r"manifest.json: this folder was prepared with other settings "
                                           r"\(fps: 24.0 there, 30.0 now\)"):
        prepare_dataset(listing, PrepareConfig(config.out, fps=30.0, width=64, height=48, flow_method="farneback"))
    assert len(Manifest.load(config.out).videos) == 3  # the refused run lost nothing


def kill_session(run):
    """SIGKILL a process started with start_new_session=True and everything in its session: the
    CLI, the local Ray it started, and Ray's workers (which put themselves in groups of their own)."""
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == run.pid:
                    os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_a_killed_preparation_reruns_to_completion_and_skips_what_was_finished(tmp_path):
    root = tmp_path / "videos"
    generic_dataset(root, {f"move-down/v{i}.avi": ("move-down", 50, 25.0, (64, 48), "mpeg4") for i in range(10)})
    out = tmp_path / "frames"
    command = [sys.executable, "-c", "from vidistill.platform.cli.main import cli; cli()", "datasets", "prepare", "--root", str(root),
               "--layout", "generic", "--out", str(out), "--flow", "farneback", "--workers", "2"]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                           cwd=tmp_path)
    deadline = time.monotonic() + 120
    recorded = 0
    while time.monotonic() < deadline and run.poll() is None:
        try:
            recorded = len(json.loads((out / "manifest.json").read_text())["videos"])
        except (OSError, ValueError):
            recorded = 0
        if recorded >= 1:
            break
        time.sleep(0.05)
    assert run.poll() is None, "preparation ended before it could be killed"
    kill_session(run)
    finished_before = set(Manifest.load(out).videos)
    assert 1 <= len(finished_before) < 10
    result = prepare_dataset(list_all_videos(DatasetConfig(root, "generic")),
                             PrepareConfig(out, flow_method="farneback", workers=2))
    assert set(result.skipped) == finished_before
    assert set(result.prepared) == {f"move-down/v{i}" for i in range(10)} - finished_before
    manifest = Manifest.load(out)
    assert len(manifest.videos) == 10 and not manifest.failed
    for i in range(10):
        folder = out / f"move-down/v{i}"
        assert len(files_of(folder, "img_")) == 48 and len(files_of(folder, "flow_y_")) == 47
    assert sorted(p.name for p in (out / "move-down").iterdir()) == [f"v{i}" for i in range(10)]


def shifted_pair(shift_x, shift_y, size=(96, 128)):
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur((rng.random((size[0] + 40, size[1] + 40)) * 255).astype(np.float32), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    first = texture[20:-20, 20:-20]
    second = texture[20 - shift_y:texture.shape[0] - 20 - shift_y, 20 - shift_x:texture.shape[1] - 20 - shift_x]
    return first, second


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_flow_methods_measure_a_known_shift(method):
    first, second = shifted_pair(3, -2)  # content moves 3 px right and 2 px up
    flow = FlowEstimator(method)(first, second)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16]
    assert np.median(inner[..., 0]) == pytest.approx(3.0, abs=0.25)
    assert np.median(inner[..., 1]) == pytest.approx(-2.0, abs=0.25)


def test_quantised_flow_round_trips_within_one_step_and_clips_at_the_bound():
    flow = np.stack(np.meshgrid(np.linspace(-30, 30, 61), np.linspace(-5, 5, 11)), axis=-1).astype(np.float32)
    x, y = quantise_flow(flow, bound=20.0)
    assert x.dtype == np.uint8 and x.min() == 0 and x.max() == 255
    back_x = dequantise_flow(x, 20.0)
    inside = np.abs(flow[..., 0]) <= 20
    assert np.abs(back_x[inside] - flow[..., 0][inside]).max() <= 20.0 / 127.5
    assert back_x[~inside].tolist() == pytest.approx(np.sign(flow[..., 0][~inside]) * 20.0, abs=0.1)


def test_prepare_with_tvl1_writes_and_records_tvl1_flow(tmp_path, local_ray):
    root = tmp_path / "videos"
    (root / "move-right").mkdir(parents=True)
    write_motion_video(root / "move-right/tiny.avi", "move-right", 60, 25.0, (64, 48), "mpeg4", keep=3)
    (root / "classes.txt").write_text("move-right\n")
    listing = list_all_videos(DatasetConfig(root, "generic"))
    config = PrepareConfig(tmp_path / "frames", width=128, height=96)  # default method: tvl1
    result = prepare_dataset(listing, config)
    record = Manifest.load(config.out).videos["move-right/tiny"]
    assert result.prepared == ("move-right/tiny",)
    assert (record.frames, record.flow_frames, record.flow_method) == (3, 2, "tvl1")  # 0.12 s -> 3 frames
    assert files_of(config.out / "move-right/tiny", "flow_x_") == ["flow_x_00001.jpg", "flow_x_00002.jpg"]
    flow_x = dequantise_flow(cv2.imread(str(config.out / "move-right/tiny/flow_x_00001.jpg"), 0), 20.0)
    moving = np.abs(flow_x) > 0.5
    assert 50 < moving.sum() < 2000  # the one moving object, not the background
    assert np.median(flow_x[moving]) > 0.5  # moving right


def test_manifest_hash_is_stable_and_follows_the_data_not_the_failures(tmp_path, local_ray):
    root = tmp_path / "videos"
    listing = generic_dataset(root, {"move-up/a.avi": ("move-up", 10, 25.0, (64, 48), "mpeg4")})
    config = PrepareConfig(tmp_path / "frames", width=64, height=48, flow_method="farneback")
    result = prepare_dataset(listing, config)
    manifest = Manifest.load(config.out)
    assert result.manifest_hash == manifest_hash(config.out) == Manifest.load(config.out).content_hash()
    assert result.manifest_hash.startswith("sha256:") and len(result.manifest_hash) == 71
    from vidistill.datasets.rawframes import FailedVideo
    manifest.failed["x"] = FailedVideo("x", "/x.avi", "truncated")
    assert manifest.content_hash() == result.manifest_hash
    manifest.flow_bound = 15.0
    assert manifest.content_hash() != result.manifest_hash


@pytest.mark.parametrize("codec, fps, frames", [("mpeg4", 25.0, 40), ("h264", 30.0, 45), ("vp9", 30.0, 15),
                                                ("mjpeg", 12.0, 10)])
def test_resampling_counts_output_frames_by_duration_whatever_the_container(tmp_path, codec, fps, frames):
    from vidistill.datasets.video import CODECS, read_resampled, resampled_index, resampled_length
    path = write_motion_video(tmp_path / f"v{CODECS[codec][2]}", "move-up", frames, fps, (48, 32), codec)
    duration = frames / fps
    for target in (24.0, fps, 2 * fps):
        expected = int(np.ceil(duration * target - 1e-9))
        assert len(list(read_resampled(path, target, 48, 32))) == expected, target
        assert resampled_length(path, target) == expected, target
    # at its own rate a video keeps every frame, in order
    source = list(read_resampled(path, fps, 48, 32))
    assert resampled_index(path, fps).source_frames == tuple(range(frames))
    # the index DALI's video decoder is given names the frames read_resampled shows
    index = resampled_index(path, 24.0)
    assert index.codec == codec
    at_24 = list(read_resampled(path, 24.0, 48, 32))
    assert all(np.array_equal(frame, source[i]) for frame, i in zip(at_24, index.source_frames))
    doubled = list(read_resampled(path, 2 * fps, 48, 32))
    assert all(np.array_equal(doubled[2 * i], source[i]) and np.array_equal(doubled[2 * i + 1], source[i])
               for i in range(frames))


def test_a_damaged_manifest_is_an_error_naming_it_and_its_line(tmp_path):
    (tmp_path / "manifest.json").write_text('{"version": 1,\n "classes": [\n')
    with pytest.raises(DatasetError, match=r"manifest.json:3: manifest is not valid JSON .* rerun prepare"):
        Manifest.load(tmp_path)
    with pytest.raises(DatasetError, match=r"nowhere/manifest.json: no manifest; run `vidistill datasets prepare`"):
        Manifest.load(tmp_path / "nowhere")


def test_frames_only_preparation_from_a_yaml_config_and_flow_loading_refused(tmp_path, local_ray):
    from vidistill.datasets.loaders import ClipLoaderConfig, make_clip_loader
    from vidistill.datasets.rawframes import open_rawframes
    root = tmp_path / "videos"
    generic_dataset(root, {"move-left/a.avi": ("move-left", 12, 25.0, (64, 48), "mpeg4")})
    config_file = tmp_path / "data.yaml"
    config_file.write_text(f"root: {root}\nlayout: generic\n")
    out = tmp_path / "frames"
    result = CliRunner().invoke(cli, ["datasets", "prepare", "--config", str(config_file), "--out", str(out),
                                      "--flow", "none", "--size", "64x48", "--rgb-template", "frame{:04d}.jpg",
                                      "--start-index", "0"])
    assert result.exit_code == 0, result.output
    record = Manifest.load(out).videos["move-left/a"]
    assert (record.frames, record.flow_frames, record.flow_method) == (12, 0, None)
    assert files_of(out / "move-left/a", "frame") == [f"frame{i:04d}.jpg" for i in range(12)]
    prepared = open_rawframes(out)
    assert next(iter(make_clip_loader(prepared, ClipLoaderConfig(train=False, clip_length=4))))["rgb"].shape == (
        5, 3, 4, 48, 64)
    with pytest.raises(DatasetError, match=r"1 video\(s\) have no flow images .* prepare with a flow method"):
        make_clip_loader(prepared, ClipLoaderConfig(modality="paired"))
    bad = CliRunner().invoke(cli, ["datasets", "prepare", "--config", str(config_file), "--out", str(out),
                                   "--rgb-template", "frame.jpg"])
    assert bad.exit_code == 1 and "frame name template rgb='frame.jpg' has no index field" in bad.output


def test_workers_caps_the_videos_in_flight_on_a_ray_with_more_cpus(tmp_path, local_ray, monkeypatch):
    # A queue job reserves `workers` CPUs of a shared cluster; it must not take the others.
    root = tmp_path / "videos"
    listing = generic_dataset(root, {f"move-up/v{i}.avi": ("move-up", 12, 24.0, (64, 48), "mpeg4")
                                     for i in range(5)})
    in_flight = []
    real_wait = ray.wait

    def recording_wait(refs, **kwargs):
        in_flight.append(len(refs))
        return real_wait(refs, **kwargs)

    monkeypatch.setattr(ray, "wait", recording_wait)
    result = prepare_dataset(listing, PrepareConfig(tmp_path / "one", flow_method=None, workers=1))
    assert len(result.prepared) == 5 and in_flight == [1] * 5
    in_flight.clear()
    prepare_dataset(listing, PrepareConfig(tmp_path / "all", flow_method=None))
    assert max(in_flight) >= 2  # unset: as many as the free CPUs allow (twice them, for the pipeline)


def test_one_worker_without_ray_prepares_in_process_the_same_frames_and_flow_as_ray_tasks(
        tmp_path, local_ray, monkeypatch):
    # A private Ray for one worker only adds its start-up, which times out on a loaded 2-core machine.
    root = tmp_path / "videos"
    listing = generic_dataset(root, {f"{c}/v{i}.avi": (c, 12, 24.0, (64, 48), "mpeg4")
                                     for c in ("move-up", "move-left") for i in range(2)})
    on_ray = prepare_dataset(listing, PrepareConfig(tmp_path / "ray", flow_method="farneback", workers=2))

    def no_ray(*args, **kwargs):
        raise AssertionError("prepare --workers 1 started Ray")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    monkeypatch.setattr("vidistill.datasets.prepare.connect_ray", no_ray)
    monkeypatch.setattr(ray, "remote", no_ray)
    in_process = prepare_dataset(listing, PrepareConfig(tmp_path / "here", flow_method="farneback", workers=1))
    assert len(in_process.prepared) == 4 and not in_process.failed
    assert in_process.manifest_hash == on_ray.manifest_hash  # same records and settings
    for video in in_process.prepared:  # and the same bytes in every frame and flow image
        here, there = (sorted((tmp_path / name / video).iterdir()) for name in ("here", "ray"))
        assert [p.name for p in here] == [p.name for p in there] and len(here) == 12 + 2 * 11
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(here, there))
