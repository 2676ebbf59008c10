"""Augmented-RGB (issue 16) and its baselines on the synthetic untrimmed benchmark, frame-level form.

    python benchmarks/bench_dense_distill.py --bench /work/cache/det-bench --workdir /tmp/dense --seeds 0 1 2

Reads a finished run of bench_detection_synthetic.py (--bench: its untrimmed/ annotations and its
features/rgb and features/flow, i3d_tiny snippet features, 16 frames stride 4); writes nothing there.
The frame-level (Charades-style, multi-label) form of the set is written to WORKDIR/charades:
Charades_v1_{train,test}.csv from the THUMOS14-style annotations (val -> train, test -> test; each
action `cNNN start end`); a snippet's labels are every action whose span holds its centre
(train.frame_labels), and the metric is frame-mAP (metrics.frame_map).

Rows, every one the same temporal model (issue 14's encoder, dense head) on the same splits:
RGB-only, teacher-only (flow), two-stream (rgb+flow concatenated), plain feature distillation,
logit distillation, Augmented-RGB and Augmented-RGB without each of its three terms. The
teacher of every distilled row is that seed's flow-only detector, frozen (registered in
WORKDIR/home). Seed-major, and results are saved after each run to WORKDIR/results.json, so a
rerun continues where it stopped. `--control NOISE` adds two rows whose student stream is the flow
features plus NOISE x std Gaussian noise (a modality with a weak motion cue, which these RGB
features lack): every RGB row again on that stream.

Inference cost per test video, both with features computed from frames (as deployment would):
student = RGB i3d_tiny features + detector; two-stream = RGB i3d_tiny + Farneback flow on every
frame pair (the flow the features were made from, at the prepared 96x72) + flow i3d_tiny +
detector. Feature models are timed with the i3d_tiny architecture at the bench's input size
(weights do not change the cost); the detectors are the trained ones.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_workdir import benchmark_workdir  # noqa: E402

DETECTOR = dict(head="dense", dim=64, levels=1, stem=1, epochs=40, batch_size=4, lr=3e-3, warmup_steps=5,
                max_length=128)
OFF = {"atomic": 0.0, "global": 0.0, "boundary": 0.0}
# row -> (student features, method, method_options); None method: a plain detector
ROWS = {
    "RGB-only": (["rgb"], None, None),
    "teacher-only (flow)": (["flow"], None, None),
    "two-stream (rgb+flow)": (["rgb", "flow"], None, None),
    "feature distillation": (["rgb"], "augmented-rgb", {**OFF, "feature": 1.0}),
    "logit distillation": (["rgb"], "augmented-rgb", {**OFF, "logit": 1.0}),
    "Augmented-RGB": (["rgb"], "augmented-rgb", {}),
    "  - atomic": (["rgb"], "augmented-rgb", {"atomic": 0.0}),
    "  - global": (["rgb"], "augmented-rgb", {"global": 0.0}),
    "  - boundary": (["rgb"], "augmented-rgb", {"boundary": 0.0}),
}


def write_charades(bench: Path, out: Path) -> Path:
    """The THUMOS14-style annotations of the bench as Charades CSVs (frame-level multi-label form)."""
    from vidistill.datasets.detection.annotations import read_detection_set
    from vidistill.datasets.layouts import DatasetConfig

    folder = out  # the charades reader finds the CSVs at the root
    folder.mkdir(parents=True, exist_ok=True)
    classes = None
    for subset, name in (("val", "train"), ("test", "test")):
        found = read_detection_set(DatasetConfig(root=str(bench / "untrimmed"), layout="thumos14"), subset)
        classes = found.classes
        with open(folder / f"Charades_v1_{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "actions", "length"])
            for video in found.videos:
                actions = ";".join(f"c{s.label:03d} {s.start:.2f} {s.end:.2f}" for s in video.segments)
                writer.writerow([video.video_id, actions, f"{video.duration:.2f}" if video.duration else ""])
    (folder / "Charades_v1_classes.txt").write_text("".join(f"c{i:03d} {c}\n" for i, c in enumerate(classes)))
    return out


def train_row(root: Path, features: dict, parts: list[str], method: str | None, options: dict | None,
              teacher: str | None, seed: int, register_as: str | None = None):
    from vidistill.trainers.detection.train import DetectorTrainConfig, train_detector

    extra = {}
    if method:
        extra = dict(method=method, method_options=options,
                     teachers=[{"features": features["flow"], "detector": teacher}])
    config = DetectorTrainConfig(root=str(root), layout="charades", train_subset="train", test_subset="test",
                                 features=[features[p] for p in parts], seed=seed, registry=register_as is not None,
                                 name=register_as, **DETECTOR, **extra)
    return train_detector(config)


def inference_cost(bench: Path, root: Path, features: dict, student, two_stream, repeats: int = 3) -> dict:
    """Seconds over the test videos: student (RGB only) and two-stream with flow extraction counted."""
    import cv2
    import numpy as np
    import torch

    from vidistill.trainers.detection.features import load_manifest
    from vidistill.trainers.detection.train import load_detection_data, make_batch
    from vidistill.trainers.models.factory import create_model

    settings = load_manifest(features["rgb"])["settings"]
    height, width = settings["input_size"]
    length = settings["snippet_length"]

    def best(fn):
        times = []
        for _ in range(repeats):
            tick = time.perf_counter()
            fn()
            times.append(time.perf_counter() - tick)
        return min(times)

    frames = sorted((bench / "untrimmed-prepared").glob("*/img_*.jpg"))[:2]
    a, b = (cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (width, height)) for f in frames)
    farneback = best(lambda: [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0) for _ in range(20)]) / 20
    per_snippet = {}
    with torch.no_grad():
        for stream, channels in (("rgb", 3), ("flow", 2)):
            model = create_model("i3d_tiny", num_classes=4, in_channels=channels).eval()
            clip = torch.randn(8, channels, length, height, width)
            per_snippet[stream] = best(lambda: model(clip)) / 8
    out = {"farneback_pair_s": farneback, "i3d_tiny_snippet_s": per_snippet}
    for name, model, parts in (("student", student, ["rgb"]), ("two-stream", two_stream, ["rgb", "flow"])):
        data = load_detection_data(str(root), "charades", [features[p] for p in parts], "test")
        model.eval()

        def detect():
            with torch.no_grad():
                for video in data.videos:
                    x, mask, _ = make_batch([video], model, len(data.classes), None)
                    model(x, mask)
        snippets = sum(len(v.features) for v in data.videos)
        frames_total = sum(int(v.features.shape[0]) * settings["stride"] + length - settings["stride"]
                           for v in data.videos)
        detector_s = best(detect)
        features_s = snippets * sum(per_snippet[p] for p in parts)
        flow_s = frames_total * farneback if "flow" in parts else 0.0
        out[name] = {"detector_s": detector_s, "features_s": features_s, "flow_s": flow_s,
                     "total_s": detector_s + features_s + flow_s, "videos": len(data.videos),
                     "frames": frames_total}
    return out


def weak_features(flow: str, out: Path, noise: float, seed: int = 0) -> str:
    """A control stream: the flow features plus Gaussian noise of `noise` x their std (a weak modality)."""
    import numpy as np

    from vidistill.trainers.detection.features import load_manifest

    if (out / "features.json").is_file():
        return str(out)
    out.mkdir(parents=True)
    manifest = load_manifest(flow)
    rng = np.random.default_rng(seed)
    for video in manifest["videos"]:
        x = np.load(Path(flow) / f"{video}.npy")
        np.save(out / f"{video}.npy", (x + noise * x.std() * rng.standard_normal(x.shape)).astype(np.float32))
    manifest["settings"] = {**manifest["settings"], "modality": "weak", "control": f"flow + {noise} x std noise"}
    (out / "features.json").write_text(json.dumps(manifest, indent=1))
    return str(out)


def _control_name(row: str) -> str:
    if row == "RGB-only":
        return "control: weak only"
    return "control: weak + " + (f"Augmented-RGB {row.strip()}" if row.startswith("  -") else row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, default=Path("/work/cache/det-bench"),
                        help="workdir of a finished bench_detection_synthetic.py run (read only)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--control", type=float, metavar="NOISE",
                        help="also a control whose student stream carries a weak motion cue: flow features plus "
                             "NOISE x std Gaussian noise, every RGB row again on it")
    parser.add_argument("--epochs", type=int, default=DETECTOR["epochs"], help="detector epochs (1: a smoke run)")
    args = parser.parse_args()
    DETECTOR["epochs"] = args.epochs
    workdir = benchmark_workdir(args.workdir, "bench-dense-")
    import numpy as np

    features = {s: str(args.bench / "features" / s) for s in ("rgb", "flow")}
    root = write_charades(args.bench, workdir / "charades")
    if args.control is not None:
        features["weak"] = weak_features(features["flow"], workdir / f"weak-{args.control:g}", args.control)
        ROWS.update({_control_name(row): (["weak"], method, options)
                     for row, (parts, method, options) in ROWS.items() if parts == ["rgb"]})
    record = workdir / "results.json"
    results = json.loads(record.read_text()) if record.is_file() else {}
    models = {}
    for seed in args.seeds:  # seed-major: a run cut short still has every row
        teacher = results.get(f"teacher/{seed}", {}).get("uri")
        for row, (parts, method, options) in ROWS.items():
            key = f"{row}/{seed}"
            if key in results and not (row == "teacher-only (flow)" and teacher is None):
                continue
            register = f"dense-teacher-flow-s{seed}" if row == "teacher-only (flow)" else None
            result = train_row(root, features, parts, method, options, teacher, seed, register)
            results[key] = {"frame_mAP": result.metrics["frame_mAP"], "step_ms": result.step_ms,
                            "seconds": result.seconds}
            if register:
                teacher = result.model_uri
                results[f"teacher/{seed}"] = {"uri": teacher}
            models[row] = result.model
            record.write_text(json.dumps(results, indent=1))
            print(f"{row} seed {seed}: frame-mAP {result.metrics['frame_mAP']:.3f} ({result.seconds:.0f} s)",
                  flush=True)
    print(f"\nSynthetic untrimmed benchmark, frame-level form (charades layout, 12 train / 6 test videos), "
          f"frame-mAP mean +- std over seeds {args.seeds}")
    print(f"{'row':<44}{'frame-mAP':>18}{'runs':>6}{'s/run':>8}")
    for row in ROWS:
        values = [results[f"{row}/{s}"] for s in args.seeds if f"{row}/{s}" in results]
        if values:
            maps = [v["frame_mAP"] for v in values]
            print(f"{row:<44}{f'{np.mean(maps):.3f} +- {np.std(maps):.3f}':>18}{len(maps):>6}"
                  f"{np.mean([v['seconds'] for v in values]):8.0f}")
    if "Augmented-RGB" in models and "two-stream (rgb+flow)" in models:
        cost = inference_cost(args.bench, root, features, models["Augmented-RGB"], models["two-stream (rgb+flow)"])
        results["inference"] = cost
        record.write_text(json.dumps(results, indent=1))
        print(f"\nInference over the {cost['student']['videos']} test videos ({cost['student']['frames']} frames), "
              f"best of 3, this CPU:")
        for name in ("student", "two-stream"):
            c = cost[name]
            print(f"  {name:<11} total {c['total_s']:7.2f} s = features {c['features_s']:.2f} + flow "
                  f"{c['flow_s']:.2f} + detector {c['detector_s']:.3f}")
        print(f"  (Farneback {1000 * cost['farneback_pair_s']:.2f} ms/pair; i3d_tiny per snippet "
              + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in cost['i3d_tiny_snippet_s'].items()) + ")")
        print(f"  student speed-up: {cost['two-stream']['total_s'] / cost['student']['total_s']:.2f}x")


if __name__ == "__main__":
    main()
