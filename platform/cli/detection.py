"""`vidistill datasets make-untrimmed`: the synthetic temporal action detection benchmark."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("make-untrimmed")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", "preset", type=click.Choice(["tiny", "large"]), default="tiny", show_default=True,
              help="tiny: 12+6 videos of 20-30 s at 96x72, 10 fps (a detector trains on a CPU in minutes); "
                   "large: 200+100 videos of 30-60 s at 320x256, 24 fps, 8 classes (for a GPU).")
@click.option("--classes", type=int, help="Number of motion patterns (1-8)  [default: the size's].")
@click.option("--train-videos", type=int, help="Videos of the `val` subset (trained on, as in THUMOS14).")
@click.option("--test-videos", type=int, help="Videos of the `test` subset.")
@click.option("--seconds", help="Video length range MIN-MAX in seconds, e.g. 20-30.")
@click.option("--seed", default=0, show_default=True)
def make_untrimmed_command(out, preset, classes, train_videos, test_videos, seconds, seed) -> None:
    """Write long videos with short motion-defined actions at random times (some overlapping),
    among still and drifting distractors, with THUMOS14-style annotation files.

    \b
    Example:
      vidistill datasets make-untrimmed /tmp/untrimmed
      vidistill datasets describe --root /tmp/untrimmed --layout thumos14
      vidistill datasets prepare --root /tmp/untrimmed --layout thumos14 --out /tmp/untrimmed-frames
    """
    from vidistill.datasets.detection.synthetic import make_untrimmed, untrimmed_config
    from vidistill.datasets.errors import DatasetError

    overrides: dict = {"seed": seed}
    for key, value in (("classes", classes), ("train_videos", train_videos), ("test_videos", test_videos)):
        if value is not None:
            overrides[key] = value
    if seconds:
        try:
            low, high = (float(part) for part in seconds.split("-"))
        except ValueError:
            raise click.BadParameter(f"expected MIN-MAX such as 20-30, got {seconds!r}", param_hint="--seconds")
        overrides.update(min_seconds=low, max_seconds=high)
    try:
        make_untrimmed(out, untrimmed_config(preset, **overrides))
    except DatasetError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {out}  (layout thumos14: subsets val and test)")


def detection_pipeline_options(command):
    """The options `vidistill pipeline --task detection` adds."""
    options = [
        click.option("--task", type=click.Choice(["recognition", "detection"]), default="recognition",
                     show_default=True, help="detection: untrimmed videos -> snippet features -> RGB, flow and "
                                             "two-stream detectors -> mAP per tIoU (see below)."),
        click.option("--features", "det_features", help="[detection] Folder for the feature folders rgb/ and flow/ "
                                                        "[default: <prepared>-features]."),
        click.option("--rgb-model", "det_rgb_model", help="[detection] RGB feature model URI (else trained)."),
        click.option("--flow-model", "det_flow_model", help="[detection] Flow feature model URI (else trained)."),
        click.option("--recognition-root", "det_recognition_root",
                     help="[detection] Trimmed set (generic layout) to train the feature models on."),
        click.option("--detector-set", "det_detector_set", multiple=True, metavar="KEY=VALUE",
                     help="[detection] Detector config override, e.g. epochs=40."),
        click.option("--protocol", "det_protocol", type=click.Choice(["thumos14", "activitynet", "low"]),
                     default="thumos14", show_default=True, help="[detection] tIoU thresholds of the evaluation."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def submit_detection_from_cli(queue, root, prepared, layout, prepare, prepare_options, common, priority, owner,
                              det_features, det_rgb_model, det_flow_model, det_recognition_root, det_detector_set,
                              det_protocol):
    from vidistill.platform.detection_pipeline import DetectionPipelineSpec, submit_detection_pipeline

    spec = DetectionPipelineSpec(
        root=root, prepared=prepared, features=det_features or f"{prepared.rstrip('/')}-features",
        layout=layout if layout != "generic" else "thumos14", prepare=prepare, prepare_options=prepare_options,
        rgb_model=det_rgb_model, flow_model=det_flow_model, recognition_root=det_recognition_root,
        recognition_prepare_options=prepare_options, recognition_set=list(common),
        detector_set=list(det_detector_set), protocol=det_protocol, priority=priority, owner=owner)
    return submit_detection_pipeline(queue, spec)
