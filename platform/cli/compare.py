"""`vidistill compare`: arms x seeds x difficulty levels as queued jobs, then the table with paired tests."""
from __future__ import annotations

import click

from vidistill.platform.cli.common import _maybe_start_dispatcher, _print_json, _queue


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _seeds(value: str) -> list[int]:
    try:
        return [int(part) for part in _names(value)]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give whole numbers separated by commas, e.g. 0,1,2") from None


@click.command("compare")
@click.option("--name", default=None, help="Study name: its folder under $VIDISTILL_HOME/studies and the key to "
              "resume it  [default: SIZE-DIFFICULTIES].")
@click.option("--arms", default="rgb-plain,feature,prob-distill", show_default=True,
              help="Comma-separated arms (see the list below).")
@click.option("--seeds", default="0,1,2", show_default=True,
              help="Comma-separated paired seeds: every arm of a seed starts from the same seed.")
@click.option("--difficulty", "difficulties", default="easy", show_default=True,
              help="Comma-separated levels of the synthetic generator: easy, medium, hard.")
@click.option("--size", type=click.Choice(["tiny", "small", "wide", "large"]), default="tiny", show_default=True,
              help="tiny: every step at its smallest (minutes on a CPU, learns little); small: the "
                   "quickstart's 96 videos and 30 epochs (~2 min a model on a 2-core CPU); wide: 320x256 "
                   "frames, a 256 px crop, a 20 px actor and maps from Mixed_5c, the one CPU size where a flow "
                   "teacher's map has found the actor, for one seed of two (20-30 min a model, two at a time); large: for a GPU.")
@click.option("--set", "common", multiple=True, metavar="KEY=VALUE",
              help="Override for every training job, e.g. --set epochs=15.")
@click.option("--warm-start/--from-scratch", default=False, show_default=True,
              help="Pretrain a plain RGB I3D and the flow teacher once on a larger, separate synthetic set "
                   "(seed 1000, twice the videos) and start every arm from their backbones, as the paper "
                   "starts from Kinetics.")
@click.option("--report", "report_only", is_flag=True,
              help="Submit nothing: print the table of the study --name from what has finished.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the jobs and print the table, or return once they are queued.")
@click.option("--timeout", type=float, default=None, help="Stop waiting after this many seconds (the jobs go on).")
@click.option("--priority", type=int, default=0, show_default=True, help="Priority of every job.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs and the table as JSON (progress to stderr).")
def compare(name, arms, seeds, difficulties, size, common, warm_start, report_only, wait, timeout, priority, as_json) -> None:
    """Compare distillation methods on the synthetic motion benchmark, with paired seeds.

    \b
    For every difficulty level: write the synthetic set and queue its prepare job;
    for every seed s: train the flow teacher (seed s), then each arm (seed s; the
    distilled ones from that teacher), then ONE evaluation of all of them on the
    same clips. When the jobs are done, read MLflow and print per arm the mean +- std
    of video top-1 over the seeds, and a paired t-test and Wilcoxon signed-rank test
    against plain RGB (same seeds). The table is written as CSV and Markdown and
    logged with plots (accuracy per arm with error bars, validation curves) to a
    `study NAME` run in MLflow (`vidistill ui`).

    \b
    Arms (rows of the paper's Tables 1 and 2):
      flow-teacher        the flow I3D teacher (prob-atten)
      rgb-plain           RGB I3D, no attention (the baseline of every test)
      rgb-soft-atten      RGB I3D with soft attention, no teacher
      rgb-soft-res        ... soft residual attention
      rgb-prob-atten      ... probabilistic attention (the student's network, no teacher)
      feature             feature distillation from the teacher (plain RGB I3D)
      logit               logit distillation (Hinton) from the teacher
      prob-distill        Prob-Distill: the teacher's motion attention (Eq. 8)
      prob-distill+flow   late fusion of prob-distill and the teacher
      rgb-plain+flow      late fusion of rgb-plain and the teacher

    \b
    Running it again with the same --name resumes: jobs still queued, running or
    done are kept, failed ones retried, missing ones (a new arm or seed) submitted;
    nothing is queued twice.

    \b
    Examples:
      vidistill compare                                  # tiny: 3 arms x 3 seeds, minutes
      vidistill compare --size small --arms rgb-plain,prob-distill --seeds 0,1,2,3,4
      vidistill compare --difficulty easy,medium,hard --size large   # on a GPU
      vidistill compare --report --name tiny-easy --json
    """
    from vidistill.platform.kinds import ConfigError
    from vidistill.platform.queue import JobNotFound
    from vidistill.platform.study import StudyError, StudySpec, StudyRecord, study_folder, submit_study, wait_for_study
    from vidistill.platform.study_report import ACTOR_MASS_GATE, format_rows, study_report

    def echo(line: str) -> None:
        click.echo(line, err=as_json)

    levels = _names(difficulties)
    name = name or f"{size}-{'-'.join(levels)}"
    queue = _queue()
    submitted = None
    if not report_only:
        spec = StudySpec(name=name, arms=_names(arms), seeds=_seeds(seeds), difficulties=levels, size=size,
                         common=list(common), warm_start=warm_start, priority=priority)
        try:
            submitted = submit_study(queue, spec, echo)
        except (StudyError, ConfigError, JobNotFound) as error:
            raise click.UsageError(str(error)) from None
        echo(f"study {name}: {len(submitted.submitted)} jobs submitted, {len(submitted.retried)} retried, "
             f"{len(submitted.kept)} kept from before")
        _maybe_start_dispatcher(queue.settings)
        if not wait:
            if as_json:
                _print_json({"study": submitted.to_dict()})
            else:
                echo(f"watch: vidistill jobs list   |   table: vidistill compare --report --name {name}")
            return
        wait_for_study(queue, submitted.record, echo, timeout=timeout)
    elif StudyRecord.load(study_folder(queue.settings, name) / "study.json") is None:
        raise click.UsageError(f"no study named {name!r}; submit it first with `vidistill compare --name {name}`")
    report = study_report(queue, name)
    if as_json:
        _print_json({**({"study": submitted.to_dict()} if submitted else {}), "report": report.to_dict()})
        return
    click.echo("")
    click.echo(format_rows(report.rows) if report.rows else "no evaluation has finished yet")
    for difficulty, ratio in report.actor_mass.items():
        click.echo(f"teacher actor mass ({difficulty}): {ratio:.2f}x uniform (mean over the distillation runs)"
                   + ("" if report.teacher_gate[difficulty] else
                      f"; below the gate ({ACTOR_MASS_GATE:g}x): the teacher does not look at the actor, so this "
                      "level cannot test whether distilling where-to-look helps"))
    if report.pending:
        click.echo("not in the table yet: " + "; ".join(report.pending))
    click.echo(f"written: {', '.join(report.files.values())}")
    if report.study_run:
        click.echo(f"MLflow run of the study: {report.study_run} (`vidistill ui`)")
