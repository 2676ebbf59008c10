"""`vidistill datasets ...`: describe a dataset, prepare frames + flow, make the synthetic benchmark."""
from __future__ import annotations

import json
from pathlib import Path

import click

from vidistill.platform.cli.common import text_table


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 320x256, got {text!r}") from None
    return width, height


def _dataset_options(command):
    """--root/--layout/--split/... or --config FILE, shared by describe and prepare."""
    from vidistill.datasets.layouts import layout_names

    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="YAML file with root, layout, split, annotations, videos (options override it)."),
        click.option("--root", type=click.Path(path_type=Path), help="Dataset folder."),
        click.option("--layout", type=click.Choice(layout_names()), help="How the dataset is organised."),
        click.option("--split", type=int, help="Official split 1-3 (UCF101, HMDB51, EGTEA).  [default: 1]"),
        click.option("--annotations", type=click.Path(path_type=Path),
                     help="Folder of split/label files, if not the layout's default place."),
        click.option("--videos", type=click.Path(path_type=Path),
                     help="Folder the listed video paths are relative to, if not the default."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _dataset_config(config_file, root, layout, split, annotations, videos):
    import yaml

    from vidistill.datasets.errors import DatasetError
    from vidistill.datasets.layouts import DatasetConfig

    data: dict = {}
    if config_file is not None:
        try:
            data = yaml.safe_load(config_file.read_text()) or {}
        except OSError as error:
            raise DatasetError(f"cannot read config ({error.strerror})", config_file) from None
        except yaml.YAMLError as error:
            line = getattr(getattr(error, "problem_mark", None), "line", None)
            raise DatasetError(f"not valid YAML: {error}", config_file, line + 1 if line is not None else None) from None
        if not isinstance(data, dict):
            raise DatasetError("expected a mapping of root, layout, split...", config_file)
    given = {"root": root, "layout": layout, "split": split, "annotations": annotations, "videos": videos}
    data.update({key: value for key, value in given.items() if value is not None})
    if "root" not in data or "layout" not in data:
        raise click.UsageError("give --root and --layout (or a --config file with both)")
    return DatasetConfig.from_dict(data, source=config_file or "<options>")


def _errors_as_usage(function):
    """DatasetError -> `Error: <file>:<line>: <what to do>` and exit status 1."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from vidistill.datasets.errors import DatasetError

        try:
            return function(*args, **kwargs)
        except DatasetError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


@click.group("datasets")
def datasets() -> None:
    """Video datasets: list them, prepare frames + optical flow, make a synthetic benchmark.

    \b
    Layouts: ucf101, hmdb51, egtea, ssv2, generic (class folders, optional list files).
    Example:
      vidistill datasets make-synthetic /tmp/motion
      vidistill datasets describe --root /tmp/motion --layout generic
      vidistill datasets prepare --root /tmp/motion --layout generic --out /tmp/motion-frames
    """


@datasets.command("describe")
@_dataset_options
@click.option("--all-splits", is_flag=True, help="Counts of official splits 1, 2 and 3 side by side.")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@_errors_as_usage
def describe_command(config_file, root, layout, split, annotations, videos, all_splits, as_json) -> None:
    """Print the classes and the number of videos per class in each subset of a split.

    Checks every list file on the way: a video a list names but the disk lacks is an error
    naming the list file and line.
    """
    from dataclasses import replace

    from vidistill.datasets.layouts import describe

    config = _dataset_config(config_file, root, layout, split, annotations, videos)
    from vidistill.datasets.detection.annotations import DETECTION_LAYOUTS

    if config.layout in DETECTION_LAYOUTS:
        from vidistill.datasets.detection.describe import print_detection_description

        return print_detection_description(config, as_json, echo=click.echo)
    description = describe(config)
    if all_splits and description["split"] is None:
        raise click.UsageError(f"layout {config.layout!r} has no official splits 1-3")
    splits = (1, 2, 3) if all_splits else (description["split"],)
    per_split = {s: description if s == description["split"] else describe(replace(config, split=s))
                 for s in splits}
    if as_json:
        if all_splits:
            description = {key: description[key] for key in ("root", "layout", "classes")}
            description["splits"] = {str(s): d["subsets"] for s, d in per_split.items()}
        click.echo(json.dumps(description, indent=2))
        return
    columns = [(s, subset) for s, d in per_split.items() for subset in d["subsets"]]
    titles = [f"{subset}/{s}" if all_splits else subset for s, subset in columns]
    split_text = "" if description["split"] is None else (
        ", splits 1-3" if all_splits else f", split {description['split']}")
    click.echo(f"{description['root']}  ({description['layout']}{split_text}, "
               f"{len(description['classes'])} classes)")
    rows = [[index, name, *(per_split[s]["subsets"][subset]["per_class"][name] for s, subset in columns)]
            for index, name in enumerate(description["classes"])]
    rows.append(["", "total", *(per_split[s]["subsets"][subset]["videos"] for s, subset in columns)])
    click.echo(text_table(["#", "class", *titles], rows, indent=2, right=("#", *titles)))
    _warn_empty_classes(description["classes"], [per_split[s]["subsets"][subset] for s, subset in columns])


def _warn_empty_classes(classes: list[str], subsets: list[dict]) -> None:
    """Classes with no video in any subset: often folders that are not classes at all
    (annotations, a THUMOS-style untrimmed set) read as a class-folder set."""
    empty = [name for name in classes if not any(subset["per_class"].get(name) for subset in subsets)]
    if empty:
        click.echo(f"warning: {len(empty)} of {len(classes)} classes have no videos: {', '.join(empty[:10])}"
                   f"{', ...' if len(empty) > 10 else ''}. Is this a folder of class folders? Remove or "
                   "exclude those folders, or pick the data set's --layout", err=True)


def _print_progress(progress) -> None:
    eta = f"{progress.eta_s:.0f} s" if progress.eta_s is not None else "?"
    failed = f", {progress.failed} failed" if progress.failed else ""
    click.echo(
        f"[{progress.done}/{progress.total}] {progress.rate:.2f} videos/s, ETA {eta}{failed}  "
        f"{progress.last}",
        err=True,
    )


@datasets.command("prepare")
@_dataset_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the rawframes and manifest.json (rerun into it to resume).")
@click.option("--subset", default="all", show_default=True,
              help="Which subset of the split to prepare (train, test...); all = every subset.")
@click.option("--flow", "flow_method", type=click.Choice(["tvl1", "farneback", "none"]), default="tvl1",
              show_default=True, help="Optical flow: tvl1 (the paper's), farneback (fast), none.")
@click.option("--flow-backend", type=click.Choice(["auto", "opencv", "torch"]), default="auto", show_default=True,
              help="TV-L1 on: auto = PyTorch on the GPU when there is one, else OpenCV on the CPU "
                   "(the choice is logged and recorded per video in manifest.json).")
@click.option("--bound", default=20.0, show_default=True, help="Flow is clipped to +-bound pixels before quantising.")
@click.option("--fps", default=24.0, show_default=True, help="Frame rate every video is resampled to.")
@click.option("--size", default="320x256", show_default=True, help="Frame size WIDTHxHEIGHT.")
@click.option("--jpeg-quality", default=95, show_default=True)
@click.option("--workers", type=int,
              help="Videos at once: the CPUs of a local Ray (default: all). 1 prepares in this process, "
                   "without starting Ray. With RAY_ADDRESS set: at most that many on the cluster.")
@click.option("--rgb-template", default="img_{:05d}.jpg", show_default=True)
@click.option("--flow-x-template", default="flow_x_{:05d}.jpg", show_default=True)
@click.option("--flow-y-template", default="flow_y_{:05d}.jpg", show_default=True)
@click.option("--start-index", default=1, show_default=True, help="Number of the first frame file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_errors_as_usage
def prepare_command(config_file, root, layout, split, annotations, videos, out, subset, flow_method, flow_backend, bound,
                    fps, size, jpeg_quality, workers, rgb_template, flow_x_template, flow_y_template,
                    start_index, as_json) -> None:
    """Decode every video, resample to 24 fps, resize to 320x256, write JPEG frames and
    quantised optical flow (MMAction2 rawframes layout) plus manifest.json.

    \b
    Runs as parallel Ray tasks (a local Ray, or the cluster at RAY_ADDRESS); with
    --workers 1 and no RAY_ADDRESS, in this process without Ray. Resumable:
    a rerun skips finished videos and redoes half-written ones. Videos that cannot be
    decoded are listed in the manifest with the reason and skipped.
    """
    from vidistill.datasets.layouts import list_all_videos, list_videos
    from vidistill.datasets.prepare import PrepareConfig, prepare_dataset
    from vidistill.datasets.rawframes import FrameTemplates

    config = _dataset_config(config_file, root, layout, split, annotations, videos)
    listing = list_all_videos(config) if subset == "all" else list_videos(config, subset)
    width, height = _size(size)
    prepare_config = PrepareConfig(
        out=out, fps=fps, width=width, height=height,
        flow_method=None if flow_method == "none" else flow_method, flow_bound=bound,
        jpeg_quality=jpeg_quality, workers=workers, flow_backend=flow_backend,
        templates=FrameTemplates(rgb_template, flow_x_template, flow_y_template, start_index),
    )
    click.echo(f"preparing {len(listing.videos)} videos into {out} "
               f"(flow: {flow_method}, {fps:g} fps, {width}x{height})", err=True)
    result = prepare_dataset(listing, prepare_config, progress=_print_progress)
    summary = {
        "out": str(result.out),
        "prepared": len(result.prepared),
        "skipped": len(result.skipped),
        "failed": [{"video_id": f.video_id, "source": f.source, "reason": f.reason} for f in result.failed],
        "manifest": str(result.out / "manifest.json"),
        "manifest_hash": result.manifest_hash,
        "flow_backend": result.flow_backend,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"prepared {summary['prepared']}, skipped {summary['skipped']} finished before, "
                   f"failed {len(result.failed)}" + (f"; flow by {result.flow_backend}" if result.flow_backend else ""))
        for failure in result.failed:
            click.echo(f"  skipped {failure.source}: {failure.reason}")
        click.echo(f"manifest: {summary['manifest']}  ({summary['manifest_hash']})")
    if not result.prepared and not result.skipped:
        # Success means a folder to train on: none is an error, whatever the reasons above.
        raise click.ClickException(f"no video of {config.root} could be prepared"
                                   + ("; see the reasons above" if result.failed else "; none was found"))


@datasets.command("make-synthetic")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--classes", default=4, show_default=True, help="Number of motion patterns (2-8).")
@click.option("--videos-per-class", default=8, show_default=True)
@click.option("--frames", default=48, show_default=True)
@click.option("--size", default="160x120", show_default=True, help="WIDTHxHEIGHT, even numbers.")
@click.option("--fps", default=25.0, show_default=True)
@click.option("--distractors", default=3, show_default=True, help="Still objects that look like the moving one.")
@click.option("--noise", default=0.03, show_default=True, help="Pixel noise std, fraction of 255.")
@click.option("--codec", type=click.Choice(["mpeg4", "h264", "vp9", "mjpeg"]), default="mpeg4", show_default=True)
@click.option("--test-fraction", default=0.25, show_default=True)
@click.option("--seed", default=0, show_default=True)
@_errors_as_usage
def make_synthetic_command(out, classes, videos_per_class, frames, size, fps, distractors, noise, codec,
                           test_fraction, seed) -> None:
    """Write the synthetic motion benchmark: encoded videos whose class is the motion of one
    object among identical still ones (generic layout with train/test lists).

    Deterministic for a seed.
    """
    from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic

    width, height = _size(size)
    config = SyntheticConfig(classes=classes, videos_per_class=videos_per_class, frames=frames, width=width,
                             height=height, fps=fps, distractors=distractors, noise=noise, codec=codec,
                             test_fraction=test_fraction, seed=seed)
    make_synthetic(out, config)
    click.echo(f"wrote {classes * videos_per_class} {codec} videos ({', '.join(config.class_names)}) to {out}")
    import shlex

    click.echo(f"next: vidistill datasets prepare --root {shlex.quote(str(out))} --layout generic "
               f"--out {shlex.quote(f'{out}-frames')}")
