"""`vidistill predict`: the top classes of video files from registered models."""
from __future__ import annotations

from pathlib import Path

import click

from vidistill.platform.cli.common import _print_json
from vidistill.platform.cli.models import _check_device


@click.command("predict")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "models", multiple=True, required=True, metavar="models:/NAME/VERSION|models:/NAME@ALIAS",
              help="A registered model; give --model twice or more to late-fuse them (e.g. the student and the "
                   "flow teacher, Table 3). A flow model's flow is computed from the video.")
@click.option("--top", default=5, show_default=True, help="Classes listed per video.")
@click.option("--attention", "attention_out", type=click.Path(path_type=Path), metavar="OUT.png|OUT.mp4|OUT.gif",
              help="Draw the attention maps over the frames (Fig. 2): .png shows each video's middle clip, first "
                   "and last frame; .mp4 or .gif animates every frame of the first video's middle clip.")
@click.option("--prepared", type=click.Path(path_type=Path),
              help="Prepared folder whose manifest gives the classes, frame rate and size; default: the one the "
                   "model was trained on (its run's data.prepared).")
@click.option("--flow-backend", type=click.Choice(["auto", "opencv", "torch"]), default="auto", show_default=True,
              help="How a flow model's TV-L1 is computed: auto is PyTorch on a GPU, OpenCV on a CPU.")
@click.option("--device", default="auto", show_default=True, help="auto picks cuda when available.")
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
def predict(videos, models, top, attention_out, prepared, flow_backend, device, as_json) -> None:
    """Classify VIDEO files with registered models: the top classes of each.

    \b
    Each video is read as the model's training data was prepared (frame rate, frame size),
    cut into evaluate's test clips (data.test_clips_per_video full-frame clips of
    data.clip_length frames), and the clips' softmax scores are averaged per video. A flow
    model (the teacher) gets its flow computed on the fly, by the method its data was prepared
    with (TV-L1 by default), quantised as prepare stores it.
    Several --model are late-fused (their probabilities averaged), as `evaluate` fuses them.
    On a GPU the forward passes replay CUDA graphs.

    \b
    Examples:
      vidistill predict walk.mp4 --model models:/ucf101-student-rgb@champion
      vidistill predict a.avi b.avi --model models:/ucf101-student-rgb/1 \\
          --model models:/ucf101-teacher-flow/1 --json
      vidistill predict walk.mp4 --model models:/ucf101-student-rgb/1 --attention maps.png
    """
    import torch

    from vidistill.trainers.predict import PredictError, load_models, predict_videos

    _check_device(device)
    if attention_out is not None and attention_out.suffix.lower() not in (".png", ".mp4", ".gif"):
        raise click.BadParameter(f"{attention_out}: write the maps to a .png image, or an .mp4 or .gif video",
                                 param_hint="--attention")
    for video in videos:  # before loading any model: a typo should not wait for that
        if not video.is_file():
            raise click.BadParameter(f"{video}: no such file", param_hint="VIDEO")
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                else "cpu" if device == "auto" else device)
    drawn: list = []
    try:
        loaded = load_models(list(models), torch_device, prepared)
        on_clips = None
        if attention_out is not None:
            on_clips = _collector(loaded, drawn)
        results = predict_videos(list(videos), loaded, top=top, device=torch_device, flow_backend=flow_backend,
                                 on_clips=on_clips)
    except PredictError as error:
        raise click.ClickException(str(error)) from None
    if attention_out is not None:
        _write_attention(attention_out, drawn, loaded[0].preprocessing.fps)
    if as_json:
        _print_json({"models": results[0].models, "device": str(torch_device),
                     "attention": str(attention_out) if attention_out and drawn else None,
                     "videos": [{"video": r.video, "frames": r.frames, "clips": r.clips,
                                 "top": [{"class": name, "probability": p} for name, p in r.top]}
                                for r in results]})
        return
    click.echo(f"model{'s' if len(loaded) > 1 else ''}: {' + '.join(m.version for m in loaded)}"
               f"{' (late fusion)' if len(loaded) > 1 else ''}   device: {torch_device}")
    for r in results:
        click.echo(f"{r.video}  ({r.frames} frames, {r.clips} clips)")
        width = max(len(name) for name, _ in r.top)
        for rank, (name, p) in enumerate(r.top, 1):
            click.echo(f"  {rank}. {name:<{width}}  {p:.3f}")
    if attention_out is not None:
        click.echo(f"attention maps: {attention_out}" if drawn else
                   "attention maps: none drawn, the models have no attention heads (plain I3D)")


def _collector(loaded, drawn: list):
    from vidistill.trainers.predict import attention_panels

    def on_clips(path, clips, maps) -> None:
        panels = attention_panels(loaded, clips, maps, Path(path).name)
        if panels is not None:
            drawn.append(panels)

    return on_clips


def _write_attention(path: Path, drawn: list, fps: float) -> None:
    import numpy as np

    from vidistill.trainers.attention_images import attention_frames, attention_grid, write_animation, write_png

    if not drawn:
        return
    if path.suffix.lower() == ".png":
        rows = [attention_grid(clip, maps, [label], teacher) for clip, maps, teacher, label in drawn]
        write_png(np.concatenate(rows, axis=0), path)
        return
    clip, maps, teacher, label = drawn[0]
    write_animation(attention_frames(clip, maps, label, teacher), path, fps)
