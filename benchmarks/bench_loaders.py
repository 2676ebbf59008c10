"""Loader and flow benchmark on the prepared synthetic motion set.

    python benchmarks/bench_loaders.py [--workers 2] [--repeats 3] [--keep DIR] [--json FILE]

Measures, with the same worker count for every loader (DALI threads = DataLoader workers):
training clips/s (T=24, 224x224 crop, batch 8, from 320x256 frames at 24 fps) of

  dali     rawframes JPEG through DALI (mixed/nvJPEG when a GPU is visible, CPU otherwise)
  opencv   rawframes JPEG through a plain torch DataLoader, OpenCV decoding (the fallback)
  pyav     the raw encoded videos (MPEG-4 .avi, and the same set as VP9 .webm) through a torch
           DataLoader, PyAV decoding
  dali     the raw VP9 videos through DALI's video decoder (its CPU decoder refuses MPEG-4)

as medians over repeated epochs and as ratios to the plain DataLoader, and seconds per
320x256 frame pair of TV-L1 and Farneback flow. It prints which rawframes backend is faster
here and whether ``DEFAULT_CPU_BACKEND`` (vidistill.datasets.loaders) agrees, and the same for raw
videos and ``DEFAULT_CPU_VIDEO_BACKEND``.

Each loader runs one epoch per round, all loaders taking turns, and ratios are taken per round
(back to back), because these machines are shared: their load moves epoch rates by 2-5x.

Figures on a 2-core CPU machine (no GPU), 2 workers, 32 videos, 7 rounds, load average ~7:
  dali rgb x1.17 [0.98-3.50], dali paired x0.83 [0.63-2.47] vs the torch DataLoader (opencv);
  rawframes dali/opencv x1.03 over both: a tie within the noise, dali by a hair (the default);
  raw VP9: dali/pyav x0.89 -> pyav (the issue measured DALI's CPU video reader at ~0.48x PyAV);
  raw MPEG-4 through pyav x1.09; flow: TV-L1 1.07 s, Farneback 0.013 s per 320x256 pair (x80).
Rerun on an idle machine, and on a GPU machine (where dali uses nvJPEG/NVDEC), to refresh.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

from vidistill.datasets.flow import FlowEstimator
from vidistill.datasets.layouts import DatasetConfig, list_all_videos
from vidistill.datasets.loaders import (
    DEFAULT_CPU_BACKEND,
    DEFAULT_CPU_VIDEO_BACKEND,
    ClipLoaderConfig,
    make_clip_loader,
)
from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
from vidistill.datasets.rawframes import open_rawframes
from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic


SYNTHETIC = SyntheticConfig(classes=4, videos_per_class=8, frames=48, width=160, height=120)


def build_data(folder: Path, workers: int) -> tuple[Path, Path, Path]:
    videos, vp9, frames = folder / "videos", folder / "videos-vp9", folder / "frames"
    if not (videos / "classes.txt").exists():
        make_synthetic(videos, SYNTHETIC)
    if not (vp9 / "classes.txt").exists():
        make_synthetic(vp9, SyntheticConfig(**{**SYNTHETIC.__dict__, "codec": "vp9"}))
    if not (frames / "manifest.json").exists():
        started = time.perf_counter()
        listing = list_all_videos(DatasetConfig(videos, "generic"))
        prepare_dataset(listing, PrepareConfig(frames, flow_method="farneback", workers=workers))
        print(f"prepared {len(listing.videos)} videos in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return videos, vp9, frames


def epoch_rate(loader, epoch: int) -> float:
    """Clips per second of one epoch."""
    loader.set_epoch(epoch)
    started = time.perf_counter()
    clips = 0
    for batch in loader:
        clips += batch["label"].numel()
        if batch["rgb"].is_cuda:
            torch.cuda.synchronize()
    return clips / (time.perf_counter() - started)


def measure(loaders: dict, repeats: int) -> dict[str, list[float]]:
    """Epoch rates of every loader, taking turns epoch by epoch so that load from other work
    on the machine falls on all of them alike; epoch 0 of each warms up (pipeline build,
    worker start, page cache) and is not counted."""
    for loader in loaders.values():
        epoch_rate(loader, 0)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for epoch in range(1, repeats + 1):
        for name, loader in loaders.items():
            rates[name].append(epoch_rate(loader, epoch))
    return rates


def flow_seconds_per_pair(frames_dir: Path, pairs: int) -> dict[str, float]:
    video = sorted(p for p in frames_dir.rglob("img_00001.jpg"))[0].parent
    grey = [cv2.imread(str(video / f"img_{i:05d}.jpg"), cv2.IMREAD_GRAYSCALE) for i in range(1, pairs + 2)]
    result = {}
    for method in ("tvl1", "farneback"):
        estimator = FlowEstimator(method)
        times = []
        for a, b in zip(grey, grey[1:]):
            started = time.perf_counter()
            estimator(a, b)
            times.append(time.perf_counter() - started)
        result[method] = statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flow-pairs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="Folder to build the data in and keep (default: a temp folder).")
    parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    cv2.setNumThreads(args.workers)
    with tempfile.TemporaryDirectory() as temporary:
        videos, vp9, frames = build_data(args.keep or Path(temporary), args.workers)
        prepared = open_rawframes(frames)
        listing = list_all_videos(DatasetConfig(videos, "generic"))
        listing_vp9 = list_all_videos(DatasetConfig(vp9, "generic"))
        device = "gpu" if torch.cuda.is_available() else "cpu"
        common = dict(batch_size=8, num_workers=args.workers, seed=0)
        loaders = {}
        for name, source, backend, modality in [
            ("dali rgb", prepared, "dali", "rgb"),
            ("opencv rgb", prepared, "opencv", "rgb"),
            ("pyav rgb (raw mpeg4)", listing, "pyav", "rgb"),
            ("pyav rgb (raw vp9)", listing_vp9, "pyav", "rgb"),
            ("dali rgb (raw vp9)", listing_vp9, "dali", "rgb"),
            ("dali paired", prepared, "dali", "paired"),
            ("opencv paired", prepared, "opencv", "paired"),
        ]:
            config = ClipLoaderConfig(backend=backend, modality=modality,
                                      device=device if backend == "dali" else "cpu", **common)
            loaders[name] = make_clip_loader(source, config)
        runs = {
            name: {"clips_per_s": statistics.median(rates), "repeats": rates,
                   "ran": f"{loaders[name].backend} on {loaders[name].device}"}
            for name, rates in measure(loaders, args.repeats).items()
        }
        flow = flow_seconds_per_pair(frames, args.flow_pairs)

    def ratios(name: str, baseline: str) -> list[float]:
        # Per round: the two ran back to back, so load from other work cancels out better than
        # in a ratio of medians taken over minutes.
        return [x / y for x, y in zip(runs[name]["repeats"], runs[baseline]["repeats"])]

    print(f"\ntraining clips/s ({len(prepared.videos)} videos, T=24, 224x224, batch 8, "
          f"{args.workers} workers, {args.repeats} rounds; ratio = median of per-round ratios [min-max]):")
    for name, run in runs.items():
        baseline = f"opencv {name.split()[1]}"
        each = ratios(name, baseline)
        run["ratio_to_torch_dataloader"] = statistics.median(each)
        print(f"  {name:<22} {run['clips_per_s']:7.2f} clips/s   x{statistics.median(each):5.2f} "
              f"[{min(each):.2f}-{max(each):.2f}] vs torch DataLoader   ({run['ran']})")
    print(f"flow, seconds per 320x256 frame pair (median of {args.flow_pairs}): "
          f"tvl1 {flow['tvl1']:.3f} s, farneback {flow['farneback']:.4f} s, "
          f"tvl1/farneback x{flow['tvl1'] / flow['farneback']:.0f}")
    rawframes = statistics.median(ratios("dali rgb", "opencv rgb") + ratios("dali paired", "opencv paired"))
    raw_video = statistics.median(ratios("dali rgb (raw vp9)", "pyav rgb (raw vp9)"))
    faster = "dali" if rawframes > 1 else "opencv"
    faster_raw = "dali" if raw_video > 1 else "pyav"
    print(f"faster rawframes loader on this {device}: {faster} (dali/opencv x{rawframes:.2f}); "
          f"faster raw-video loader (VP9): {faster_raw} (dali/pyav x{raw_video:.2f})")
    if device == "cpu":
        for name, default, measured in [("DEFAULT_CPU_BACKEND", DEFAULT_CPU_BACKEND, faster),
                                        ("DEFAULT_CPU_VIDEO_BACKEND", DEFAULT_CPU_VIDEO_BACKEND, faster_raw)]:
            print(f"{name} = {default!r} ({'agrees' if default == measured else 'DISAGREES: update it'})")
    else:
        print("on a GPU the default is dali (mixed decoding)" +
              ("" if faster == faster_raw == "dali" else ": DISAGREES with this measurement"))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "workers": args.workers, "loaders": runs,
                                         "flow_s_per_pair": flow, "faster": faster, "faster_raw": faster_raw}, indent=1))


if __name__ == "__main__":
    main()
