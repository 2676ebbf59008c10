"""Detection distillation on the synthetic untrimmed benchmark: every row of issue 15, over seeds.

    python benchmarks/bench_detection_distill.py --workdir /work/cache/det-bench --seeds 0 1 2
    # or one process per seed, then one table:
    python benchmarks/bench_detection_distill.py --seeds 1 --no-cost --out s1.json  # ... s0.json, s2.json
    python benchmarks/bench_detection_distill.py --table s0.json s1.json s2.json
    # another RGB backbone's features (extract-features of it over WORKDIR/untrimmed-prepared):
    python benchmarks/bench_detection_distill.py --rgb-features FEAT/rgb-probdistill --seeds 0 --out s0.json

Reads the features of a finished bench_detection_synthetic.py run (its --workdir: untrimmed/,
features/rgb, features/flow; nothing is written there; --rgb-features names another RGB
feature folder of the same videos and grid, e.g. a second backbone's). Per seed: the RGB-only, flow-only and
two-stream detectors; the flow-only one, registered in a private MLflow home, is the frozen
teacher of the distilled rows (feature distillation, decomposed, decomposed without fusion,
decomposed without the shared head). Prints mAP@{0.3..0.7} and their average as mean +- std,
the paired difference to RGB-only per seed, how well each student's motion representation
reproduces the teacher's on the test videos (R^2), and the inference cost per test video.

Inference cost: each detector's forward on the test videos' features, plus what its features
cost from the prepared frames: the i3d_tiny feature model over every snippet (16 frames,
stride 4; an untrained network of the same architecture: cost does not depend on the weights),
and, for a detector that reads flow, the optical flow of every consecutive frame pair (Farneback,
OpenCV CPU, the benchmark's flow method; TV-L1 costs more). JPEG decoding is not counted (the
same for every row). One thread, so that the other processes on a shared machine disturb the
ratio less.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The detector settings of the README's bench_detection_synthetic.py figures (12 epochs), so its rows compare.
DETECTOR = {"epochs": 12, "dim": 64, "levels": 4, "stem": 1, "batch_size": 2, "lr": 0.002}
DISTILLED = (("feature distillation", "feature", {}),
             ("decomposed", "decomposed", {}),
             ("decomposed w/o fusion", "decomposed", {"fusion": "concat"}),
             ("decomposed w/o shared head", "decomposed", {"shared_head": False}),
             # issue 17: trainers/detection/methods/generative.py and its two ablations
             ("generative", "generative", {}),
             ("generative w/o generative term", "generative", {"generative_weight": 0}),
             ("generative w/o attention term", "generative", {"attention_weight": 0}))


def motion_r2(model, teacher, rgb_test, flow_test) -> float:
    """R^2 of the student's motion representation against the teacher's embedding on the test videos."""
    import torch

    from vidistill.trainers.detection.train import make_batch

    errors, totals = [], []
    with torch.no_grad():
        for rv, fv in zip(rgb_test.videos, flow_test.videos):
            x, mask, _ = make_batch([rv], model, len(rgb_test.classes), None)
            f, fmask, _ = make_batch([fv], teacher, len(rgb_test.classes), None)
            out = model.eval()(x, mask)
            student = out.get("motion", out["embedding"])[0, : len(rv.features)]
            target = teacher(f, fmask)["embedding"][0, : len(rv.features)]
            errors.append(((student - target) ** 2).sum().item())
            totals.append(((target - target.mean(0)) ** 2).sum().item())
    return 1 - sum(errors) / sum(totals)


def inference_parameters(model) -> int:
    """Parameters inference uses (a decomposed student's branch heads are training signals only)."""
    parts = [model.motion, model.appearance, model.fusion, model.joint_head] if hasattr(model, "joint_head") else [model]
    return sum(p.numel() for part in parts if part is not None for p in part.parameters())


def inference_cost(detectors: dict, data: dict, prepared: Path, repeats: int = 3) -> dict:
    """ms per test video: detector forward, feature model, flow; see the module docstring."""
    import cv2
    import torch

    from vidistill.datasets.flow import FlowEstimator
    from vidistill.trainers.detection.train import make_batch
    from vidistill.trainers.models.factory import create_model

    torch.set_num_threads(1)
    test = data["rgb"].videos
    frames = {v.video_id: sorted(p for p in (prepared / v.video_id).glob("*.jpg") if not p.name.startswith("flow"))
              for v in test}
    estimator = FlowEstimator("farneback", "opencv-cpu")
    flow_ms = 0.0
    for paths in frames.values():
        grey = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY) for p in paths]
        began = time.perf_counter()
        for a, b in zip(grey[:-1], grey[1:]):
            estimator(a, b)
        flow_ms += 1000 * (time.perf_counter() - began)
    flow_ms /= len(test)
    height, width = cv2.imread(str(next(iter(frames.values()))[0])).shape[:2]
    feature_ms = {}
    for stream, channels in (("rgb", 3), ("flow", 2)):
        net = create_model("i3d_tiny", num_classes=4, in_channels=channels).eval()
        total = 0.0
        with torch.no_grad():
            for v in test:
                clips = torch.randn(len(v.features), channels, 16, height, width)
                began = time.perf_counter()
                for chunk in clips.split(32):
                    net(chunk)
                total += 1000 * (time.perf_counter() - began)
        feature_ms[stream] = total / len(test)
    cost = {}
    for name, (model, streams) in detectors.items():
        model.eval()
        best = float("inf")
        with torch.no_grad():
            for _ in range(repeats):
                began = time.perf_counter()
                for v in data[streams].videos:
                    x, mask, _ = make_batch([v], model, len(data[streams].classes), None)
                    model(x, mask)
                best = min(best, 1000 * (time.perf_counter() - began) / len(test))
        parts = streams.split("+")
        features = sum(feature_ms[p] for p in parts) + (flow_ms if "flow" in parts else 0.0)
        cost[name] = {"detector_ms": best, "features_ms": features, "total_ms": best + features,
                      "parameters": inference_parameters(model)}
    cost["_parts"] = {"flow_ms": flow_ms, **{f"i3d_{k}_ms": v for k, v in feature_ms.items()}}
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/work/cache/det-bench"))
    parser.add_argument("--rgb-features", type=Path, help=(
        "RGB feature folder of the student rows and RGB-only / two-stream [default: WORKDIR/features/rgb]"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--detector", nargs="*", default=[f"{k}={v}" for k, v in DETECTOR.items()])
    parser.add_argument("--out", type=Path, help="JSON of every result [default: a temporary folder]")
    parser.add_argument("--distilled", nargs="+", default=[name for name, _, _ in DISTILLED],
                        help="only these distilled rows (the plain RGB-only, flow-only and two-stream always run)")
    parser.add_argument("--no-cost", action="store_true", help="skip the inference cost (another process measures it)")
    parser.add_argument("--table", type=Path, nargs="+", help=(
        "only print the table of these --out files (seeds run as parallel processes, one --out each)"))
    args = parser.parse_args()
    if args.table:
        return print_table(merge([json.loads(f.read_text()) for f in args.table]))
    os.environ.setdefault("VIDISTILL_HOME", tempfile.mkdtemp(prefix="bench-detection-distill-"))
    import torch
    import yaml

    from vidistill.trainers.detection.train import DetectorTrainConfig, load_detection_data, train_detector

    torch.set_num_threads(1)
    root, rgb, flow = (str(args.workdir / p) for p in ("untrimmed", "features/rgb", "features/flow"))
    rgb = str(args.rgb_features or rgb)
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.detector)}
    out = args.out or Path(os.environ["VIDISTILL_HOME"]) / "bench_detection_distill.json"
    rows: dict[str, list] = {}
    r2: dict[str, list] = {}
    models = {}
    data = {s: load_detection_data(root, "thumos14", f, "test") for s, f in
            (("rgb", [rgb]), ("flow", [flow]), ("rgb+flow", [rgb, flow]))}
    for seed in args.seeds:  # seed-major: a run cut short still has every row
        plain = {}
        for name, features, streams in (("RGB-only", [rgb], "rgb"), ("flow-only", [flow], "flow"),
                                        ("two-stream", [rgb, flow], "rgb+flow")):
            result = train_detector(DetectorTrainConfig(root=root, features=features, seed=seed,
                                                        registry=name == "flow-only",
                                                        name=f"bench-distill-teacher-{seed}", **overrides))
            plain[name] = result
            rows.setdefault(name, []).append(result.metrics)
            models[name] = (result.model, streams)
            print(f"{name} seed {seed}: avg {result.metrics['mAP_avg']:.3f} ({result.seconds:.0f} s)", flush=True)
        teacher = plain["flow-only"].model.eval()
        for name, method, options in (d for d in DISTILLED if d[0] in args.distilled):
            result = train_detector(DetectorTrainConfig(
                root=root, features=[rgb], seed=seed, registry=False, method=method, method_options=options,
                teachers=[{"features": flow, "detector": plain["flow-only"].model_uri}], **overrides))
            rows.setdefault(name, []).append(result.metrics)
            models[name] = (result.model, "rgb")
            r2.setdefault(name, []).append(motion_r2(result.model, teacher, data["rgb"], data["flow"]))
            print(f"{name} seed {seed}: avg {result.metrics['mAP_avg']:.3f}, motion R2 {r2[name][-1]:.3f} "
                  f"({result.seconds:.0f} s)", flush=True)
        out.write_text(json.dumps({"rows": rows, "r2": r2, "seeds": args.seeds, "detector": overrides,
                                   "rgb_features": rgb}, indent=1))
    cost = {} if args.no_cost else inference_cost(
        {k: models[k] for k in ("RGB-only", "flow-only", "two-stream", "feature distillation", "decomposed", "generative")
         if k in models},
        data, args.workdir / "untrimmed-prepared")
    result = {"rows": rows, "r2": r2, "seeds": args.seeds, "detector": overrides, "cost": cost, "rgb_features": rgb}
    out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nresults: {out}")


