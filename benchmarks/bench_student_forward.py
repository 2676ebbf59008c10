"""Inference cost of the distilled student against plain RGB I3D and a two-stream I3D.

The paper's claim (Sec. 3.6): the student "runs at the same speed as the RGB network";
goal here is a student / plain-RGB forward-time ratio <= 1.05. The two-stream model
(RGB I3D + flow I3D) is shown beside it, once for the networks alone and once with the
TV-L1 optical flow a two-stream model must compute for every frame pair of the clip.

The models are timed interleaved (plain, student, two-stream, plain, ...) so machine
noise hits all of them alike; medians and ratios of medians are printed. On a GPU the
fast path is used: bf16 autocast and channels-last 3D tensors.

    python benchmarks/bench_student_forward.py                 # full width, 24 x 224 x 224
    python benchmarks/bench_student_forward.py --model i3d_small --repeats 20
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from vidistill.trainers.models import create_model, create_student


def tvl1_seconds_per_pair(height: int, width: int, repeats: int) -> float:
    import cv2

    rng = np.random.default_rng(0)
    frame = (rng.random((height, width)) * 255).astype(np.uint8)
    shifted = np.roll(frame, 2, axis=1)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tvl1.calc(frame, shifted, None)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="i3d")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 1 on CPU, 8 on GPU")
    parser.add_argument("--repeats", type=int, default=None, help="default: 7 on CPU, 30 on GPU")
    parser.add_argument("--num-classes", type=int, default=101)
    parser.add_argument("--skip-flow", action="store_true", help="do not time TV-L1 extraction")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    batch = args.batch_size or (8 if on_gpu else 1)
    repeats = args.repeats or (30 if on_gpu else 7)
    fmt = torch.channels_last_3d if on_gpu else torch.contiguous_format
    torch.manual_seed(0)

    def prepare(model):
        return model.to(device, memory_format=fmt).eval()

    plain = prepare(create_model(args.model, num_classes=args.num_classes))
    student = prepare(create_student(args.model, num_classes=args.num_classes))
    flow_net = prepare(create_model(args.model, num_classes=args.num_classes, in_channels=2))
    rgb = torch.randn(batch, 3, args.frames, args.size, args.size, device=device).to(memory_format=fmt)
    flow = torch.randn(batch, 2, args.frames, args.size, args.size, device=device).to(memory_format=fmt)

    candidates = {
        "plain_rgb": lambda: plain(rgb),
        "student": lambda: student(rgb),
        "two_stream": lambda: (plain(rgb), flow_net(flow)),
    }
    times = {name: [] for name in candidates}
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
        for fn in candidates.values():  # warm-up (cuDNN autotuning, allocator)
            fn()
        for _ in range(repeats):
            for name, fn in candidates.items():
                if on_gpu:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if on_gpu:
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu ({torch.get_num_threads()} threads)",
        "model": args.model,
        "clip": [batch, args.frames, args.size, args.size],
        "repeats": repeats,
        "median_seconds": median,
        "clips_per_second": {name: batch / s for name, s in median.items()},
        "ratio_student_vs_plain_rgb": median["student"] / median["plain_rgb"],
        "ratio_two_stream_vs_student": median["two_stream"] / median["student"],
    }
    if not args.skip_flow:
        # TV-L1 at the paper's 320 x 256 frames; a clip of T frames has T - 1 pairs per video clip.
        per_pair = tvl1_seconds_per_pair(256, 320, repeats=3)
        flow_seconds = per_pair * (args.frames - 1) * batch
        report["tvl1_seconds_per_pair_320x256_cpu"] = per_pair
        report["ratio_two_stream_with_tvl1_vs_student"] = (median["two_stream"] + flow_seconds) / median["student"]

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"device {report['device']}; {args.model}; batch {batch} x {args.frames} x {args.size} x {args.size}; "
          f"{repeats} interleaved repeats")
    for name, seconds in median.items():
        print(f"  {name:<11} median {seconds * 1000:9.1f} ms   {batch / seconds:8.2f} clips/s")
    print(f"student / plain RGB I3D forward time:  {report['ratio_student_vs_plain_rgb']:.3f}  (goal <= 1.05)")
    print(f"two-stream / student (networks only):  {report['ratio_two_stream_vs_student']:.2f}")
    if "tvl1_seconds_per_pair_320x256_cpu" in report:
        print(f"two-stream / student with TV-L1 flow:  {report['ratio_two_stream_with_tvl1_vs_student']:.1f}  "
              f"(TV-L1 {report['tvl1_seconds_per_pair_320x256_cpu']:.2f} s per 320x256 pair on this CPU)")


if __name__ == "__main__":
    main()
