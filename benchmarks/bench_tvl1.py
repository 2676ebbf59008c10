"""TV-L1 flow throughput: the PyTorch port (datasets/flow_tvl1.py), eager and with its inner
iteration compiled, against OpenCV's DualTVL1 on the CPU; and the flow's agreement with OpenCV.

Prints frame pairs/s per mode and batch size at 320x256 (the paper's frame size), the mean
end-point error against OpenCV's flow of the same real frame pairs (computed here when cv2 is
importable, else read from benchmarks/data/tvl1_reference.npz, computed with OpenCV 5.1), and
the hours the fastest mode would take for UCF101's ~2.5 M frames (one pair per frame).

Needs only torch and numpy: the module is loaded from its file when vidistill is not installed.

    python benchmarks/bench_tvl1.py                                  # GPU: eager + compiled, batch 16..128
    python benchmarks/bench_tvl1.py --size 80x64 --batch-sizes 1,4 --modes eager   # a quick CPU run
    python benchmarks/bench_tvl1.py --write-reference               # refresh the stored reference (cv2)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "tvl1_reference.npz"
UCF101_FRAMES = 2.5e6


def load_flow_module():
    try:
        from vidistill.datasets import flow_tvl1
    except ImportError:  # only torch here: load the file itself (it imports torch and numpy only)
        spec = importlib.util.spec_from_file_location("flow_tvl1", HERE.parent / "datasets" / "flow_tvl1.py")
        flow_tvl1 = importlib.util.module_from_spec(spec)
        sys.modules["flow_tvl1"] = flow_tvl1
        spec.loader.exec_module(flow_tvl1)
    return flow_tvl1


def try_cv2():
    try:
        import cv2

        return cv2 if hasattr(cv2, "optflow") else None
    except ImportError:
        return None


def resize_pairs(previous: np.ndarray, following: np.ndarray, width: int, height: int, cv2):
    if previous.shape[1:] == (height, width):
        return previous, following
    if cv2 is None:
        raise SystemExit(f"the stored reference is {previous.shape[2]}x{previous.shape[1]}; "
                         "resizing it needs cv2, or use --size 320x256")
    size = (width, height)
    return (np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in previous]),
            np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in following]))


def write_reference(cv2) -> None:
    """Real frame pairs (the synthetic motion set, MPEG-4 encoded and decoded) + OpenCV's flow."""
    import tempfile

    from vidistill.datasets.synthetic import SyntheticConfig, render_video
    from vidistill.datasets.video import read_resampled, write_video

    config = SyntheticConfig(frames=8, width=320, height=256, fps=25.0, distractors=3, noise=0.02, classes=8)
    previous, following = [], []
    with tempfile.TemporaryDirectory() as folder:
        for seed, pattern in enumerate(("move-right", "rotate-clockwise")):
            video = render_video(pattern, config, np.random.default_rng(seed))
            path = write_video(Path(folder) / f"{pattern}.avi", video, config.fps, "mpeg4")
            grey = [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) for rgb in read_resampled(path, 24.0, 320, 256)]
            previous.append(grey[4])
            following.append(grey[5])
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    flow = np.stack([tvl1.calc(a, b, None) for a, b in zip(previous, following)])
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, previous=np.stack(previous), following=np.stack(following),
                        flow=flow.astype(np.float32), opencv=cv2.__version__)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size / 1e6:.2f} MB, OpenCV {cv2.__version__})")


def opencv_pairs_per_second(cv2, previous, following) -> tuple[np.ndarray, float]:
    cv2.setNumThreads(1)  # one core per pair, as prepare's Ray tasks run it
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    start = time.perf_counter()
    flow = np.stack([tvl1.calc(a, b, None) for a, b in zip(previous, following)])
    return flow, len(previous) / (time.perf_counter() - start)


