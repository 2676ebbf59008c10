"""Dataset layouts: which videos a dataset has, their labels, and their official splits.

A layout is selected by a small config::

    DatasetConfig(root="/data/ucf101", layout="ucf101", split=1)
    list_videos(config, "train")  -> Listing(classes=(...), videos=(VideoItem, ...))

Supported layouts and where they expect things (``annotations`` and ``videos`` override the
folders below, relative paths are taken from ``root``):

``ucf101``   videos ``<root>/<Class>/v_*.avi``; split files ``<root>/ucfTrainTestlist/``
             (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``), splits 1-3.
``hmdb51``   videos ``<root>/<class>/*.avi``; split files ``<root>/testTrainMulti_7030_splits/``
             (``<class>_test_splitN.txt``: ``video.avi 1|2|0`` = train|test|unused), splits 1-3.
``egtea``    EGTEA Gaze+ clips ``<root>/cropped_clips/<session>/<clip>.mp4``; action annotation
             lists ``<root>/action_annotation/`` (``action_idx.txt``, ``train_splitN.txt``,
             ``test_splitN.txt``: ``clip action verb noun``, 1-based), splits 1-3.
``ssv2``     Something-Something V2 videos ``<root>/20bn-something-something-v2/<id>.webm``;
             JSON label files ``<root>/labels/something-something-v2-{labels,train,validation}.json``.
``generic``  one folder per class ``<root>/<class>/<video>``; optional list files
             ``<root>/<subset>.txt`` of ``path label`` lines (label: class index or name) and
             ``<root>/classes.txt`` (one class name per line, line order = index). Without list
             files the single subset ``all`` holds every video in the class folders.

A video's ``video_id`` is its path relative to the videos folder without the extension; it is
also the folder name of its extracted frames (the MMAction2 rawframes layout).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vidistill.datasets.errors import DatasetError

VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")


@dataclass(frozen=True)
class DatasetConfig:
    """Which dataset, in which layout, which official split (1-3 where the dataset has them)."""

    root: Path
    layout: str
    split: int = 1
    annotations: Path | None = None  # folder of split/label files; default depends on layout
    videos: Path | None = None  # folder the video paths are relative to; default depends on layout

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        for name in ("annotations", "videos"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, self.root / value)

    @classmethod
    def from_dict(cls, data: dict, source: Path | str = "<config>") -> "DatasetConfig":
        known = {"root", "layout", "split", "annotations", "videos"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DatasetError(
                f"unknown dataset config keys {unknown}; known keys are {sorted(known)}", source
            )
        if "root" not in data or "layout" not in data:
            raise DatasetError("a dataset config needs `root` and `layout`", source)
        return cls(**data)


@dataclass(frozen=True)
class VideoItem:
    """One video of a listing."""

    path: Path  # absolute path of the encoded video file
    video_id: str  # path relative to the videos folder, no extension, '/'-separated
    label: int  # 0-based class index
    subset: str


@dataclass(frozen=True)
class Listing:
    """The videos of one subset of one split, with the dataset's class names."""

    classes: tuple[str, ...]
    subset: str
    videos: tuple[VideoItem, ...]

    def counts_per_class(self) -> dict[str, int]:
        counts = Counter(v.label for v in self.videos)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}


@dataclass(frozen=True)
class _Layout:
    subsets: Callable[[DatasetConfig], tuple[str, ...]]
    listing: Callable[[DatasetConfig, str], Listing]
    default_annotations: str
    default_videos: str
    has_splits: bool


_LAYOUTS: dict[str, _Layout] = {}


def layout_names() -> tuple[str, ...]:
    return tuple(sorted(_LAYOUTS))


def subsets(config: DatasetConfig) -> tuple[str, ...]:
    """The subsets (``train``, ``test``...) of the config's split."""
    return _layout(config).subsets(config)


def list_videos(config: DatasetConfig, subset: str) -> Listing:
    """The videos of one subset; raises DatasetError naming the file and line of bad input."""
    layout = _layout(config)
    _check_root(config)
    available = layout.subsets(config)
    if subset not in available:
        raise DatasetError(
            f"layout {config.layout!r} has no subset {subset!r}; choose one of {list(available)}"
        )
    return layout.listing(config, subset)


def list_all_videos(config: DatasetConfig) -> Listing:
    """Every video of every subset of the split, each once (for preparation)."""
    seen: dict[str, VideoItem] = {}
    classes: tuple[str, ...] = ()
    for subset in subsets(config):
        listing = list_videos(config, subset)
        classes = listing.classes
        for video in listing.videos:
            seen.setdefault(video.video_id, video)
    return Listing(classes=classes, subset="all", videos=tuple(seen.values()))


