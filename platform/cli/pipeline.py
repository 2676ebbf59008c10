"""`vidistill pipeline`: prepare -> flow teacher -> Prob-Distill student (and an RGB baseline) -> evaluation."""
from __future__ import annotations

import click

from vidistill.platform.cli.common import _maybe_start_dispatcher, _print_json, _queue
from vidistill.platform.cli.detection import detection_pipeline_options, submit_detection_from_cli
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
@detection_pipeline_options
def pipeline(root, prepared, layout, split, prepare, flow, bound, size, train_config, common, teacher_set,
             student_set, rgb_set, no_rgb, priority, owner, as_json, task, **detection) -> None:
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

    \b
    --task detection (untrimmed videos, THUMOS14 layout by default):
      prepare ─> extract-features rgb/flow ─> train-detector rgb, flow, rgb+flow ─> evaluate-detectors
    with the feature models given (--rgb-model, --flow-model) or trained first (train-rgb,
    train-teacher) on a trimmed set (--recognition-root; --set applies to them).
      vidistill datasets make-untrimmed /tmp/untrimmed
      vidistill datasets make-synthetic /tmp/motion --fps 10 --size 96x72
      vidistill pipeline --task detection --root /tmp/untrimmed --prepared /tmp/untrimmed-frames \\
          --recognition-root /tmp/motion --flow farneback --bound 4 --size 96x72 \\
          --set model.name=i3d_tiny --set data.crop_size=64 --set epochs=10
    """
    from vidistill.platform.cli.datasets import _size
    from vidistill.platform.pipeline import PipelineSpec, submit_pipeline

    width, height = _size(size)
    if task == "detection":
        queue = _queue()
        try:
            jobs = submit_detection_from_cli(
                queue, root, prepared, layout, prepare, {"flow": flow, "bound": bound, "width": width,
                                                            "height": height}, common, priority, owner, **detection)
        except (ConfigError, JobNotFound) as error:
            raise click.UsageError(str(error)) from None
        if as_json:
            _print_json(jobs.to_dict())
        else:
            for job_id, what in [(jobs.prepare, "prepare"), (jobs.recognition_prepare, "prepare (trimmed)"),
                                 (jobs.rgb_model_job, "train-rgb"), (jobs.flow_model_job, "train-teacher"),
                                 *[(i, f"extract-features {s}") for s, i in jobs.extract.items()],
                                 *[(i, f"train-detector {s}") for s, i in jobs.detectors.items()],
                                 (jobs.evaluate, "evaluate-detectors")]:
                if job_id is not None:
                    click.echo(f"{job_id:>6}  {what}")
        _maybe_start_dispatcher(queue.settings)
        return
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
