"""Accuracy on the synthetic motion benchmark at a CPU-sized scale (issue: the paper's Table 2 ordering).

For each seed: a flow teacher (prob-atten), the RGB baselines (plain I3D, prob-atten), a
feature-distillation student (MARS/FeatMatch objective, plain RGB I3D) and the Prob-Distill
student (Eq. 8), all with the same data, schedule and epochs; then video-level test accuracy
of each, and the late fusions student + teacher and plain RGB + teacher. Prints mean and
spread over the seeds as a table and writes the raw numbers as JSON.

    python benchmarks/bench_synthetic_accuracy.py --seeds 0 1 2 --json results.json  # ~40 min on 2 CPU cores
    python benchmarks/bench_synthetic_accuracy.py --seeds 0 --epochs 5                # a quick look

The class of a synthetic video is its moving object's motion pattern (4 classes: move right,
left, down, up); every object looks the same, so the flow teacher has the easy job and the RGB
models must find the motion themselves. The set: 24 videos per class (16 train, 8 test), 24
frames of 128 x 96 prepared at 112 x 96, one moving object and one distractor; i3d_tiny on
16 x 80 x 80 crops, no horizontal flip, batch 8, SGD lr 0.01 without plateau decay, 30 epochs,
the last epoch's weights evaluated (no selection on the test videos). Flow is prepared with
Farneback and a bound of 4 px: the object moves 1.5-2.7 px per frame, and the default 20 px
bound would quantise that to almost nothing. The data set is the same for every seed; the seed
draws the initial weights and the clips.

Measured (3 seeds, `--seeds 0 1 2`, 34 min wall clock, niced, on a shared 2-core machine),
video-level top-1 on the 32 test videos, mean +- std (per seed):

    flow teacher (prob-atten)      1.000 +- 0.000   (1.000 1.000 1.000)
    RGB I3D (plain)                0.771 +- 0.126   (0.906 0.750 0.656)
    RGB prob-atten                 0.469 +- 0.054   (0.531 0.438 0.438)
    feature distillation           0.677 +- 0.126   (0.531 0.750 0.750)
    Prob-Distill (ours)            0.729 +- 0.282   (0.750 1.000 0.438)
    Prob-Distill + flow teacher    0.990 +- 0.018   (1.000 1.000 0.969)
    RGB I3D + flow teacher         0.990 +- 0.018   (1.000 0.969 1.000)

The paper's ordering does not show at this scale: Prob-Distill beats its own architecture
trained without the teacher (RGB prob-atten) in 2 of 3 seeds (tied in the third) and feature
distillation in 2 of 3, but not plain RGB I3D on average, and the spread over seeds (one test
video is 0.031) is as large as the differences. Only the flow teacher and the fusions are clear.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from synthetic_workdir import accuracy_benchmark_overrides, benchmark_workdir

METHODS = (
    ("flow teacher (prob-atten)", "teacher", ["role=teacher"]),
    ("RGB I3D (plain)", "rgb-none", ["role=rgb", "model.attention=none"]),
    ("RGB prob-atten", "rgb-prob", ["role=rgb", "model.attention=prob-atten"]),
    ("feature distillation", "feature", ["role=distill", "model.attention=none", "distill.objective=feature"]),
    ("Prob-Distill (ours)", "student", ["role=distill", "model.attention=prob-atten", "distill.objective=attention"]),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--videos-per-class", type=int, default=24)
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and runs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    args = parser.parse_args()

    workdir = benchmark_workdir(args.workdir, "vidistill-accuracy-")
    from vidistill.trainers.config import load_config
    from vidistill.trainers.evaluate import evaluate
    from vidistill.trainers.train import train

    # Benchmark-only choices, each measured (see the module docstring and issue 4):
    # - 24-frame videos: the object crosses 35-55 % of the frame in 24 frames, 1.5-2.7 px per frame;
    #   in 40-frame videos (0.9-1.6 px per frame) a from-scratch i3d_tiny learned far more slowly.
    # - 1 distractor (default 3): with 3, plain RGB reached 0.56 after 30 epochs in a quick run,
    #   with 2 the RGB models of seed 0 were still at chance after 30 epochs; with 1, 0.84.
    # - data.flip=false: the classes are directions, and a mirrored move-right clip is a move-left
    #   clip under the move-right label (with the flip the flow teacher topped out at 0.75).
    # - batch 8, lr 0.01 (the paper's): 8 steps an epoch instead of 4; lr 0.05 drove the RGB
    #   models' train CE above chance.
    # - no plateau decay (patience beyond the last epoch), chosen when the "val" subset was the 32 test videos
    #   (it is now a slice held out of training, issue 13),
    #   whose loss jumps from epoch to epoch (2.1, 9.0, 1.6 for one RGB run) and so cuts the lr
    #   by chance, and it would let the test set steer the schedule.
    common = accuracy_benchmark_overrides(workdir, args.videos_per_class, args.epochs)

    results: dict[str, list[float]] = {}
    for seed in args.seeds:
        uris = {}
        for label, key, overrides in METHODS:
            extra = [f"distill.teacher={uris['teacher']}"] if key in ("feature", "student") else []
            config = load_config(overrides=common + overrides + extra + [f"seed={seed}", f"data.name=s{seed}-{key}"])
            began = time.perf_counter()
            uris[key] = train(config).model_uri
            print(f"seed {seed}: trained {label} in {time.perf_counter() - began:.0f} s", flush=True)
        data = load_config(overrides=common + ["role=teacher"]).data
        for label, key, _ in METHODS:
            metrics = evaluate([uris[key]], data, run_name=f"accuracy seed {seed} {key}")[uris[key]]
            results.setdefault(label, []).append(metrics.top1)
        for label, key in (("Prob-Distill + flow teacher", "student"), ("RGB I3D + flow teacher", "rgb-none")):
            fused = evaluate([uris[key], uris["teacher"]], data, run_name=f"accuracy seed {seed} fusion {key}")
            results.setdefault(label, []).append(list(fused.values())[-1].top1)

    print(f"\nvideo-level top-1 on the synthetic motion benchmark ({len(args.seeds)} seeds, "
          f"{args.epochs} epochs, i3d_tiny, 4 classes):")
    print(f"  {'method':<30} {'mean':>6} {'std':>6}   per seed")
    for label, values in results.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {label:<30} {statistics.mean(values):6.3f} {spread:6.3f}   "
              + " ".join(f"{v:.3f}" for v in values))
    if args.json:
        args.json.write_text(json.dumps({"seeds": args.seeds, "epochs": args.epochs, "top1": results}, indent=1))


if __name__ == "__main__":
    main()
