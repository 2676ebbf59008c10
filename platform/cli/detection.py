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
