"""RGB-only, flow-only and two-stream detectors on the synthetic untrimmed benchmark, over seeds.

    python benchmarks/bench_detection_synthetic.py --workdir /tmp/bench-det --seeds 0 1 2

Steps (each timed): write the untrimmed benchmark and the trimmed motion clips of the same
classes; prepare both (frames + Farneback flow); train the RGB and flow I3D feature models by
recognition on the trimmed clips (unless --rgb-model/--flow-model are given); extract snippet
features (16 frames, stride 4); train each detector once per seed; print mAP@{0.3..0.7} and
their average as mean +- std over seeds, and the time per training step. A rerun with the
same --workdir reuses the data, the prepared frames, the models and the features.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_workdir import benchmark_workdir, prepared_synthetic  # noqa: E402

FLOW = {"fps": 10.0, "width": 96, "height": 72, "flow_method": "farneback", "flow_bound": 4.0}
TRIMMED = dict(classes=4, videos_per_class=16, frames=24, width=96, height=72, distractors=1, fps=10,
               test_fraction=0.25, seed=0)
RECOGNITION = ["model.name=i3d_tiny", "data.flip=false", "data.loader_workers=1", "data.backend=opencv",
               "batch_size=8", "optim.lr=0.01", "data.clip_length=16", "data.crop_size=64",
               "data.test_clips_per_video=2", "num_workers=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recognition-epochs", type=int, default=10)
    parser.add_argument("--detector", nargs="*", default=["epochs=30", "dim=64", "levels=4", "stem=1",
                                                           "batch_size=2", "lr=0.002"])
    parser.add_argument("--rgb-model")
    parser.add_argument("--flow-model")
    parser.add_argument("--train-videos", type=int, default=12)
    parser.add_argument("--test-videos", type=int, default=6)
    args = parser.parse_args()
    workdir = benchmark_workdir(args.workdir, "bench-detection-")
    import numpy as np
    import yaml

    from vidistill.datasets.detection.synthetic import make_untrimmed, untrimmed_config
    from vidistill.datasets.layouts import DatasetConfig, list_all_videos
    from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
    from vidistill.trainers.config import load_config
    from vidistill.trainers.detection.features import FeatureConfig, extract_features
    from vidistill.trainers.detection.train import DetectorTrainConfig, train_detector
    from vidistill.trainers.train import train

    times = {}
    began = time.perf_counter()
    untrimmed = workdir / "untrimmed"
    if not untrimmed.exists():
        make_untrimmed(untrimmed, untrimmed_config(train_videos=args.train_videos, test_videos=args.test_videos))
    prepared = workdir / "untrimmed-prepared"
    prepare_dataset(list_all_videos(DatasetConfig(root=untrimmed, layout="thumos14")),
                    PrepareConfig(out=prepared, workers=2, **FLOW))
    times["data + prepare (untrimmed)"] = time.perf_counter() - began
    models = {"rgb": args.rgb_model, "flow": args.flow_model}
    record = workdir / "models.json"
    if record.is_file():
        models.update({k: v for k, v in json.loads(record.read_text()).items() if not models.get(k)})
    if not (models["rgb"] and models["flow"]):
        began = time.perf_counter()
        source, trimmed = prepared_synthetic(workdir / "trimmed", TRIMMED, FLOW)
        times["data + prepare (trimmed)"] = time.perf_counter() - began
        for stream, role in (("flow", "teacher"), ("rgb", "rgb")):
            if models[stream]:
                continue
            began = time.perf_counter()
            config = load_config(None, [f"role={role}", f"data.prepared={trimmed}", f"data.root={source}",
                                        "data.name=bench-detection", *RECOGNITION,
                                        f"epochs={args.recognition_epochs}",
                                        *(["model.attention=none"] if role == "rgb" else [])])
            result = train(config)
            models[stream] = result.model_uri
            times[f"recognition model ({stream})"] = time.perf_counter() - began
            print(f"{stream} feature model {result.model_uri}: {result.metrics}", flush=True)
        record.write_text(json.dumps(models))
    features = {}
    for stream in ("rgb", "flow"):
        began = time.perf_counter()
        out = workdir / "features" / stream
        extract_features(FeatureConfig(prepared=str(prepared), out=str(out), model=models[stream]))
        features[stream] = str(out)
        times[f"extract-features ({stream})"] = time.perf_counter() - began
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.detector)}
    detectors = (("RGB-only", ["rgb"]), ("flow-only", ["flow"]), ("two-stream", ["rgb", "flow"]))
    rows = {name: [] for name, _ in detectors}
    for seed in args.seeds:  # seed-major: a run cut short still has every detector
        for name, parts in detectors:
            result = train_detector(DetectorTrainConfig(root=str(untrimmed), features=[features[p] for p in parts],
                                                        seed=seed, name=f"bench-detector-{'+'.join(parts)}",
                                                        **overrides))
            rows[name].append(result)
            print(f"{name} seed {seed}: {result.metrics} ({result.seconds:.0f} s)", flush=True)
    for name, results in rows.items():
        times[f"train-detector ({name}, per seed)"] = float(np.mean([r.seconds for r in results]))
    thresholds = rows["RGB-only"][0].segment.thresholds
    print(f"\nSynthetic untrimmed benchmark ({args.train_videos} val / {args.test_videos} test videos), "
          f"protocol thumos14, mean +- std over seeds {args.seeds}")
    print(f"{'detector':<12}" + "".join(f"{'mAP@' + format(t, 'g'):>15}" for t in thresholds)
          + f"{'avg':>15}{'ms/step':>10}")
    for name, results in rows.items():
        cells = []
        for t in thresholds:
            values = [r.segment.map[t] for r in results]
            cells.append(f"{np.mean(values):.3f} +- {np.std(values):.3f}")
        avg = [r.segment.average for r in results]
        print(f"{name:<12}" + "".join(f"{c:>15}" for c in cells) + f"{np.mean(avg):.3f} +- {np.std(avg):.3f}".rjust(15)
              + f"{np.mean([r.step_ms for r in results]):10.1f}")
    print("\nTime per step of the pipeline (s):")
    for step, seconds in times.items():
        print(f"  {step:<40} {seconds:8.1f}")


if __name__ == "__main__":
    main()
