"""`vidistill quickstart`: the whole method on the synthetic benchmark, through the queue, in one command."""
from __future__ import annotations

import json
from dataclasses import asdict

import click


@click.command("quickstart")
@click.option("--size", type=click.Choice(["tiny", "small", "large"]), default="small", show_default=True,
              help="small: about 7 min on a 2-core CPU; large: 8 classes, wider I3D, 40 epochs (a GPU, or "
                   "an hour or more of CPU); tiny: every step at its smallest, as the tests run it.")
@click.option("--fresh", is_flag=True, help="Submit a new pipeline even if an earlier one can be reused.")
@click.option("--timeout", type=float, default=None, help="Stop waiting after this many seconds (the jobs go on).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (progress goes to stderr).")
@click.option("--task", type=click.Choice(["recognition", "detection"]), default="recognition", show_default=True,
              help="detection: the synthetic untrimmed benchmark; RGB-only, flow-only and two-stream detectors "
                   "on snippet features, mAP per tIoU (sizes tiny and small).")
def quickstart(size, fresh, timeout, as_json, task) -> None:
    """Generate the synthetic motion benchmark, prepare it, train and evaluate everything.

    \b
    Steps, all through the job queue (a dispatcher is started if none runs):
      1. write the synthetic motion benchmark (real encoded videos) under
         $VIDISTILL_HOME/quickstart/SIZE/source
      2. prepare it: JPEG frames and optical flow
      3. train the flow teacher, then distil the Prob-Distill RGB student from it;
         train a plain RGB I3D baseline beside them
      4. evaluate the three and the two-stream fusions on the test videos
    then print accuracy and inference speed of each, and where to look further.

    Running it again reuses what exists: the data, and the finished jobs of the
    pipeline it submitted before (failed ones are retried).
    """
    from vidistill.platform.quickstart import QuickstartFailed, format_results, quickstart as run_quickstart

    def echo(line: str) -> None:
        click.echo(line, err=as_json)

    if task == "detection":
        from vidistill.platform.detection_pipeline import detection_quickstart
        from vidistill.trainers.detection.evaluate import format_table

        try:
            jobs, table = detection_quickstart("tiny" if size == "tiny" else "small", echo=echo, timeout=timeout)
        except QuickstartFailed as error:
            raise click.ClickException(str(error)) from None
        click.echo(json.dumps({"jobs": jobs.to_dict(), "table": table}, indent=2) if as_json else format_table(table))
        return

    try:
        result = run_quickstart(size, fresh=fresh, echo=echo, timeout=timeout)
    except QuickstartFailed as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps({"jobs": result.jobs.to_dict(), "rows": [asdict(r) for r in result.rows],
                               "flow": result.flow, "evaluation_run": result.evaluation_run,
                               "reused": result.reused}, indent=2))
    else:
        click.echo(format_results(result))
