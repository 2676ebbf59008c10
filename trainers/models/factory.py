"""Model registry in the manner of timm: families register constructors by name.

    create_model("i3d", num_classes=101, in_channels=3, attention="prob-atten")

`create_teacher` and `create_student` name the two roles of the method: a flow
network with one attention branch whose map is the motion attention, and an RGB
network with a motion and an appearance branch (Sec. 3.5).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}

TEACHER_HEADS = ("motion",)
STUDENT_HEADS = ("motion", "appearance")
FLOW_CHANNELS, RGB_CHANNELS = 2, 3


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a constructor under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = RGB_CHANNELS,
    attention: str = "none",
    attention_heads: tuple[str, ...] | None = None,
    pretrained: str | Path | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model; `pretrained` is a checkpoint path in the family's reference layout."""
    if name not in _MODELS:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = _MODELS[name](
        num_classes=num_classes, in_channels=in_channels, attention=attention, attention_heads=attention_heads, **kwargs
    )
    if pretrained is not None:
        model.load_pretrained(pretrained)
    return model


def create_teacher(name: str = "i3d", *, num_classes: int, attention: str = "prob-atten", **kwargs) -> nn.Module:
    """A flow network with one attention branch: its map is the motion attention to distil.

    With attention "none" it is the plain flow I3D of Table 1 (a feature or logit teacher).
    """
    heads = TEACHER_HEADS if attention != "none" else None
    return create_model(name, num_classes=num_classes, in_channels=FLOW_CHANNELS, attention=attention,
                        attention_heads=heads, **kwargs)


def create_student(name: str = "i3d", *, num_classes: int, attention: str = "prob-atten", **kwargs) -> nn.Module:
    """An RGB network with motion and appearance attention branches, logits summed (Eq. 7)."""
    return create_model(name, num_classes=num_classes, in_channels=RGB_CHANNELS, attention=attention,
                        attention_heads=STUDENT_HEADS, **kwargs)