def describe(config: DatasetConfig) -> dict:
    """Classes and per-class video counts of every subset, as plain data (for `--json`)."""
    listings = {subset: list_videos(config, subset) for subset in subsets(config)}
    classes = next(iter(listings.values())).classes if listings else ()
    return {
        "root": str(config.root),
        "layout": config.layout,
        "split": config.split if _layout(config).has_splits else None,
        "classes": list(classes),
        "subsets": {
            subset: {"videos": len(listing.videos), "per_class": listing.counts_per_class()}
            for subset, listing in listings.items()
        },
    }


# --- shared helpers -------------------------------------------------------------------------


def _layout(config: DatasetConfig) -> _Layout:
    if config.layout not in _LAYOUTS:
        raise DatasetError(
            f"unknown layout {config.layout!r}; choose one of {list(layout_names())}"
        )
    return _LAYOUTS[config.layout]


def _check_root(config: DatasetConfig) -> None:
    if not config.root.is_dir():
        raise DatasetError(
            "dataset root does not exist or is not a folder; point --root at the dataset",
            config.root,
        )


def _annotations(config: DatasetConfig) -> Path:
    return config.annotations or config.root / _layout(config).default_annotations


def _videos(config: DatasetConfig) -> Path:
    return config.videos or config.root / _layout(config).default_videos


def _check_split(config: DatasetConfig) -> None:
    if config.split not in (1, 2, 3):
        raise DatasetError(
            f"layout {config.layout!r} has official splits 1, 2 and 3, not {config.split}"
        )


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(
            f"{what} not found; check the dataset root, or pass its folder as annotations", path
        )
    return path


def _numbered_lines(path: Path):
    """(line number, stripped text) of the non-blank lines of a text file."""
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            text = text.strip()
            if text:
                yield number, text


class _VideoFinder:
    """Resolves relative video paths, listing each folder once (SSv2 has 220k files), and
    tolerating case differences that the official lists have (UCF101 `HandStandPushups`)."""

    def __init__(self, videos: Path):
        self.videos = videos
        self._folders: dict[Path, dict[str, str]] = {}

    def find(self, relative: str) -> Path | None:
        path = self.videos / relative
        names = self._names(path.parent)
        name = names.get(path.name) or names.get(path.name.lower())
        return path.parent / name if name else None

    def find_stem(self, folder: str, stem: str) -> Path | None:
        """A video named ``stem`` with any video extension in ``folder``."""
        names = self._names(self.videos / folder)
        for extension in VIDEO_EXTENSIONS:
            name = names.get(stem + extension)
            if name:
                return self.videos / folder / name
        return None

    def _names(self, folder: Path) -> dict[str, str]:
        if folder not in self._folders:
            try:
                entries = os.listdir(folder)
            except OSError:
                entries = []
            names = {name.lower(): name for name in entries}
            names.update({name: name for name in entries})
            self._folders[folder] = names
        return self._folders[folder]


def _video_id(path: Path, videos: Path) -> str:
    return path.relative_to(videos).with_suffix("").as_posix()


def _missing_video(list_file: Path, line: int, relative: str, videos: Path) -> DatasetError:
    return DatasetError(
        f"names video {relative!r}, which is not under {videos}; restore the file, or remove "
        "the line if the video is gone for good",
        list_file,
        line,
    )


def _register(name: str, **fields) -> Callable:
    def decorate(listing: Callable[[DatasetConfig, str], Listing]) -> Callable:
        _LAYOUTS[name] = _Layout(listing=listing, **fields)
        return listing

    return decorate


# --- UCF101 ---------------------------------------------------------------------------------


def _ucf_classes(annotations: Path) -> tuple[str, ...]:
    path = _require_file(annotations / "classInd.txt", "UCF101 class index classInd.txt")
    classes = []
    for line, text in _numbered_lines(path):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise DatasetError(
                f"expected `{len(classes) + 1} ClassName`, got {text!r}", path, line
            )
        classes.append(parts[1])
    return tuple(classes)


