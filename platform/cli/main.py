"""The `vidistill` command: one click command per verb.

Each area contributes its commands from its own module in this package; this file
only assembles them, so adding a verb never means editing another verb's code.
"""
import click

from vidistill.platform.cli.models import check_models
from vidistill.platform.cli.datasets import datasets
from vidistill.platform.cli.cluster import cluster, dispatcher
from vidistill.platform.cli.compare import compare
from vidistill.platform.cli.jobs import jobs
from vidistill.platform.cli.detection import make_untrimmed_command
from vidistill.platform.cli.pipeline import pipeline
from vidistill.platform.cli.predict import predict
from vidistill.platform.cli.quickstart import quickstart
from vidistill.platform.cli.submit import submit_job
from vidistill.platform.cli.ui import ui


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vidistill")
def cli() -> None:
    """vidistill: distil a flow teacher's motion attention into an RGB student.

    \b
    A flow (optical-flow) I3D teacher learns where motion matters; an RGB I3D
    student learns to predict the teacher's motion attention maps, so at
    inference it needs no optical flow and runs at RGB speed.

    \b
    Start with:
      vidistill quickstart            the whole method end to end on synthetic data
      vidistill check-models          build teacher + student, run one step
      vidistill COMMAND --help        what a command does and its options
    """


cli.add_command(quickstart)
cli.add_command(check_models)
cli.add_command(datasets)
datasets.add_command(make_untrimmed_command)
cli.add_command(submit_job)
cli.add_command(pipeline)
cli.add_command(compare)
cli.add_command(predict)
cli.add_command(jobs)
cli.add_command(dispatcher)
cli.add_command(cluster)
cli.add_command(ui)
