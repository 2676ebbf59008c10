"""Accuracy on the synthetic motion benchmark at a CPU-sized scale (issue: the paper's Table 2 ordering).

For each seed: a flow teacher (prob-atten), the RGB baselines (plain I3D, prob-atten), a
feature-distillation student (MARS/FeatMatch objective, plain RGB I3D) and the Prob-Distill
student (Eq. 8), all with the same data, schedule and epochs; then video-level test accuracy
of each, and the late fusions student + teacher and plain RGB + teacher. Prints mean and
spread over the seeds as a table and writes the raw numbers as JSON.

    python benchmarks/bench_synthetic_accuracy.py                     # 3 seeds, ~25 min on 2 CPU cores
    python benchmarks/bench_synthetic_accuracy.py --seeds 0 --epochs 5  # a quick look

The class of a synthetic video is its moving object's motion pattern; every object looks the
same, so the flow teacher has the easy job and the RGB models must find the motion
themselves. Flow is prepared with Farneback and a bound of 4 px: at 112 x 96 the objects move
1-3 px per frame, and the default 20 px bound would quantise that to almost nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from synthetic_workdir import benchmark_workdir, prepared_synthetic

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

    source, prepared = prepared_synthetic(
        workdir, dict(classes=4, videos_per_class=args.videos_per_class, frames=40, width=128, height=96,
                      test_fraction=1 / 3, seed=0),
        dict(width=112, height=96, flow_method="farneback", flow_bound=4.0))
    common = [f"data.prepared={prepared}", f"data.root={source}", "data.clip_length=16", "data.crop_size=80",
              "data.test_clips_per_video=3", "data.backend=opencv", "data.loader_workers=2", "model.name=i3d_tiny",
              "batch_size=16", "num_workers=1", f"epochs={args.epochs}", "optim.lr=0.05",
              "optim.plateau_patience=6"]

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
