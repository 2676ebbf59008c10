"""Prepared data on disk: the MMAction2 / denseflow rawframes layout and its manifest.

::

    <out>/manifest.json
    <out>/<video-id>/img_00001.jpg ...        RGB frames, 24 fps, 320x256
    <out>/<video-id>/flow_x_00001.jpg ...     flow between frames 1 and 2, x then y,
    <out>/<video-id>/flow_y_00001.jpg ...     quantised: v = round((clip(f, -b, b) + b) * 255 / 2b)

A video of N frames has N - 1 flow images per axis. The file name templates and the first
index are configurable (``FrameTemplates``), so folders extracted by other tools load as they
are. ``manifest.json`` records the preparation settings, per video its label, frame count, flow
method and bound, and the videos that failed with the reason. ``manifest_hash`` is the content
hash to record as data lineage.

Folders without a manifest (extracted elsewhere) open with ``open_rawframes(..., file_list=)``
given an MMAction2 rawframes annotation list (``<video-dir> <num-frames> <label>`` per line):
frame counts and sizes are then read from the folders themselves.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2

from vidistill.datasets.errors import DatasetError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FrameTemplates:
    """File names of one video's frames: ``str.format`` templates with one integer field."""

    rgb: str = "img_{:05d}.jpg"
    flow_x: str = "flow_x_{:05d}.jpg"
    flow_y: str = "flow_y_{:05d}.jpg"
    start_index: int = 1  # denseflow and MMAction2 number from 1

    def rgb_name(self, frame: int) -> str:
        """Name of frame ``frame`` (0-based)."""
        return self.rgb.format(frame + self.start_index)

    def flow_names(self, pair: int) -> tuple[str, str]:
        """Names of the x and y flow images between frames ``pair`` and ``pair + 1`` (0-based)."""
        index = pair + self.start_index
        return self.flow_x.format(index), self.flow_y.format(index)

    def validate(self) -> None:
        for name in ("rgb", "flow_x", "flow_y"):
            template = getattr(self, name)
            try:
                a, b = template.format(1), template.format(2)
            except (IndexError, KeyError, ValueError) as error:
                raise DatasetError(
                    f"frame name template {name}={template!r} is not a str.format template "
                    f"with one integer field, e.g. 'img_{{:05d}}.jpg' ({error})"
                ) from None
            if a == b:
                raise DatasetError(f"frame name template {name}={template!r} has no index field")


@dataclass(frozen=True)
class VideoRecord:
    """One prepared video, as the manifest records it."""

    video_id: str
    label: int
    frames: int  # RGB frames written
    flow_frames: int  # flow images per axis (frames - 1), 0 when flow was not computed
    flow_method: str | None
    flow_bound: float | None
    width: int
    height: int
    source: str  # the encoded video it came from
    source_fps: float
    source_frames: int
    flow_backend: str | None = None  # opencv-cpu, torch-cuda or torch-cpu (datasets/flow.py)


@dataclass(frozen=True)
class FailedVideo:
    video_id: str
    source: str
    reason: str


@dataclass
class Manifest:
    """Settings and per-video records of one prepared folder."""

    classes: list[str]
    fps: float
    width: int
    height: int
    flow_method: str | None
    flow_bound: float | None
    jpeg_quality: int
    templates: FrameTemplates = field(default_factory=FrameTemplates)
    videos: dict[str, VideoRecord] = field(default_factory=dict)
    failed: dict[str, FailedVideo] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def to_dict(self) -> dict:
        data = asdict(self)
        data["videos"] = {k: asdict(v) for k, v in sorted(self.videos.items())}
        data["failed"] = {k: asdict(v) for k, v in sorted(self.failed.items())}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        data = dict(data)
        data["templates"] = FrameTemplates(**data["templates"])
        data["videos"] = {k: VideoRecord(**v) for k, v in data["videos"].items()}
        data["failed"] = {k: FailedVideo(**v) for k, v in data["failed"].items()}
        return cls(**data)

    def save(self, folder: Path) -> Path:
        """Write atomically: a run killed mid-write leaves the previous manifest intact."""
        path = Path(folder) / MANIFEST_NAME
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DatasetError(
                "no manifest; run `vidistill datasets prepare` into this folder, or open "
                "rawframes extracted elsewhere with a file list",
                path,
            ) from None
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"manifest is not valid JSON ({error.msg}); delete it and rerun prepare "
                "(finished videos are re-checked, not lost)",
                path,
                error.lineno,
            ) from None
        if data.get("version") != MANIFEST_VERSION:
            raise DatasetError(
                f"manifest version {data.get('version')} is not {MANIFEST_VERSION}; re-prepare",
                path,
            )
        return cls.from_dict(data)

    def content_hash(self) -> str:
        """sha256 of what defines the data (settings, classes, prepared videos); the list of
        failures is left out since it does not change a single training tensor."""
        data = self.to_dict()
        data.pop("failed")
        for record in data["videos"].values():
            record.pop("source")  # where the raw file lay does not change the frames
            if record.get("flow_backend") is None:
                record.pop("flow_backend", None)  # manifests from before it was recorded keep their hash
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def manifest_hash(folder: Path | str) -> str:
    """The content hash of a prepared folder's manifest, to record as dataset lineage."""
    return Manifest.load(Path(folder)).content_hash()


