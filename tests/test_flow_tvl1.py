"""The PyTorch TV-L1 against OpenCV's DualTVL1 on real encoded frames: the same flow (mean
end-point error <= 0.1 px, quantised JPEG values within one grey level on >= 99 % of pixels),
its building blocks against the OpenCV functions they stand for, batching that changes no pair,
and the fused inner iteration. The torch code runs on the CPU here; the GPU check is skipped
without CUDA."""
import cv2
import numpy as np
import pytest
import torch

from datasets_fixtures import write_motion_video
from vidistill.datasets.flow import DEFAULT_FLOW_BOUND, dequantise_flow, quantise_flow
from vidistill.datasets.flow_tvl1 import (
    TVL1, TVL1Params, _median, _remap_cubic, _resize, end_point_error, inner_iteration, pyramid_sizes,
)
from vidistill.datasets.video import read_resampled

PATTERNS = ("move-right", "move-left", "move-down", "rotate-clockwise")
SIZE = (80, 64)  # width, height: 5 pyramid scales, the smallest 33x26


@pytest.fixture(scope="module")
def frame_pairs(tmp_path_factory):
    """One consecutive greyscale pair from each of a few real MPEG-4 videos of the synthetic set."""
    folder = tmp_path_factory.mktemp("tvl1-videos")
    previous, following = [], []
    for seed, pattern in enumerate(PATTERNS):
        path = write_motion_video(folder / f"{pattern}.avi", pattern, 8, 25.0, SIZE, "mpeg4", seed=seed)
        grey = [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) for rgb in read_resampled(path, 24.0, *SIZE)]
        previous.append(grey[3])
        following.append(grey[4])
    return np.stack(previous), np.stack(following)


@pytest.fixture(scope="module")
def opencv_flow(frame_pairs):
    cv2.setNumThreads(1)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return np.stack([tvl1.calc(a, b, None) for a, b in zip(*frame_pairs)])


@pytest.fixture(scope="module")
def torch_flow(frame_pairs):
    return TVL1()(*frame_pairs).numpy()


def test_defaults_are_opencvs():
    ours, theirs = TVL1Params(), cv2.optflow.DualTVL1OpticalFlow_create()
    assert (ours.tau, ours.lambda_, ours.theta, ours.epsilon, ours.scale_step) == (
        theirs.getTau(), theirs.getLambda(), theirs.getTheta(), theirs.getEpsilon(), theirs.getScaleStep())
    assert (ours.scales, ours.warps, ours.inner_iterations, ours.outer_iterations, ours.median_filtering) == (
        theirs.getScalesNumber(), theirs.getWarpingsNumber(), theirs.getInnerIterations(),
        theirs.getOuterIterations(), theirs.getMedianFiltering())
    assert pyramid_sizes(256, 320) == [(256, 320), (205, 256), (164, 205), (131, 164), (105, 131)]


def test_building_blocks_match_opencv():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur((rng.random((64, 80)) * 255).astype(np.float32), (5, 5), 1.5)
    batch = torch.from_numpy(image)[None]
    down = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours = _resize(batch, down.shape, (1 / 0.8, 1 / 0.8))[0].numpy()
    np.testing.assert_allclose(ours, down, atol=1e-3)
    up = cv2.resize(down, (80, 64), interpolation=cv2.INTER_LINEAR)
    ours = _resize(torch.from_numpy(down)[None], (64, 80), (51 / 64, 64 / 80))[0].numpy()
    np.testing.assert_allclose(ours, up, atol=1e-3)
    # Warping by up to +-9 px, many taps outside the image: the constant-0 border counts.
    flow = (rng.standard_normal((2, 64, 80)) * 3).astype(np.float32)
    map_x = (np.arange(80)[None] + flow[0]).astype(np.float32)
    map_y = (np.arange(64)[:, None] + flow[1]).astype(np.float32)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC)
    ours = _remap_cubic([batch], torch.from_numpy(map_x)[None], torch.from_numpy(map_y)[None])[0][0].numpy()
    if cv2.__version__.startswith("4."):
        atol = 2.5  # OpenCV 4 rounds coordinates to 1/32 pixel (remap_subpixels=32 reproduces it)
    else:
        atol = 1e-3
    np.testing.assert_allclose(ours, warped, atol=atol)
    np.testing.assert_array_equal(_median(torch.from_numpy(flow[0])[None], 5)[0].numpy(), cv2.medianBlur(flow[0], 5))


def test_flow_matches_opencv_dualtvl1(frame_pairs, opencv_flow, torch_flow):
    assert torch_flow.shape == opencv_flow.shape == (len(PATTERNS), SIZE[1], SIZE[0], 2)
    # The pairs really move (a zero or wrong flow would fail below, not pass trivially).
    assert np.linalg.norm(opencv_flow, axis=-1).mean() > 0.5
    for index, pattern in enumerate(PATTERNS):
        epe = end_point_error(torch_flow[index], opencv_flow[index])
        assert epe <= 0.1, f"{pattern}: end-point error {epe:.4f} px against OpenCV"
        ours = quantise_flow(torch_flow[index], DEFAULT_FLOW_BOUND)
        theirs = quantise_flow(opencv_flow[index], DEFAULT_FLOW_BOUND)
        for axis in range(2):
            close = np.abs(ours[axis].astype(int) - theirs[axis]) <= 1
            assert close.mean() >= 0.99, f"{pattern} axis {axis}: {close.mean():.4f} within one grey level"
    assert end_point_error(torch_flow, opencv_flow) <= 0.1