@_register(
    "ucf101",
    subsets=lambda config: ("train", "test"),
    default_annotations="ucfTrainTestlist",
    default_videos="",
    has_splits=True,
)
def _list_ucf101(config: DatasetConfig, subset: str) -> Listing:
    _check_split(config)
    annotations, videos = _annotations(config), _videos(config)
    classes = _ucf_classes(annotations)
    index = {name.lower(): i for i, name in enumerate(classes)}
    list_file = _require_file(
        annotations / f"{subset}list0{config.split}.txt", f"UCF101 {subset} list"
    )
    finder = _VideoFinder(videos)
    items = []
    for line, text in _numbered_lines(list_file):
        parts = text.split()
        relative = parts[0]
        class_name = relative.split("/")[0].lower()
        if len(parts) > 2 or "/" not in relative or class_name not in index:
            raise DatasetError(
                f"expected `ClassName/video.avi [label]` with a class of classInd.txt, got {text!r}",
                list_file,
                line,
            )
        label = index[class_name]
        if len(parts) == 2 and parts[1] != str(label + 1):
            raise DatasetError(
                f"label {parts[1]} disagrees with the class folder {relative.split('/')[0]} "
                f"(class {label + 1} in classInd.txt); fix the list file",
                list_file,
                line,
            )
        path = finder.find(relative)
        if path is None:
            raise _missing_video(list_file, line, relative, videos)
        items.append(VideoItem(path, _video_id(path, videos), label, subset))
    return Listing(classes, subset, tuple(items))


# --- HMDB51 ---------------------------------------------------------------------------------

_HMDB_SUFFIX = "_test_split{}.txt"


def _hmdb_split_files(annotations: Path, split: int) -> dict[str, Path]:
    if not annotations.is_dir():
        raise DatasetError(
            "HMDB51 split folder not found; unpack test_train_splits.rar there or pass "
            "annotations",
            annotations,
        )
    suffix = _HMDB_SUFFIX.format(split)
    files = {p.name[: -len(suffix)]: p for p in annotations.glob("*" + suffix)}
    if not files:
        raise DatasetError(f"no `<class>{suffix}` split files in this folder", annotations)
    return dict(sorted(files.items()))


@_register(
    "hmdb51",
    subsets=lambda config: ("train", "test"),
    default_annotations="testTrainMulti_7030_splits",
    default_videos="",
    has_splits=True,
)
def _list_hmdb51(config: DatasetConfig, subset: str) -> Listing:
    _check_split(config)
    videos = _videos(config)
    split_files = _hmdb_split_files(_annotations(config), config.split)
    classes = tuple(split_files)
    wanted = {"train": "1", "test": "2"}[subset]
    finder = _VideoFinder(videos)
    items = []
    for label, (class_name, split_file) in enumerate(split_files.items()):
        for line, text in _numbered_lines(split_file):
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetError(
                    f"expected `video.avi 0|1|2` (unused|train|test), got {text!r}",
                    split_file,
                    line,
                )
            if parts[1] != wanted:
                continue
            relative = f"{class_name}/{parts[0]}"
            path = finder.find(relative)
            if path is None:
                raise _missing_video(split_file, line, relative, videos)
            items.append(VideoItem(path, _video_id(path, videos), label, subset))
    return Listing(classes, subset, tuple(items))


# --- EGTEA Gaze+ ----------------------------------------------------------------------------


def _egtea_classes(annotations: Path) -> tuple[str, ...]:
    path = _require_file(annotations / "action_idx.txt", "EGTEA action index action_idx.txt")
    named: dict[int, str] = {}
    for line, text in _numbered_lines(path):
        name, _, number = text.rpartition(" ")
        if not name or not number.isdigit():
            raise DatasetError(f"expected `action name N`, got {text!r}", path, line)
        named[int(number)] = name
    if sorted(named) != list(range(1, len(named) + 1)):
        raise DatasetError("action numbers must run 1..N without gaps", path)
    return tuple(named[i] for i in range(1, len(named) + 1))


@_register(
    "egtea",
    subsets=lambda config: ("train", "test"),
    default_annotations="action_annotation",
    default_videos="cropped_clips",
    has_splits=True,
)
def _list_egtea(config: DatasetConfig, subset: str) -> Listing:
    _check_split(config)
    annotations, videos = _annotations(config), _videos(config)
    classes = _egtea_classes(annotations)
    list_file = _require_file(
        annotations / f"{subset}_split{config.split}.txt", f"EGTEA {subset} list"
    )
    finder = _VideoFinder(videos)
    items = []
    for line, text in _numbered_lines(list_file):
        parts = text.split()
        if len(parts) < 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
            raise DatasetError(
                f"expected `clip_name action verb noun` with action in 1..{len(classes)}, "
                f"got {text!r}",
                list_file,
                line,
            )
        clip = parts[0]
        session = "-".join(clip.split("-")[:3])  # OP01-R01-PastaSalad-<start>-<end>-F..-F..
        path = finder.find_stem(session, clip)
        if path is None:
            raise _missing_video(list_file, line, f"{session}/{clip}.mp4", videos)
        items.append(VideoItem(path, _video_id(path, videos), int(parts[1]) - 1, subset))
    return Listing(classes, subset, tuple(items))


