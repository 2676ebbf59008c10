"""A study's warm start, as the paper's Kinetics initialisation (Sec. 3.6): the backbone of a model
pretrained on a larger, separate synthetic set, written as a checkpoint that `model.pretrained`
loads (the pytorch-i3d layout: the backbone's tensors under their own names, no head).

    python -m vidistill.platform.warm_start models:/study-x-warm-rgb-none@job-4 /path/rgb.pt

`vidistill compare --warm-start` queues this as a `command` job after each pretraining job, so
every arm of the study starts from the same registered backbone (RGB arms from the RGB one, the
flow teacher from the flow one).
"""
from __future__ import annotations

import sys
from pathlib import Path


def backbone_state(model) -> dict:
    """The model's tensors without its head: what `load_pretrained` requires (heads start fresh)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def export_backbone(uri: str, out: str | Path) -> Path:
    """Write the backbone of registered model `uri` to `out`; returns `out`."""
    import mlflow
    import torch

    from vidistill.trainers import tracking

    tracking.configure()
    found = tracking.resolve_model_version(uri)  # a clear error for an unknown name or alias
    model = mlflow.pytorch.load_model(f"models:/{found.name}/{found.version}", map_location="cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".tmp")
    torch.save(backbone_state(model), temporary)
    temporary.replace(out)  # arms that start later never read half a file
    print(f"[vidistill] wrote the backbone of models:/{found.name}/{found.version} to {out}", flush=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m vidistill.platform.warm_start MODEL_URI OUT.pt")
    export_backbone(sys.argv[1], sys.argv[2])
