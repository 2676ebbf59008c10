"""Inference latency of the Prob-Distill student against plain RGB I3D: eager and CUDA-graph replay,
at batch 1 and batch 16 (issue 18: the student within 1.05x of plain RGB at any batch).

For each batch size and mode the two models are timed interleaved (plain, student, plain, ...)
so machine noise hits both alike; medians and the ratio student / plain of the medians are
printed. On a GPU: bf16 autocast, channels-last 3D, and "graphed" replays one CUDA graph of the
whole forward per model and shape (trainers/graphs.py, what `evaluate` and `predict` run). On
a CPU there is no graph to replay: "graphed" is the eager forward itself and is not timed again.

Imports only torch and the project's model modules, so it runs on a GPU machine where only
PyTorch is installed (with the repository on PYTHONPATH as `vidistill`, or pip install --no-deps).

    python benchmarks/bench_inference.py                        # GPU: i3d, 24 x 256 x 320
    python benchmarks/bench_inference.py --model i3d_tiny --frames 8 --height 112 --width 112  # CPU check
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vidistill.trainers.graphs import GraphedInference
from vidistill.trainers.models import create_model, create_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="i3d")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--repeats", type=int, default=None, help="default: 50 on GPU, 5 on CPU")
    parser.add_argument("--num-classes", type=int, default=101)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    repeats = args.repeats or (50 if on_gpu else 5)
    fmt = torch.channels_last_3d if on_gpu else torch.contiguous_format
    torch.manual_seed(0)
    models = {
        "plain": create_model(args.model, num_classes=args.num_classes),
        "student": create_student(args.model, num_classes=args.num_classes),
    }
    models = {name: m.to(device, memory_format=fmt).eval() for name, m in models.items()}
    runners = {"eager": dict(models)}
    if on_gpu:
        runners["graphed"] = {name: GraphedInference(m) for name, m in models.items()}

    results = []
    # cache_enabled=False: a captured graph must not hold autocast casts made outside it.
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu,
                                                cache_enabled=False):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            x = torch.randn(batch, 3, args.frames, args.height, args.width, device=device).to(memory_format=fmt)
            for mode, fns in runners.items():
                for fn in fns.values():  # warm-up: cuDNN autotuning, allocator, graph capture
                    fn(x)
                    fn(x)
                times = {name: [] for name in fns}
                for _ in range(repeats):
                    for name, fn in fns.items():
                        if on_gpu:
                            torch.cuda.synchronize()
                        began = time.perf_counter()
                        fn(x)
                        if on_gpu:
                            torch.cuda.synchronize()
                        times[name].append(time.perf_counter() - began)
                median = {name: statistics.median(t) for name, t in times.items()}
                results.append({"batch": batch, "mode": mode, "median_ms": {k: v * 1000 for k, v in median.items()},
                                "clips_per_second": {k: batch / v for k, v in median.items()},
                                "student_over_plain": median["student"] / median["plain"]})

    report = {
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "model": args.model, "clip": [args.frames, args.height, args.width],
        "precision": "bf16 autocast, channels-last 3D" if on_gpu else "fp32",
        "repeats": repeats, "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"device {report['device']}; torch {torch.__version__}; {args.model}; clip {args.frames} x {args.height} "
          f"x {args.width}; {report['precision']}; {repeats} interleaved repeats, medians")
    print(f"  {'batch':>5}  {'mode':<8} {'plain ms':>10} {'student ms':>11} {'student/plain':>14}")
    for r in results:
        print(f"  {r['batch']:>5}  {r['mode']:<8} {r['median_ms']['plain']:>10.2f} {r['median_ms']['student']:>11.2f} "
              f"{r['student_over_plain']:>14.3f}")
    if not on_gpu:
        print("  (no CUDA: graph replay is not available, the graphed path is the eager forward)")
    eager = {r["batch"]: r for r in results if r["mode"] == "eager"}
    for r in results:
        if r["mode"] == "graphed" and r["batch"] in eager:
            speedup = eager[r["batch"]]["median_ms"]["student"] / r["median_ms"]["student"]
            print(f"  batch {r['batch']}: graph replay makes the student {speedup:.2f}x faster than eager")
    print("goal: student/plain <= 1.05 at every batch")


if __name__ == "__main__":
    main()