# --- Something-Something V2 -----------------------------------------------------------------

_SSV2_FILES = {"train": "train", "validation": "validation"}


def _load_json(path: Path, what: str):
    _require_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"not valid JSON ({error.msg}); re-download it", path, error.lineno)


@_register(
    "ssv2",
    subsets=lambda config: tuple(_SSV2_FILES),
    default_annotations="labels",
    default_videos="20bn-something-something-v2",
    has_splits=False,
)
def _list_ssv2(config: DatasetConfig, subset: str) -> Listing:
    annotations, videos = _annotations(config), _videos(config)
    labels_file = annotations / "something-something-v2-labels.json"
    labels = _load_json(labels_file, "SSv2 label file")
    classes = tuple(name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1])))
    index = {name: int(number) for name, number in labels.items()}
    list_file = annotations / f"something-something-v2-{_SSV2_FILES[subset]}.json"
    entries = _load_json(list_file, f"SSv2 {subset} file")
    finder = _VideoFinder(videos)
    items = []
    for position, entry in enumerate(entries):
        # the JSON is one list; name the entry by position since lines are not stable
        template = str(entry.get("template", "")).replace("[", "").replace("]", "")
        if "id" not in entry or template not in index:
            raise DatasetError(
                f"entry {position} ({entry.get('id', '?')}) has no id or a template that is "
                f"not in {labels_file.name}: {template!r}",
                list_file,
            )
        path = finder.find_stem("", str(entry["id"]))
        if path is None:
            raise DatasetError(
                f"entry {position} names video {entry['id']!r}, which is not under {videos}; "
                "restore it or remove the entry",
                list_file,
            )
        items.append(VideoItem(path, _video_id(path, videos), index[template], subset))
    return Listing(classes, subset, tuple(items))


# --- generic: class folders, optional list files ---------------------------------------------

_RESERVED_LISTS = {"classes.txt"}


def _generic_list_files(config: DatasetConfig) -> dict[str, Path]:
    annotations = _annotations(config)
    if not annotations.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(annotations.glob("*.txt"))
        if p.name not in _RESERVED_LISTS
    }


def _generic_subsets(config: DatasetConfig) -> tuple[str, ...]:
    return tuple(_generic_list_files(config)) or ("all",)


def _generic_classes(config: DatasetConfig) -> tuple[str, ...]:
    classes_file = _annotations(config) / "classes.txt"
    if classes_file.is_file():
        return tuple(text for _, text in _numbered_lines(classes_file))
    videos = _videos(config)
    return tuple(sorted(p.name for p in videos.iterdir() if p.is_dir()))


@_register(
    "generic",
    subsets=_generic_subsets,
    default_annotations="",
    default_videos="",
    has_splits=False,
)
def _list_generic(config: DatasetConfig, subset: str) -> Listing:
    videos = _videos(config)
    classes = _generic_classes(config)
    if not classes:
        raise DatasetError(
            "no class folders and no classes.txt; put videos in one folder per class", videos
        )
    index = {name: i for i, name in enumerate(classes)}
    if subset == "all":
        for name in classes:
            if not (videos / name).is_dir():
                raise DatasetError(
                    f"class {name!r} of classes.txt has no folder {videos / name}; add the folder "
                    "or remove the class",
                    _annotations(config) / "classes.txt",
                )
        items = [
            VideoItem(path, _video_id(path, videos), index[path.parent.name], subset)
            for name in classes
            for path in sorted((videos / name).iterdir())
            if path.suffix.lower() in VIDEO_EXTENSIONS
        ]
        return Listing(classes, subset, tuple(items))
    list_file = _generic_list_files(config)[subset]
    finder = _VideoFinder(videos)
    items = []
    for line, text in _numbered_lines(list_file):
        relative, _, label_text = text.rpartition(" ")
        relative = relative.strip()
        if label_text.isdigit() and int(label_text) < len(classes):
            label = int(label_text)
        elif label_text in index:
            label = index[label_text]
        else:
            raise DatasetError(
                f"expected `path label` with a label in 0..{len(classes) - 1} or a class name, "
                f"got {text!r}",
                list_file,
                line,
            )
        path = finder.find(relative) if relative else None
        if path is None:
            raise _missing_video(list_file, line, relative, videos)
        items.append(VideoItem(path, _video_id(path, videos), label, subset))
    return Listing(classes, subset, tuple(items))

# Detection layouts (thumos14, activitynet, charades) register themselves here.
from vidistill.datasets.detection import annotations as _detection_layouts  # noqa: E402,F401
