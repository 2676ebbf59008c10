"""`vidistill pipeline`: prepare -> flow teacher -> Prob-Distill student (and an RGB baseline) -> evaluation."""
from __future__ import annotations

import click

from vidistill.platform.cli.common import _maybe_start_dispatcher, _print_json, _queue
from vidistill.platform.kinds import ConfigError
from vidistill.platform.queue import JobNotFound


@click.command("pipeline")
@click.option("--root", required=True, help="Source data set folder (videos and split lists).")
@click.option("--prepared", required=True, help="Folder for its frames and flow (prepared here unless --no-prepare).")
@click.option("--layout", default="generic", show_default=True, help="ucf101 | hmdb51 | egtea | ssv2 | generic.")
@click.option("--split", type=click.IntRange(1, 3), default=1, show_default=True, help="Official split.")
@click.option("--prepare/--no-prepare", "prepare", default=True, show_default=True,
              help="Submit a prepare job first; --no-prepare when the folder is prepared already.")
@click.option("--flow", type=click.Choice(["tvl1", "farneback"]), default="tvl1", show_default=True,
              help="Optical flow of the prepare job: tvl1 (the paper's) or farneback (~80x faster on a CPU).")
@click.option("--bound", type=float, default=20.0, show_default=True, help="Flow clipping bound in pixels.")
@click.option("--size", default="320x256", show_default=True, help="Prepared frame size WIDTHxHEIGHT.")
@click.option("--train-config", type=click.Path(exists=True, dir_okay=False),
              help="YAML/TOML training config used by every training job.")
@click.option("--set", "common", multiple=True, metavar="KEY=VALUE",
              help="Override for every training job, e.g. --set epochs=10 --set model.name=i3d_small.")
@click.option("--teacher-set", multiple=True, metavar="KEY=VALUE", help="Override for the flow teacher only.")
@click.option("--student-set", multiple=True, metavar="KEY=VALUE",
              help="Override for the student only, e.g. --student-set distill.lambda1=2.")
@click.option("--rgb-set", multiple=True, metavar="KEY=VALUE",
              help="Override for the RGB baseline only  [default: model.attention=none, plain I3D].")
@click.option("--no-rgb", is_flag=True, help="Skip the RGB baseline (and its evaluation).")
@click.option("--priority", type=int, default=0, show_default=True, help="Priority of every job.")
@click.option("--owner", default=None, help="Owner recorded on the jobs [default: your user name].")
@click.option("--json", "as_json", is_flag=True, help="Print the job ids and model URIs as JSON.")
def pipeline(root, prepared, layout, split, prepare, flow, bound, size, train_config, common, teacher_set,
             student_set, rgb_set, no_rgb, priority, owner, as_json) -> None:
    """Submit the whole method as dependent jobs in one call.

    \b
      prepare ──> train-teacher ──> distill ──┬──> evaluate: student, teacher, RGB,
          └─────> train-rgb ──────────────────┘    student + teacher, RGB + teacher

    The student distils from the teacher this pipeline trains: its URI is
    models:/<data>-teacher-flow@job-<teacher job id>, the alias the teacher job
    puts on the version it registers. Every config is checked before anything is
    submitted. Watch with `vidistill jobs list` and `vidistill jobs logs ID -f`;
    results are in MLflow (`vidistill ui`).

    \b
    Example (a CPU-sized run on the synthetic benchmark):
      vidistill datasets make-synthetic /tmp/motion
      vidistill pipeline --root /tmp/motion --prepared /tmp/motion-frames \\
          --flow farneback --bound 4 --size 112x96 \\
          --set model.name=i3d_tiny --set data.clip_length=16 --set data.crop_size=80 \\
          --set batch_size=16 --set epochs=10
    """
    from vidistill.platform.cli.datasets import _size
    from vidistill.platform.pipeline import PipelineSpec, submit_pipeline

    width, height = _size(size)
    spec = PipelineSpec(
        root=root, prepared=prepared, layout=layout, split=split, prepare=prepare,
        prepare_options={"flow": flow, "bound": bound, "width": width, "height": height},
        train_config=train_config, common=list(common), teacher=list(teacher_set), student=list(student_set),
        rgb=None if no_rgb else (list(rgb_set) or ["model.attention=none"]),
        priority=priority, owner=owner)
    queue = _queue()
    try:
        jobs = submit_pipeline(queue, spec)
    except (ConfigError, JobNotFound) as error:
        raise click.UsageError(str(error)) from None
    if as_json:
        _print_json(jobs.to_dict())
    else:
        steps = [("prepare", jobs.prepare, spec.prepared), ("train-teacher", jobs.teacher, jobs.teacher_uri),
                 ("train-rgb", jobs.rgb, jobs.rgb_uri), ("distill", jobs.student, jobs.student_uri),
                 ("evaluate", jobs.evaluate, "each model and the two-stream fusions")]
        for kind, job_id, what in steps:
            if job_id is not None:
                click.echo(f"{job_id:>6}  {kind:<14} {what}")
        click.echo(f"watch: vidistill jobs list   |   vidistill jobs logs {jobs.teacher} --follow")
    _maybe_start_dispatcher(queue.settings)
