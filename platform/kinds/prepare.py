"""The `prepare` kind: decode a data set's videos into frames and optical flow.

Runs `vidistill.datasets.prepare.prepare_dataset` inside the Ray job, so its per-video tasks
spread over the cluster (the videos and the output folder must then lie on storage every node
mounts at the same path). Resumable: a retried job skips the videos already finished.
"""
from __future__ import annotations

from pydantic import Field
from typing import Literal

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError, Schema


class PrepareJobConfig(Schema):
    root: str = Field(description="source data set folder")
    out: str = Field(description="folder for the rawframes and manifest.json (rerun into it to resume)")
    layout: str = Field("generic", description="ucf101 | hmdb51 | egtea | ssv2 | generic")
    split: int = Field(1, description="official split 1-3 where the data set has them")
    subset: str = Field("all", description="which subset to prepare (train, test...); all = every one")
    flow: Literal["tvl1", "farneback", "none"] = Field("tvl1", description="optical flow: tvl1 (the paper's, ~1 s per 320x256 pair on a CPU core), farneback (fast), none")
    bound: float = Field(20.0, description="flow is clipped to +-bound pixels before quantising")
    fps: float = Field(24.0, description="frame rate every video is resampled to")
    width: int = Field(320, description="frame width")
    height: int = Field(256, description="frame height")
    cpus: int = Field(2, description="CPUs reserved for it on the cluster: videos are prepared this many at a time")

    def check(self) -> None:
        from vidistill.datasets.layouts import layout_names

        if self.layout not in layout_names():
            raise ConfigError("layout", f"unknown layout {self.layout!r}; known: {', '.join(layout_names())}")
        if self.split not in (1, 2, 3):
            raise ConfigError("split", f"must be 1, 2 or 3, got {self.split}")
        self.prepare_config()  # size, fps, bound: the same check as `datasets prepare`
        if self.cpus < 1:
            raise ConfigError("cpus", f"must be at least 1, got {self.cpus}")


    def prepare_config(self):
        """The datasets' PrepareConfig of this job; ConfigError(field, reason) when it refuses a value."""
        from vidistill.datasets.errors import DatasetError
        from vidistill.datasets.prepare import PrepareConfig

        try:
            return PrepareConfig(out=self.out, fps=self.fps, width=self.width, height=self.height,
                                 flow_method=None if self.flow == "none" else self.flow, flow_bound=self.bound,
                                 workers=self.cpus)
        except DatasetError as error:
            field, _, reason = error.reason.partition(": ")
            raise ConfigError(field if reason else "flow", reason or error.reason) from None


def run_prepare(config: PrepareJobConfig) -> None:
    from vidistill.datasets.layouts import DatasetConfig, list_all_videos, list_videos
    from vidistill.datasets.prepare import prepare_dataset

    source = DatasetConfig(root=config.root, layout=config.layout, split=config.split)
    listing = list_all_videos(source) if config.subset == "all" else list_videos(source, config.subset)
    from vidistill.datasets.ray_session import connect_ray

    # Inside a Ray job RAY_ADDRESS names the cluster: prepare_dataset uses it rather than
    # starting a Ray of its own.
    connect_ray()

    def show(progress) -> None:
        eta = f"{progress.eta_s:.0f} s" if progress.eta_s is not None else "?"
        print(f"[vidistill] prepared {progress.done}/{progress.total}, {progress.rate:.2f} videos/s, "
              f"ETA {eta}{f', {progress.failed} failed' if progress.failed else ''}", flush=True)

    result = prepare_dataset(listing, config.prepare_config(), progress=show)
    print(f"[vidistill] {len(result.prepared)} prepared, {len(result.skipped)} done before, "
          f"{len(result.failed)} failed; manifest {result.out / 'manifest.json'} ({result.manifest_hash})",
          flush=True)
    for failure in result.failed:
        print(f"[vidistill] skipped {failure.source}: {failure.reason}", flush=True)
    if not result.prepared and not result.skipped:
        raise SystemExit(f"no video of {config.root} could be prepared; see the reasons above")


PREPARE = register(JobKind(
    name="prepare",
    summary="Decode a data set's videos into JPEG frames and optical flow (rawframes + manifest).",
    config_class=PrepareJobConfig,
    run=run_prepare,
    resources=lambda c: JobResources(c.cpus, cpus_per_worker=1.0),
))
