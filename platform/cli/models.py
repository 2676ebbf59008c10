"""`vidistill check-models` (filled in below)."""
import click


@click.command("check-models")
def check_models() -> None:
    """Build the teacher and the student and run one distillation step on a synthetic batch."""
    raise click.ClickException("not yet")