def time_mode(flow_tvl1, mode: str, previous, following, batch: int, repeats: int, device) -> dict:
    solver = flow_tvl1.TVL1(fused=mode == "compiled", device=device)
    index = np.arange(batch) % len(previous)
    a = torch.as_tensor(previous[index]).to(device)
    b = torch.as_tensor(following[index]).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    solver(a, b)  # warm-up: compiles the inner iteration for each pyramid size
    sync()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        flow = solver(a, b)
    sync()
    elapsed = time.perf_counter() - start
    return {"mode": mode, "batch": batch, "pairs_per_s": batch * repeats / elapsed,
            "warmup_s": warmup, "flow": flow.cpu().numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="320x256", help="WIDTHxHEIGHT of the frame pairs")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated; default 16,64,128 on GPU, 1,4 on CPU")
    parser.add_argument("--modes", default=None, help="eager,compiled; default both on GPU, eager on CPU "
                        "(Inductor's CPU compile takes about a minute per pyramid size)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per setting; default 3 GPU, 1 CPU")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--write-reference", action="store_true", help="recompute the stored reference (needs cv2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cv2 = try_cv2()
    if args.write_reference:
        if cv2 is None:
            raise SystemExit("--write-reference needs OpenCV (opencv-contrib-python)")
        write_reference(cv2)
        return

    flow_tvl1 = load_flow_module()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    batches = [int(b) for b in (args.batch_sizes or ("16,64,128" if on_gpu else "1,4")).split(",")]
    modes = (args.modes or ("eager,compiled" if on_gpu else "eager")).split(",")
    repeats = args.repeats or (3 if on_gpu else 1)
    width, height = (int(v) for v in args.size.lower().split("x"))

    stored = np.load(REFERENCE)
    previous, following = resize_pairs(stored["previous"], stored["following"], width, height, cv2)
    if cv2 is not None:
        reference, opencv_rate = opencv_pairs_per_second(cv2, previous, following)
        reference_from = f"OpenCV {cv2.__version__} here"
    elif previous.shape[1:] == stored["flow"].shape[1:3]:
        reference, opencv_rate = stored["flow"], None
        reference_from = f"stored OpenCV {stored['opencv']} flow"
    else:
        raise SystemExit("without cv2 the stored reference is only at 320x256")

    rows = []
    for mode in modes:
        for batch in batches:
            row = time_mode(flow_tvl1, mode, previous, following, batch, repeats, device)
            row["epe_px"] = flow_tvl1.end_point_error(row.pop("flow"), reference[np.arange(batch) % len(reference)])
            rows.append(row)
    best = max(rows, key=lambda r: r["pairs_per_s"])
    summary = {
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
        "torch": torch.__version__, "size": f"{width}x{height}", "threads": torch.get_num_threads(),
        "reference": reference_from, "opencv_cpu_pairs_per_s_one_core": opencv_rate, "rows": rows,
        "triton": "no Triton kernel yet (the compiled inner iteration is the fused path)",
        "best": {"mode": best["mode"], "batch": best["batch"], "pairs_per_s": best["pairs_per_s"],
                 "ucf101_hours": flow_tvl1.projected_hours(best["pairs_per_s"], UCF101_FRAMES)},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"TV-L1 at {width}x{height} on {summary['device']} (torch {torch.__version__}, "
          f"{summary['threads']} threads); reference: {reference_from}")
    if opencv_rate:
        print(f"  OpenCV DualTVL1, CPU, 1 core: {opencv_rate:8.2f} pairs/s"
              f"  -> UCF101 {flow_tvl1.projected_hours(opencv_rate, UCF101_FRAMES):,.0f} core-hours")
    for row in rows:
        print(f"  torch {row['mode']:<8} batch {row['batch']:>4}: {row['pairs_per_s']:9.3f} pairs/s"
              f"  EPE vs OpenCV {row['epe_px']:.4f} px  (warm-up {row['warmup_s']:.1f} s)")
    print(f"  Triton: {summary['triton']}")
    print(f"best: {best['mode']} batch {best['batch']}, {best['pairs_per_s']:.3f} pairs/s -> UCF101 "
          f"(2.5 M frames) in {summary['best']['ucf101_hours']:,.1f} h on this device")


if __name__ == "__main__":
    main()