def test_a_pair_gets_the_same_flow_alone_and_in_a_batch(frame_pairs, torch_flow):
    """Each pair stops by its own rule: batching with pairs that converge later changes nothing."""
    alone = TVL1()(frame_pairs[0][1], frame_pairs[1][1]).numpy()[0]
    np.testing.assert_allclose(alone, torch_flow[1], atol=1e-4)


def test_fused_inner_iteration_is_one_graph_and_equal():
    torch.manual_seed(0)
    state = [torch.randn(3, 20, 24) for _ in range(10)]
    state[8] = state[8].abs()  # |grad I1|^2
    active = torch.tensor([True, False, True])
    constants = (0.045, 0.3, 0.25 / 0.3, 1.0)
    # fullgraph: no graph break, so Inductor (on a GPU) fuses the whole iteration.
    fused = torch.compile(inner_iteration, backend="aot_eager", fullgraph=True)
    for ours, eager in zip(fused(*state, active, *constants), inner_iteration(*state, active, *constants)):
        torch.testing.assert_close(ours, eager)
    unchanged = inner_iteration(*state, active, *constants)
    assert torch.equal(unchanged[0][1], state[0][1])  # the pair not active keeps its flow
    assert not torch.equal(unchanged[0][0], state[0][0])


def test_bad_input_is_refused_with_its_shape():
    with pytest.raises(ValueError, match="differ in shape"):
        TVL1()(np.zeros((2, 32, 32), np.uint8), np.zeros((2, 32, 40), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        TVL1()(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_gpu_flow_matches_opencv(frame_pairs, opencv_flow):
    flow = TVL1(fused=True, device="cuda")(*frame_pairs).cpu().numpy()
    assert end_point_error(flow, opencv_flow) <= 0.1


def test_prepare_records_the_flow_backend_and_both_agree(tmp_path):
    """`prepare` on the torch backend (on the CPU here: torch-cpu) writes the flow JPEGs OpenCV's
    would (JPEG coding amplifies the small differences a little, so the bar is the mean here), and each video's manifest record names the backend that computed it;
    auto without a GPU is OpenCV."""
    import ray

    from vidistill.datasets.errors import DatasetError
    from vidistill.datasets.layouts import DatasetConfig, list_all_videos
    from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
    from vidistill.datasets.rawframes import Manifest

    root = tmp_path / "videos"
    (root / "move-right").mkdir(parents=True)
    write_motion_video(root / "move-right" / "a.avi", "move-right", 6, 24.0, (64, 48), "mpeg4")
    (root / "classes.txt").write_text("move-right\n")
    listing = list_all_videos(DatasetConfig(root, "generic"))
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        results = {
            backend: prepare_dataset(listing, PrepareConfig(tmp_path / backend, width=64, height=48,
                                                            flow_backend=backend, workers=1))
            for backend in ("torch", "auto")
        }
    finally:
        ray.shutdown()
    expected = {"torch": "torch-cpu", "auto": "cuda" if torch.cuda.is_available() else "opencv-cpu"}
    for backend, result in results.items():
        assert not result.failed, result.failed
        assert expected[backend] in result.flow_backend
        (record,) = Manifest.load(result.out).videos.values()
        assert record.flow_backend == result.flow_backend and record.flow_frames == 5
    agree, errors = [], []
    folder = record.video_id
    for name in sorted(p.name for p in (tmp_path / "auto" / folder).glob("flow_*.jpg")):
        ours, theirs = (cv2.imread(str(tmp_path / b / folder / name), cv2.IMREAD_GRAYSCALE) for b in ("torch", "auto"))
        agree.append((np.abs(ours.astype(int) - theirs) <= 1).mean())
        errors.append(np.abs(dequantise_flow(ours, 20.0) - dequantise_flow(theirs, 20.0)).mean())
    assert len(agree) == 10 and np.mean(agree) >= 0.98 and np.mean(errors) <= 0.1, (agree, errors)
    with pytest.raises(DatasetError, match="only tvl1"):
        PrepareConfig(tmp_path / "x", flow_method="farneback", flow_backend="torch")


def test_cli_flow_backend_option_refuses_torch_for_farneback(tmp_path):
    from click.testing import CliRunner

    from vidistill.platform.cli.main import cli

    (tmp_path / "videos" / "move-right").mkdir(parents=True)
    write_motion_video(tmp_path / "videos" / "move-right" / "a.avi", "move-right", 4, 24.0, (64, 48), "mpeg4")
    (tmp_path / "videos" / "classes.txt").write_text("move-right\n")
    result = CliRunner().invoke(cli, ["datasets", "prepare", "--root", str(tmp_path / "videos"), "--layout", "generic",
                                      "--out", str(tmp_path / "out"), "--flow", "farneback", "--flow-backend", "torch"])
    assert result.exit_code != 0 and "only tvl1 flow has a torch backend" in result.output, result.output