# --- opening prepared frames for loading -----------------------------------------------------


@dataclass(frozen=True)
class PreparedVideo:
    """One video's frame folder, as the loaders need it."""

    video_id: str
    directory: Path
    label: int
    frames: int
    flow_frames: int
    width: int
    height: int


@dataclass(frozen=True)
class PreparedSet:
    """The videos of a rawframes folder that a loader reads, in a fixed order."""

    root: Path
    classes: tuple[str, ...]
    templates: FrameTemplates
    videos: tuple[PreparedVideo, ...]
    content_hash: str

    def select(self, video_ids, source: str = "the listing") -> "PreparedSet":
        """The subset of videos named (e.g. the train list of a split), in the order named."""
        by_id = {v.video_id: v for v in self.videos}
        missing = [vid for vid in video_ids if vid not in by_id]
        if missing:
            raise DatasetError(
                f"{len(missing)} video(s) of {source} are not prepared here (first: "
                f"{missing[0]!r}); run `vidistill datasets prepare` again, or check the manifest "
                "for why they failed",
                self.root,
            )
        chosen = tuple(by_id[vid] for vid in video_ids)
        digest = hashlib.sha256(
            (self.content_hash + "\n" + "\n".join(video_ids)).encode()
        ).hexdigest()
        return PreparedSet(self.root, self.classes, self.templates, chosen, "sha256:" + digest)


def open_rawframes(
    root: Path | str,
    templates: FrameTemplates | None = None,
    file_list: Path | str | None = None,
    classes: tuple[str, ...] | None = None,
) -> PreparedSet:
    """Open a rawframes folder: from its manifest, or from an MMAction2 file list."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("rawframes folder does not exist", root)
    if file_list is None:
        manifest = Manifest.load(root)
        videos = tuple(
            PreparedVideo(
                r.video_id, root / r.video_id, r.label, r.frames, r.flow_frames, r.width, r.height
            )
            for r in sorted(manifest.videos.values(), key=lambda r: r.video_id)
        )
        if not videos:
            # Training or evaluating on nothing would "succeed" with meaningless numbers.
            raise DatasetError(
                f"no prepared videos ({len(manifest.failed)} failed to prepare, listed in the manifest's "
                "'failed'); fix or replace them and rerun `vidistill datasets prepare` into this folder",
                root,
            )
        return PreparedSet(
            root, tuple(manifest.classes), manifest.templates, videos, manifest.content_hash()
        )
    templates = templates or FrameTemplates()
    templates.validate()
    file_list = Path(file_list)
    videos = []
    for line, text in _list_lines(file_list):
        parts = text.split()
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise DatasetError(
                f"expected `<video-dir> <num-frames> <label>` (MMAction2 rawframes list), got "
                f"{text!r}",
                file_list,
                line,
            )
        directory = root / parts[0]
        videos.append(_scan_video(directory, parts[0], int(parts[2]), templates, file_list, line))
    labels = max((v.label for v in videos), default=-1) + 1
    digest = hashlib.sha256(
        json.dumps(
            [asdict(templates)] + [[v.video_id, v.label, v.frames, v.flow_frames] for v in videos]
        ).encode()
    ).hexdigest()
    return PreparedSet(
        root,
        tuple(classes) if classes else tuple(str(i) for i in range(labels)),
        templates,
        tuple(videos),
        "sha256:" + digest,
    )


def _list_lines(path: Path):
    if not path.is_file():
        raise DatasetError("file list not found", path)
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                yield number, text.strip()


def _count_indexed(names: set[str], template: str, start: int) -> int:
    """How many consecutive files ``template`` names exist, counting from ``start``."""
    count = 0
    while template.format(start + count) in names:
        count += 1
    return count


def _scan_video(
    directory: Path, video_id: str, label: int, templates: FrameTemplates, list_file: Path, line: int
) -> PreparedVideo:
    try:
        names = set(os.listdir(directory))
    except OSError:
        raise DatasetError(f"frame folder {directory} does not exist", list_file, line) from None
    frames = _count_indexed(names, templates.rgb, templates.start_index)
    flow_x = _count_indexed(names, templates.flow_x, templates.start_index)
    flow_y = _count_indexed(names, templates.flow_y, templates.start_index)
    if frames == 0 and flow_x == 0:
        pattern = re.sub(r"\{[^}]*\}", "N", templates.rgb)
        raise DatasetError(
            f"no frames named like {pattern!r} (from index {templates.start_index}) in "
            f"{directory}; pass the name templates this folder was written with",
            list_file,
            line,
        )
    first = directory / (templates.rgb_name(0) if frames else templates.flow_names(0)[0])
    image = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"cannot read image {first}", list_file, line)
    height, width = image.shape[:2]
    return PreparedVideo(video_id, directory, label, frames, min(flow_x, flow_y), width, height)
