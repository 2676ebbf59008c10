"""What distillation costs per epoch: Prob-Distill against plain RGB training on the same data.

Goal: Prob-Distill epoch time / plain RGB I3D epoch time <= 1.15. The student reads its
teacher's motion maps from the per-video cache (trainers/teacher.py), so a step costs one
RGB forward and backward plus the two attention heads; running the flow teacher live at
every step (the cache turned off) is shown beside it for contrast.

Runs take turns (plain, cached, live, plain, ...) so machine noise falls on all alike; each
run's epoch times come from its MLflow metrics, the first epoch (warm-up) left out, and the
ratio is of medians.

    python benchmarks/bench_distill_cost.py                        # i3d_small, 16 x 112 x 112 clips
    python benchmarks/bench_distill_cost.py --model i3d --frames 24 --size 224 --use-gpu
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from synthetic_workdir import benchmark_workdir, prepared_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="i3d_small")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--videos-per-class", type=int, default=16, help="4 classes; 3/4 of the videos train")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workdir = benchmark_workdir(args.workdir, "vidistill-distill-cost-")

    from vidistill.trainers import tracking
    from vidistill.trainers.config import load_config
    from vidistill.trainers.train import train

    source, prepared = prepared_synthetic(
        workdir, dict(classes=4, videos_per_class=args.videos_per_class, frames=48, width=160, height=128),
        dict(width=160, height=128, flow_method="farneback"))
    common = [f"data.prepared={prepared}", f"data.root={source}", f"data.clip_length={args.frames}",
              f"data.crop_size={args.size}", "data.backend=opencv", "data.loader_workers=2",
              f"model.name={args.model}", f"batch_size={args.batch_size}", "num_workers=1",
              f"use_gpu={str(args.use_gpu).lower()}", "register=false"]
    teacher = train(load_config(overrides=common + ["role=teacher", "epochs=1", "register=true"])).model_uri
    candidates = {
        "plain RGB I3D": ["role=rgb", "model.attention=none"],
        "Prob-Distill, cached teacher maps": ["role=distill", f"distill.teacher={teacher}"],
        "Prob-Distill, teacher run every step": ["role=distill", f"distill.teacher={teacher}",
                                                 "distill.cache_teacher_maps=false"],
    }
    client = tracking.store_client()
    seconds = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, overrides in candidates.items():
            run_id = train(load_config(overrides=common + overrides + [f"epochs={args.epochs}"])).run_id
            history = sorted(client.get_metric_history(run_id, "epoch_seconds"), key=lambda m: m.step)
            seconds[name] += [m.value for m in history[1:]]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    plain = median["plain RGB I3D"]
    report = {"model": args.model, "clip": [args.batch_size, args.frames, args.size, args.size],
              "median_epoch_seconds": median, "ratio_vs_plain_rgb": {n: s / plain for n, s in median.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.model}, batch {args.batch_size} x {args.frames} x {args.size}^2, {args.rounds} rounds of "
          f"{args.epochs} epochs (first epoch of each run left out)")
    for name, value in median.items():
        print(f"  {name:<38} median epoch {value:6.2f} s   x{value / plain:.3f}")
    print(f"Prob-Distill / plain RGB epoch time: {median['Prob-Distill, cached teacher maps'] / plain:.3f} "
          "(goal <= 1.15)")


if __name__ == "__main__":
    main()