def merge(results: list[dict]) -> dict:
    """One result of several processes' (each its own seeds)."""
    merged = {"rows": {}, "r2": {}, "seeds": [], "cost": {}}
    for result in results:
        merged["seeds"] += result["seeds"]
        merged["cost"] = result.get("cost") or merged["cost"]
        merged["rgb_features"] = result.get("rgb_features", merged.get("rgb_features"))
        for key in ("rows", "r2"):
            for name, values in result[key].items():
                merged[key].setdefault(name, []).extend(values)
    return merged


def print_table(result: dict) -> None:
    rows, r2, cost = result["rows"], result["r2"], result.get("cost")
    thresholds = [k for k in rows["RGB-only"][0] if k.startswith("mAP@")]
    print(f"\nSynthetic untrimmed benchmark, protocol thumos14, mean +- std over seeds {result['seeds']}")
    if result.get("rgb_features"):
        print(f"RGB features: {result['rgb_features']}")
    print("| detector | " + " | ".join(thresholds) + " | avg | avg - RGB-only (paired) | motion R^2 |")
    print("|---" * (len(thresholds) + 4) + "|")
    base = np.array([m["mAP_avg"] for m in rows["RGB-only"]])
    for name, metrics in rows.items():
        cells = [f"{np.mean([m[t] for m in metrics]):.3f} +- {np.std([m[t] for m in metrics]):.3f}"
                 for t in thresholds + ["mAP_avg"]]
        avg = np.array([m["mAP_avg"] for m in metrics])
        diff = avg - base[: len(avg)]
        paired = "" if name == "RGB-only" else (f"{diff.mean():+.3f} +- {diff.std():.3f} "
                                                f"({int((diff > 0).sum())}/{len(diff)} seeds better)")
        motion = f"{np.mean(r2[name]):.2f}" if name in r2 else ""
        print(f"| {name} | " + " | ".join(cells) + f" | {paired} | {motion} |")
    if not cost:
        return
    print("\nInference per test video (ms, one CPU thread): flow "
          f"{cost['_parts']['flow_ms']:.0f}, i3d rgb {cost['_parts']['i3d_rgb_ms']:.0f}, "
          f"i3d flow {cost['_parts']['i3d_flow_ms']:.0f}")
    print("| detector | features (flow counted) | detector | total | parameters |\n|---|---|---|---|---|")
    for name, c in cost.items():
        if not name.startswith("_"):
            print(f"| {name} | {c['features_ms']:.0f} | {c['detector_ms']:.0f} | {c['total_ms']:.0f} | "
                  f"{c['parameters']:,} |")


if __name__ == "__main__":
    sys.exit(main())
