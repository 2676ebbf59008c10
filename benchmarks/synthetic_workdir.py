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
