"""The working folder of a benchmark that trains: its own vidistill home and a prepared synthetic set.

Benchmarks keep their MLflow store, Ray results and teacher-map cache out of the user's
~/.vidistill, and generate + prepare the synthetic motion benchmark once per folder (a rerun
with the same folder reuses both).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def benchmark_workdir(workdir: Path | None, prefix: str) -> Path:
    """The folder to work in (a new temporary one by default), set as VIDISTILL_HOME's parent."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["VIDISTILL_HOME"] = str(workdir / "home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return workdir


def prepared_synthetic(workdir: Path, synthetic: dict, prepare: dict) -> tuple[Path, Path]:
    """(source, prepared) folders of a synthetic set made with `synthetic`, prepared with `prepare`."""
    from vidistill.datasets.layouts import DatasetConfig, list_all_videos
    from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
    from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic

    source, prepared = workdir / "source", workdir / "prepared"
    if not (source / "classes.txt").exists():
        make_synthetic(source, SyntheticConfig(**synthetic))
    prepare_dataset(list_all_videos(DatasetConfig(root=source, layout="generic")),
                    PrepareConfig(out=prepared, workers=2, **prepare))
    return source, prepared


def accuracy_benchmark_overrides(workdir: Path, videos_per_class: int, epochs: int) -> list[str]:
    """The synthetic accuracy benchmark's data (made and prepared once in `workdir`) and schedule,
    as config overrides; bench_synthetic_accuracy.py says why each choice."""
    source, prepared = prepared_synthetic(
        workdir, dict(classes=4, videos_per_class=videos_per_class, frames=24, width=128, height=96,
                      distractors=1, test_fraction=1 / 3, seed=0),
        dict(width=112, height=96, flow_method="farneback", flow_bound=4.0))
    return [f"data.prepared={prepared}", f"data.root={source}", "data.clip_length=16", "data.crop_size=80",
            "data.flip=false", "data.test_clips_per_video=3", "data.backend=opencv", "data.loader_workers=2",
            "model.name=i3d_tiny", "batch_size=8", "num_workers=1", f"epochs={epochs}", "optim.lr=0.01",
            f"optim.plateau_patience={epochs + 1}"]
