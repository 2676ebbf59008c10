"""Preparation (Sec. 3.6): videos -> 24 fps 320x256 JPEG frames + quantised TV-L1 flow.

Flow is computed once here, not every epoch. Videos are prepared as parallel Ray tasks, one
per video; with one worker and no Ray attached, in this process instead (a private Ray would
only add its start-up, which times out on a loaded small machine). Each video is written into
``<video-id>.partial-<token>/`` and renamed into place when complete, and the manifest is saved
as results arrive, so a killed run loses at most the videos in flight: a rerun skips videos the
manifest lists as finished and redoes any folder left half-written. The token keeps a rerun
apart from Ray workers of a killed run that are still finishing their last video. A corrupt,
truncated or unreadable video is listed in the manifest with its reason and skipped; the rest
completes (and a rerun retries it).
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from vidistill.datasets.errors import DatasetError, VideoDecodeError
from vidistill.datasets.flow import (
    DEFAULT_FLOW_BOUND, FLOW_BACKENDS, FLOW_METHODS, RESOLVED_BACKENDS, FlowEstimator, quantise_flow,
    resolve_flow_backend,
)
from vidistill.datasets.layouts import Listing, VideoItem
from vidistill.datasets.ray_session import connect_ray
from vidistill.datasets.rawframes import FailedVideo, FrameTemplates, Manifest, VideoRecord
from vidistill.datasets.video import probe, read_resampled

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"  # + "-<token>"
_MANIFEST_SAVE_INTERVAL_S = 2.0  # bounded rewrite cost on datasets of 100k+ videos
_GPU_SHARE = 0.25  # of a GPU per video on the torch-cuda flow backend: 4 videos decode and write
# JPEGs on their CPUs while they take turns at the GPU


@dataclass(frozen=True)
class PrepareConfig:
    """Where and how to prepare. Defaults are the paper's: 24 fps, 320x256, TV-L1."""

    out: Path
    fps: float = 24.0
    width: int = 320
    height: int = 256
    flow_method: str | None = "tvl1"  # None: RGB frames only
    flow_bound: float = DEFAULT_FLOW_BOUND
    jpeg_quality: int = 95
    templates: FrameTemplates = field(default_factory=FrameTemplates)
    # Videos at once (and a local Ray's CPUs); default: all free cores. 1 without a Ray attached
    # or RAY_ADDRESS: in this process, no Ray.
    workers: int | None = None
    # auto: TV-L1 in PyTorch on the GPU when the Ray cluster has one, else OpenCV on the CPU
    flow_backend: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.flow_method is not None and self.flow_method not in FLOW_METHODS:
            raise DatasetError(
                f"unknown flow method {self.flow_method!r}; choose one of {list(FLOW_METHODS)}"
            )
        if self.flow_backend not in FLOW_BACKENDS + RESOLVED_BACKENDS:
            raise DatasetError(
                f"unknown flow backend {self.flow_backend!r}; choose one of {list(FLOW_BACKENDS)}"
            )
        if self.flow_backend.startswith("torch") and self.flow_method != "tvl1":
            raise DatasetError(f"only tvl1 flow has a torch backend, not {self.flow_method!r}; use auto or opencv")
        # The one check of these values, for both doors: `datasets prepare` and the prepare
        # job kind (whose config builds a PrepareConfig at submission). "field: reason".
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise DatasetError(f"width: frame size {self.width}x{self.height} must be even and >= 16")
        if not self.fps > 0:
            raise DatasetError(f"fps: must be more than 0, got {self.fps:g}")
        if not self.flow_bound > 0:
            raise DatasetError(f"bound: the flow clipping bound must be more than 0 pixels, got {self.flow_bound:g}")
        self.templates.validate()

    def new_manifest(self, classes) -> Manifest:
        return Manifest(
            classes=list(classes),
            fps=self.fps,
            width=self.width,
            height=self.height,
            flow_method=self.flow_method,
            flow_bound=self.flow_bound if self.flow_method else None,
            jpeg_quality=self.jpeg_quality,
            templates=self.templates,
        )


