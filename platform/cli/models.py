"""`vidistill check-models`: build the teacher and the student and run one distillation step."""
from __future__ import annotations

import json

import click


@click.command("check-models")
@click.option("--model", default="i3d", show_default=True,
              help="Backbone: i3d (published width), i3d_small (1/4 width) or i3d_tiny (1/8 width).")
@click.option("--attention", default="prob-atten", show_default=True,
              help="Attention variant of both networks: soft-atten, soft-res or prob-atten.")
@click.option("--num-classes", default=101, show_default=True, help="Classifier size (UCF101 has 101).")
@click.option("--frames", default=24, show_default=True, help="Frames per clip (the paper uses 24).")
@click.option("--size", default=224, show_default=True, help="Clip height and width in pixels.")
@click.option("--batch-size", default=2, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto picks cuda when available.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_models(model, attention, num_classes, frames, size, batch_size, device, as_json) -> None:
    """Build the flow teacher and the RGB student and run one distillation step.

    \b
    The teacher (flow I3D, one attention branch) sees a random flow clip; the
    student (RGB I3D with motion and appearance attention, Eq. 7) sees a random
    RGB clip; Eq. 8 is computed, back-propagated and one SGD step is taken.
    Prints parameter counts, tensor shapes, each loss term and the time per
    pass. The clips are noise: the losses say nothing about accuracy.

    \b
    Example (small and fast on a CPU):
      vidistill check-models --model i3d_tiny --frames 8 --size 112
    """
    from vidistill.trainers.model_check import ModelCheckConfig, run_model_check
    from vidistill.trainers.models import InvalidAttentionError, UnknownModelError

    _check_device(device)

    config = ModelCheckConfig(model=model, num_classes=num_classes, frames=frames, height=size, width=size,
                              batch_size=batch_size, attention=attention, device=device)
    try:
        report = run_model_check(config)
    except (InvalidAttentionError, UnknownModelError) as exc:
        raise click.BadParameter(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    params = report["parameters"]
    overhead = params["student_rgb"] / params["plain_rgb_i3d"] - 1
    click.echo(f"device: {report['device']}   model: {model}   attention: {attention}")
    click.echo("parameters:")
    click.echo(f"  flow teacher        {params['teacher_flow']:>12,}")
    click.echo(f"  RGB student         {params['student_rgb']:>12,}  (+{overhead:.2%} over plain RGB I3D)")
    click.echo(f"  plain RGB I3D       {params['plain_rgb_i3d']:>12,}")
    click.echo("shapes (batch, channels, T, H, W):")
    for name, shape in report["shapes"].items():
        click.echo(f"  {name:<18}  {' x '.join(map(str, shape))}")
    lo, hi = report["attention_slice_sums"]
    click.echo(f"attention: every time slice sums to 1 (min {lo:.6f}, max {hi:.6f})")
    click.echo("loss terms (Eq. 8, one step on random clips):")
    for name, value in report["loss"].items():
        click.echo(f"  {name:<10} {value:.6f}")
    grads = ", ".join(f"{k} {v:.3g}" for k, v in report["attention_grad_norms"].items())
    click.echo(f"gradient norm reaching each attention head: {grads}")
    secs = report["seconds"]
    click.echo(f"time: teacher forward {secs['teacher_forward']:.2f} s, "
               f"student forward+backward {secs['student_forward_backward']:.2f} s")


def _check_device(device: str) -> None:
    """A device this machine has, or a clear error (not a torch traceback from the first tensor)."""
    import torch

    if device == "auto" or device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise click.BadParameter(f"{device}: this machine has no usable CUDA GPU (torch "
                                     f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}); "
                                     "use --device cpu or auto", param_hint="--device")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise click.BadParameter(f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                                     param_hint="--device")
        return
    try:
        torch.device(device)
    except RuntimeError:
        raise click.BadParameter(f"{device!r} is not a device; use auto, cpu, cuda or cuda:N",
                                 param_hint="--device") from None
