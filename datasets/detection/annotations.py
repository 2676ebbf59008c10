"""Temporal annotations of untrimmed videos, read from the files the data sets ship.

Three layouts, registered beside the recognition ones (so `vidistill datasets describe` and
`datasets prepare` take them as ``--layout``):

``thumos14``     per-class files ``<Class>_val.txt`` / ``<Class>_test.txt`` of lines
                 ``video_validation_0000051 67.5 75.9`` (seconds), anywhere under the
                 annotations folder (default: the root; the official archives unpack into
                 ``TH14_Temporal_annotations_validation/annotation/`` and
                 ``TH14_Temporal_Annotations_Test/annotations/annotation/``).
                 ``Ambiguous_*.txt`` marks unclear stretches, not a class: it is not read.
                 Subsets ``val`` (trained on, by convention) and ``test``. The test videos
                 ``video_test_0000270`` and ``video_test_0001292`` are excluded, as ActionFormer,
                 TriDet and OpenTAD do: their annotations are known to be wrong.
``activitynet``  ActivityNet-1.3 JSON (ActionFormer's JSON has the same shape)::
                     {"database": {"<id>": {"subset": "training", "duration": 82.7,
                      "annotations": [{"segment": [3.1, 20.5], "label": "Long jump"}]}}}
                 Subsets as the JSON names them (training, validation, testing).
``charades``     Charades CSV ``Charades_v1_{train,test}.csv`` (columns id, ..., actions, length)
                 whose ``actions`` field is ``c092 11.90 21.20;c147 0.00 12.60``; class names
                 from ``Charades_v1_classes.txt`` (``c092 Holding a laptop``) when present.
                 Frame-level multi-label: actions overlap freely. Subsets ``train`` and ``test``.

Videos are found under the videos folder (default: the root) by file stem, ``v_<id>`` too
(ActivityNet's downloads); an annotated video missing on disk is counted, not an error, since
these sets are downloaded incompletely as a rule.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from vidistill.datasets import layouts
from vidistill.datasets.errors import DatasetError
from vidistill.datasets.layouts import VIDEO_EXTENSIONS, DatasetConfig, Listing, VideoItem

THUMOS14_EXCLUDED = ("video_test_0000270", "video_test_0001292")
DETECTION_LAYOUTS = ("thumos14", "activitynet", "charades")


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    label: int


@dataclass(frozen=True)
class UntrimmedVideo:
    video_id: str
    subset: str
    segments: tuple[Segment, ...]
    duration: float | None = None  # seconds, where the annotations give it
    path: Path | None = None  # the video file, None when not on disk


@dataclass(frozen=True)
class DetectionSet:
    """The annotated videos of one subset, with the class names and what was left out and why."""

    layout: str
    subset: str
    classes: tuple[str, ...]
    videos: tuple[UntrimmedVideo, ...]
    excluded: tuple[str, ...] = ()
    note: str = ""

    def by_id(self) -> dict[str, UntrimmedVideo]:
        return {v.video_id: v for v in self.videos}


def read_detection_set(config: DatasetConfig, subset: str) -> DetectionSet:
    """The annotations of one subset of a detection layout; DatasetError names bad input."""
    if config.layout not in _READERS:
        raise DatasetError(f"layout {config.layout!r} has no temporal annotations; "
                           f"choose one of {list(DETECTION_LAYOUTS)}")
    if not config.root.is_dir():
        raise DatasetError("dataset root does not exist or is not a folder; point --root at the dataset",
                           config.root)
    subsets_, read = _READERS[config.layout]
    available = subsets_(config)
    if subset not in available:
        raise DatasetError(f"layout {config.layout!r} has no subset {subset!r} here; choose one of {list(available)}")
    return read(config, subset)


def detection_subsets(config: DatasetConfig) -> tuple[str, ...]:
    return _READERS[config.layout][0](config)


def describe_detection(config: DatasetConfig) -> dict:
    """Classes, and per subset: videos annotated / on disk, instances per class, excluded videos."""
    out = {"root": str(config.root), "layout": config.layout, "classes": [], "subsets": {}}
    for subset in detection_subsets(config):
        found = read_detection_set(config, subset)
        out["classes"] = list(found.classes)
        counts = Counter(s.label for v in found.videos for s in v.segments)
        out["subsets"][subset] = {
            "videos": len(found.videos), "on_disk": sum(v.path is not None for v in found.videos),
            "instances": sum(counts.values()),
            "per_class": {name: counts.get(i, 0) for i, name in enumerate(found.classes)},
            "excluded": list(found.excluded), "note": found.note}
    return out


# --- finding files ---------------------------------------------------------------------------


def _annotations(config: DatasetConfig) -> Path:
    return config.annotations or config.root


def _video_index(config: DatasetConfig) -> dict[str, Path]:
    """stem -> file for every video file under the videos folder (also `v_<id>` -> `<id>`)."""
    index: dict[str, Path] = {}
    for path in sorted((config.videos or config.root).rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            index.setdefault(path.stem, path)
            if path.stem.startswith("v_"):
                index.setdefault(path.stem[2:], path)
    return index


def _seconds(text: str, path: Path, line: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{what} {text!r} is not a number of seconds", path, line) from None
    if value < 0:
        raise DatasetError(f"{what} {value} is negative", path, line)
    return value


def _segment(start: float, end: float, label: int, path: Path, line: int | None) -> Segment:
    if end <= start:
        raise DatasetError(f"segment [{start}, {end}] ends before it starts; fix or remove the line", path, line)
    return Segment(start, end, label)


# --- THUMOS14 --------------------------------------------------------------------------------

_THUMOS_SUFFIX = {"val": "_val.txt", "test": "_test.txt"}


def _thumos_files(config: DatasetConfig, subset: str) -> dict[str, Path]:
    suffix = _THUMOS_SUFFIX[subset]
    files = {p.name[: -len(suffix)]: p for p in sorted(_annotations(config).rglob(f"*{suffix}"))}
    files.pop("Ambiguous", None)
    return files


def _thumos_subsets(config: DatasetConfig) -> tuple[str, ...]:
    return tuple(s for s in _THUMOS_SUFFIX if _thumos_files(config, s))


def _read_thumos14(config: DatasetConfig, subset: str) -> DetectionSet:
    # Classes from both subsets, sorted, so val and test share the label order.
    classes = tuple(sorted(set().union(*(_thumos_files(config, s) for s in _thumos_subsets(config)))))
    segments: dict[str, list[Segment]] = {}
    for name, path in _thumos_files(config, subset).items():
        label = classes.index(name)
        with open(path, encoding="utf-8") as handle:
            for line, text in enumerate(handle, start=1):
                parts = text.split()
                if not parts:
                    continue
                if len(parts) != 3:
                    raise DatasetError(f"expected `video start end` (THUMOS14), got {text.strip()!r}", path, line)
                start, end = (_seconds(p, path, line, w) for p, w in zip(parts[1:], ("start", "end")))
                segments.setdefault(parts[0], []).append(_segment(start, end, label, path, line))
    excluded = tuple(v for v in THUMOS14_EXCLUDED if v in segments) if subset == "test" else ()
    index = _video_index(config)
    videos = tuple(
        UntrimmedVideo(vid, subset, tuple(sorted(segs, key=lambda s: (s.start, s.end, s.label))),
                       None, index.get(vid))
        for vid, segs in sorted(segments.items()) if vid not in excluded)
    note = ""
    if subset == "test":
        note = ("test videos 270 and 1292 excluded (known wrong annotations; the ActionFormer/TriDet/OpenTAD "
                "convention)" + ("" if excluded else "; neither is in this set"))
    return DetectionSet("thumos14", subset, classes, videos, excluded, note)


# --- ActivityNet-1.3 -------------------------------------------------------------------------


def _activitynet_json(config: DatasetConfig) -> tuple[Path, dict]:
    folder = _annotations(config)
    candidates = [folder] if folder.is_file() else sorted(folder.glob("*.json"))
    for path in candidates:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("database"), dict):
            return path, data["database"]
    raise DatasetError("no ActivityNet-style JSON (an object with a `database` mapping) here; pass its "
                       "folder or file as --annotations", folder)


def _activitynet_subsets(config: DatasetConfig) -> tuple[str, ...]:
    _, database = _activitynet_json(config)
    return tuple(sorted({entry.get("subset", "") for entry in database.values()} - {""}))


def _read_activitynet(config: DatasetConfig, subset: str) -> DetectionSet:
    path, database = _activitynet_json(config)
    classes = tuple(sorted({a["label"] for e in database.values() for a in e.get("annotations", [])
                            if isinstance(a, dict) and "label" in a}))
    index = _video_index(config)
    videos = []
    for vid, entry in sorted(database.items()):
        if entry.get("subset") != subset:
            continue
        segs = []
        for a in entry.get("annotations", []):
            try:
                (start, end), label = a["segment"], a["label"]
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"video {vid!r}: annotation {a!r} needs `segment: [start, end]` and `label`",
                                   path) from None
            segs.append(_segment(float(start), float(end), classes.index(label), path, None))
        duration = entry.get("duration")
        videos.append(UntrimmedVideo(vid, subset, tuple(segs), float(duration) if duration is not None else None,
                                     index.get(vid)))
    return DetectionSet("activitynet", subset, classes, tuple(videos))


# --- Charades --------------------------------------------------------------------------------

_CHARADES_FILES = {"train": "Charades_v1_train.csv", "test": "Charades_v1_test.csv"}


def _charades_subsets(config: DatasetConfig) -> tuple[str, ...]:
    return tuple(s for s, name in _CHARADES_FILES.items() if (_annotations(config) / name).is_file())


def _read_charades(config: DatasetConfig, subset: str) -> DetectionSet:
    folder = _annotations(config)
    class_file = folder / "Charades_v1_classes.txt"
    codes: list[str] = []
    names: list[str] = []
    if class_file.is_file():
        for text in class_file.read_text(encoding="utf-8").splitlines():
            if text.strip():
                code, _, name = text.strip().partition(" ")
                codes.append(code)
                names.append(name or code)
    path = folder / _CHARADES_FILES[subset]
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "actions"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"Charades CSV needs columns id and actions; missing {sorted(missing)}", path, 1)
        for line, row in enumerate(reader, start=2):
            actions = []
            for item in filter(None, (row["actions"] or "").split(";")):
                parts = item.split()
                if len(parts) != 3:
                    raise DatasetError(f"action {item!r} is not `cNNN start end`", path, line)
                actions.append((parts[0], _seconds(parts[1], path, line, "start"),
                                _seconds(parts[2], path, line, "end")))
            rows.append((line, row, actions))
    if not codes:  # no class file: the codes seen, sorted (c000, c001, ...)
        codes = sorted({code for _, _, actions in rows for code, _, _ in actions})
        names = list(codes)
    index = _video_index(config)
    videos = []
    for line, row, actions in rows:
        segs = []
        for code, start, end in actions:
            if code not in codes:
                raise DatasetError(f"action class {code!r} is not in {class_file.name}", path, line)
            if end > start:  # Charades has a few zero-length actions; they cover no frame
                segs.append(Segment(start, end, codes.index(code)))
        length = row.get("length")
        videos.append(UntrimmedVideo(row["id"], subset, tuple(segs), float(length) if length else None,
                                     index.get(row["id"])))
    return DetectionSet("charades", subset, tuple(names), tuple(videos))


_READERS = {
    "thumos14": (_thumos_subsets, _read_thumos14),
    "activitynet": (_activitynet_subsets, _read_activitynet),
    "charades": (_charades_subsets, _read_charades),
}


# --- as recognition layouts, so `datasets prepare` takes them --------------------------------


def _listing(config: DatasetConfig, subset: str) -> Listing:
    """The videos on disk; a video's label is its most frequent action (prepare records it only)."""
    found = read_detection_set(config, subset)
    items = []
    for video in found.videos:
        if video.path is None:
            continue
        labels = Counter(s.label for s in video.segments).most_common(1)
        items.append(VideoItem(video.path, video.video_id, labels[0][0] if labels else 0, subset))
    return Listing(found.classes, subset, tuple(items))


for _name, (_subsets, _) in _READERS.items():
    layouts._register(_name, subsets=_subsets, default_annotations="", default_videos="",
                      has_splits=False)(_listing)