@dataclass(frozen=True)
class Progress:
    """Where a preparation run stands, reported after each video."""

    done: int  # videos finished in this run (prepared or failed)
    total: int  # videos this run had to do
    failed: int
    skipped: int  # already finished by an earlier run
    elapsed_s: float
    last: str  # the video that just finished

    @property
    def rate(self) -> float:
        """Videos per second."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    prepared: tuple[str, ...]  # prepared by this run (video ids, sorted)
    skipped: tuple[str, ...]  # already finished before this run
    failed: tuple[FailedVideo, ...]  # failed in this run, by video id
    manifest_hash: str
    flow_backend: str | None = None  # what computed this run's flow (opencv-cpu, torch-cuda...)


def prepare_video(video: VideoItem, config: PrepareConfig) -> VideoRecord:
    """Decode, resample, resize one video; write its frames and flow; return its record.

    Raises VideoDecodeError for a video that cannot be decoded; nothing is left behind then.
    prepare_dataset clears what earlier runs left of the video before calling this.
    """
    final = config.out / video.video_id
    partial = final.with_name(f"{final.name}{PARTIAL_SUFFIX}-{uuid.uuid4().hex[:12]}")
    partial.mkdir(parents=True)
    estimator = None
    if config.flow_method:
        estimator = FlowEstimator(config.flow_method, resolve_flow_backend(config.flow_method, config.flow_backend))
    quality = [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]
    frames = 0
    previous = None
    pairs: list[tuple[np.ndarray, np.ndarray]] = []  # waiting for a batch (1 pair on OpenCV)

    def write_flow(last_pair: int) -> None:
        flows = estimator.many([a for a, _ in pairs], [b for _, b in pairs])
        for pair, flow in enumerate(flows, start=last_pair + 1 - len(pairs)):
            flow_x, flow_y = quantise_flow(flow, config.flow_bound)
            name_x, name_y = config.templates.flow_names(pair)
            _write_jpeg(partial / name_x, flow_x, quality)
            _write_jpeg(partial / name_y, flow_y, quality)
        pairs.clear()

    try:
        for rgb in read_resampled(video.path, config.fps, config.width, config.height):
            _write_jpeg(partial / config.templates.rgb_name(frames), rgb[..., ::-1], quality)
            if estimator is not None:
                grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
                if previous is not None:
                    pairs.append((previous, grey))
                    if len(pairs) >= estimator.batch_size:
                        write_flow(frames - 1)
                previous = grey
            frames += 1
        if pairs:
            write_flow(frames - 2)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        partial.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        # A worker of a killed run finished the same video with the same settings meanwhile.
        shutil.rmtree(partial, ignore_errors=True)
    info = _source_info(video.path)
    return VideoRecord(
        video_id=video.video_id,
        label=video.label,
        frames=frames,
        flow_frames=frames - 1 if estimator else 0,
        flow_method=config.flow_method,
        flow_bound=config.flow_bound if estimator else None,
        width=config.width,
        height=config.height,
        source=str(video.path),
        source_fps=info[0],
        source_frames=info[1],
        flow_backend=estimator.backend if estimator else None,
    )


def _write_jpeg(path: Path, image: np.ndarray, quality: list[int]) -> None:
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image), quality)
    if not ok:
        raise OSError(f"JPEG encoding failed for {path}")
    encoded.tofile(str(path))


def _source_info(path: Path) -> tuple[float, int]:
    info = probe(path)
    return info["fps"], info["frames"]


def _prepare_task(video: VideoItem, config: PrepareConfig) -> VideoRecord | FailedVideo:
    """One Ray task: one CPU each, so OpenCV must not start threads of its own."""
    cv2.setNumThreads(1)
    try:
        return prepare_video(video, config)
    except VideoDecodeError as error:
        return FailedVideo(video.video_id, str(video.path), error.reason)
    except cv2.error as error:  # e.g. a frame OpenCV cannot process
        return FailedVideo(video.video_id, str(video.path), f"OpenCV: {error}".strip())


def _load_or_create_manifest(listing: Listing, config: PrepareConfig) -> Manifest:
    if not (config.out / "manifest.json").exists():
        return config.new_manifest(listing.classes)
    manifest = Manifest.load(config.out)
    wanted = config.new_manifest(listing.classes)
    settings = ("fps", "width", "height", "flow_method", "flow_bound", "jpeg_quality", "templates", "classes")
    differing = [s for s in settings if getattr(manifest, s) != getattr(wanted, s)]
    if differing:
        details = ", ".join(
            f"{s}: {getattr(manifest, s)!r} there, {getattr(wanted, s)!r} now" for s in differing
        )
        raise DatasetError(
            f"this folder was prepared with other settings ({details}); prepare into another "
            "folder, or rerun with the same settings to resume",
            config.out / "manifest.json",
        )
    return manifest


def _clear_leftovers(out: Path, video_id: str) -> None:
    """Remove what earlier runs left of an unfinished video: half-written folders, and a
    complete one that a killed run did not get to record."""
    final = out / video_id
    for folder in [final, *final.parent.glob(glob.escape(final.name) + PARTIAL_SUFFIX + "-*")]:
        shutil.rmtree(folder, ignore_errors=True)


def prepare_dataset(
    listing: Listing,
    config: PrepareConfig,
    progress: Callable[[Progress], None] | None = None,
) -> PrepareResult:
    """Prepare every video of a listing as parallel Ray tasks; resumable; see module doc.

    Uses the Ray cluster already initialised in this process, or starts a local one with
    ``config.workers`` CPUs (and shuts it down at the end); with ``config.workers == 1`` and no
    Ray to attach to, runs in this process instead, one video after another. With
    ``config.workers`` set, at most that many videos are in flight at once, also on a cluster
    shared with other work. On a multi-node cluster the videos and ``config.out`` must lie on
    storage that every node mounts at the same path.
    """
    import ray

    config.out.mkdir(parents=True, exist_ok=True)
    manifest = _load_or_create_manifest(listing, config)
    finished = {
        v.video_id
        for v in listing.videos
        if v.video_id in manifest.videos and (config.out / v.video_id).is_dir()
    }
    todo = [v for v in listing.videos if v.video_id not in finished]
    for video in todo:
        manifest.videos.pop(video.video_id, None)  # a record whose folder vanished is stale
        _clear_leftovers(config.out, video.video_id)
    in_process = config.workers == 1 and not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    started_ray = bool(todo) and not in_process and connect_ray(num_cpus=config.workers, log_to_driver=False)
    prepared: list[str] = []
    failed: list[FailedVideo] = []
    begin = last_save = time.monotonic()
    try:
        gpus = _local_gpus(config) if in_process else _ray_gpus(config)
        backend = resolve_flow_backend(config.flow_method, config.flow_backend, gpu_visible=gpus > 0)
        if backend == "torch-cuda" and not gpus:
            where = "on this machine" if in_process else "in the Ray cluster"
            raise DatasetError(f"flow backend torch-cuda needs a GPU {where}; there is none")
        if backend:
            log.info("flow: %s computed by %s", config.flow_method, backend)
        config = dataclasses.replace(config, flow_backend=backend or config.flow_backend)
        if in_process:
            results = (_prepare_task(video, config) for video in todo)
        else:
            results = _results_on_ray(todo, config, backend)
        for result in results:
            if isinstance(result, VideoRecord):
                manifest.videos[result.video_id] = result
                manifest.failed.pop(result.video_id, None)
                prepared.append(result.video_id)
            else:
                manifest.failed[result.video_id] = result
                failed.append(result)
                log.warning("skipped %s: %s", result.source, result.reason)
            now = time.monotonic()
            if now - last_save >= _MANIFEST_SAVE_INTERVAL_S:
                manifest.save(config.out)
                last_save = now
            if progress is not None:
                progress(
                    Progress(
                        done=len(prepared) + len(failed),
                        total=len(todo),
                        failed=len(failed),
                        skipped=len(finished),
                        elapsed_s=now - begin,
                        last=result.video_id,
                    )
                )
    finally:
        manifest.save(config.out)  # whatever happened, keep what is done
        if started_ray and ray.is_initialized():
            ray.shutdown()
    return PrepareResult(
        out=config.out,
        prepared=tuple(sorted(prepared)),
        skipped=tuple(sorted(finished)),
        failed=tuple(sorted(failed, key=lambda f: f.video_id)),
        manifest_hash=manifest.content_hash(),
        flow_backend=backend,
    )


def _ray_gpus(config: PrepareConfig) -> float:
    """GPUs of the Ray cluster this flow could use. Asked here, not in the tasks: Ray hides the
    GPUs from tasks that do not ask for one."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    if gpus and config.flow_method == "tvl1" and config.flow_backend == "auto":
        import torch

        gpus = gpus if torch.cuda.is_available() else 0  # a GPU this PyTorch cannot use
    return gpus


def _local_gpus(config: PrepareConfig) -> float:
    """GPUs this process could compute the flow on; torch is imported only when the flow is TV-L1."""
    if config.flow_method != "tvl1" or config.flow_backend not in ("auto", "torch-cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


def _results_on_ray(todo: list[VideoItem], config: PrepareConfig, backend: str | None):
    """Each video's result as its Ray task finishes, with a bounded number in flight."""
    import ray

    task = ray.remote(num_cpus=1, num_gpus=_GPU_SHARE if backend == "torch-cuda" else 0, max_retries=0)(_prepare_task)
    if config.workers:
        # What the caller reserved (a queue job's CPUs on a shared cluster): no more at once.
        limit = config.workers
    else:
        limit = 2 * max(1, int(ray.available_resources().get("CPU", 1)))  # keeps memory bounded
    queue = list(reversed(todo))
    in_flight: list = []
    while queue or in_flight:
        while queue and len(in_flight) < limit:
            in_flight.append(task.remote(queue.pop(), config))
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        yield ray.get(ready[0])
