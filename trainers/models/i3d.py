"""I3D: Inception-v1 inflated to 3D (Carreira & Zisserman, CVPR 2017).

The backbone of the attention-distillation paper (Liu et al., BMVC 2020, Sec. 3.6).
Layer names, parameter shapes and TensorFlow "SAME" padding follow the widely used
pytorch-i3d port, so its Kinetics checkpoints (`rgb_imagenet.pt`, `flow_imagenet.pt`)
load unchanged through `load_pytorch_i3d_checkpoint`.

`forward_features(x)` returns the block-4 output (Mixed_4f, the phi of Sec. 3.1, on
which attention maps are generated) and the block-5 output (Mixed_5c, the features
the maps select); `forward_head` is whichever head the model was built with (plain
average pooling or attention branches, see `attention.py`). With `map_block="Mixed_5c"`
(a choice the paper does not make, for the issue-13 study of where a teacher's map
points) the map is generated from the block-5 features it weights, on their grid.

Input layout: (batch, channels, time, height, width); 3 channels for RGB, 2 (x, y)
for optical flow.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidistill.trainers.models.attention import AveragePoolHead, ModelOutput, create_head
from vidistill.trainers.models.factory import register_model

log = logging.getLogger(__name__)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (front, back) as the original I3D computes it."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _dynamic_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    _, _, t, h, w = x.shape
    pt, ph, pw = (same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


def _is_symmetric(kernel, stride) -> bool:
    # Stride 1 with odd kernels: SAME padding is k // 2 on both sides whatever the size,
    # so the layer can pad by itself instead of copying the tensor through F.pad.
    return all(s == 1 for s in stride) and all(k % 2 == 1 for k in kernel)


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm + ReLU with SAME padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.static = _is_symmetric(self.kernel, self.stride)
        padding = tuple(k // 2 for k in self.kernel) if self.static else 0
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=padding, bias=False)
        # eps of the TensorFlow original. Its momentum (decay 0.99, i.e. 0.01 here) leaves the
        # running statistics near their initial (0, 1) for hundreds of steps, so a short run
        # from scratch evaluates with statistics that normalise nothing; 0.1 tracks them within
        # tens of steps. Momentum is not stored in checkpoints, so loading is unaffected.
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.static:
            x = _dynamic_pad(x, self.kernel, self.stride)
        return F.relu(self.bn(self.conv3d(x)), inplace=True)


class MaxPool3dSame(nn.Module):
    """Max pooling with SAME padding.

    Every pooled tensor in I3D comes out of a ReLU, so zero padding (the original's)
    and the -inf padding of a native padded pool give identical results.
    """

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.static = _is_symmetric(self.kernel, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static:
            return F.max_pool3d(x, self.kernel, self.stride, padding=tuple(k // 2 for k in self.kernel))
        return F.max_pool3d(_dynamic_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four parallel branches: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max-pool -> 1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_channels, b0)
        self.b1a = Unit3D(in_channels, b1a)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, b2a)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# Branch widths of the Inception modules at full width (Carreira & Zisserman, Fig. 3).
_INCEPTION_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
_BLOCK4 = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
)
_BLOCK5 = ("MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")
MAP_BLOCKS = ("Mixed_4f", "Mixed_5c")


class I3D(nn.Module):
    """Inception-v1 I3D backbone with a pluggable recognition head.

    Args:
        num_classes: size of the classifier output.
        in_channels: 3 for RGB frames, 2 for optical flow (x, y).
        width: channel multiplier; 1.0 is the published network, smaller values
            give the reduced-width variants (`i3d_small`, `i3d_tiny`).
        attention: `none`, `soft-atten`, `soft-res` or `prob-atten` (Table 1).
        attention_heads: names of the attention branches; one for a teacher or a
            baseline, ("motion", "appearance") for the student (Eq. 7).
        dropout: dropout before each classifier (0.7, Sec. 3.6).
        gumbel_temperature: temperature of the Gumbel-softmax samples of
            probabilistic attention during training. Samples average to p(A) only
            as it goes to 0 (at 1.0 their mean is visibly flatter than p(A), which
            test time plugs in); 0.5 is where Jang et al. anneal to.
        branch_fusion: how several attention branches combine (Eq. 7): "logits"
            sums their logits, "probs" averages their softmax outputs.
        map_block: the block whose output phi is, the maps' source: "Mixed_4f"
            (Sec. 3.1) or "Mixed_5c", the features the map weights (then map and
            features share one grid and one receptive field).
    """

    # A class attribute, so models pickled before the option existed load as Sec. 3.1's.
    map_block = "Mixed_4f"

    def __init__(
        self,
        num_classes: int = 400,
        in_channels: int = 3,
        width: float = 1.0,
        attention: str = "none",
        attention_heads: tuple[str, ...] | None = None,
        dropout: float = 0.7,
        gumbel_temperature: float = 0.5,
        branch_fusion: str = "logits",
        map_block: str = "Mixed_4f",
    ):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if map_block not in MAP_BLOCKS:
            raise ValueError(f"map_block must be one of {', '.join(MAP_BLOCKS)}, got {map_block!r}")

        def c(n: int) -> int:
            return max(1, round(n * width))

        self.num_classes, self.in_channels, self.width = num_classes, in_channels, width
        self.Conv3d_1a_7x7 = Unit3D(in_channels, c(64), (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(c(64), c(64))
        self.Conv3d_2c_3x3 = Unit3D(c(64), c(192), (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        channels = c(192)
        for name, widths in _INCEPTION_WIDTHS.items():
            module = InceptionModule(channels, tuple(c(w) for w in widths))
            setattr(self, name, module)
            channels = module.out_channels
        self.map_block = map_block
        self.phi_channels = getattr(self, map_block).out_channels
        self.num_features = self.Mixed_5c.out_channels
        self.attention = attention
        self.head = create_head(
            attention,
            attention_heads,
            phi_channels=self.phi_channels,
            num_features=self.num_features,
            num_classes=num_classes,
            dropout=dropout,
            gumbel_temperature=gumbel_temperature,
            branch_fusion=branch_fusion,
        )

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (phi, Mixed_5c): the map block's output (Mixed_4f, Sec. 3.1) and the block-5 features."""
        for name in _BLOCK4:
            x = getattr(self, name)(x)
        phi = x
        for name in _BLOCK5:
            x = getattr(self, name)(x)
        return (x if self.map_block == "Mixed_5c" else phi), x

    def forward_head(self, phi: torch.Tensor, features: torch.Tensor) -> ModelOutput:
        return self.head(phi, features)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.forward_head(*self.forward_features(x))

    def load_pretrained(self, path: str | Path) -> "PretrainedReport":
        return load_pytorch_i3d_checkpoint(self, path)


class PretrainedMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model."""


@dataclass(frozen=True)
class PretrainedReport:
    path: Path
    loaded_tensors: int
    classifier: str  # "loaded" or why it was dropped


_REFERENCE_CLASSIFIER = ("logits.conv3d.weight", "logits.conv3d.bias")


def load_pytorch_i3d_checkpoint(model: I3D, path: str | Path) -> PretrainedReport:
    """Load Kinetics weights saved by pytorch-i3d into `model` (Sec. 3.6 initialisation).

    Every backbone tensor must be present with the right shape; the classifier is
    loaded only when the model has a plain head with the same class count, and is
    otherwise dropped (attention heads and a new class count start fresh).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint {path} not found: pass the path of rgb_imagenet.pt "
            "(RGB) or flow_imagenet.pt (flow) from pytorch-i3d, or pretrained=None"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    classifier = {k: state.pop(k) for k in _REFERENCE_CLASSIFIER if k in state}

    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    # Checkpoints saved before torch 0.4.1 have no BatchNorm step counters; nothing reads them.
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - own.keys())
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        raise PretrainedMismatchError(
            f"{path} does not fit {type(model).__name__}(width={model.width}, in_channels={model.in_channels}); "
            "expected the pytorch-i3d layout (rgb_imagenet.pt for 3 channels, flow_imagenet.pt for 2, full width)."
            + _listing("missing keys", missing)
            + _listing("unexpected keys", unexpected)
            + _listing("shape mismatches", mismatched)
        )
    model.load_state_dict(state, strict=False)

    verdict = "dropped: the checkpoint has no classifier"
    if classifier:
        weight = classifier["logits.conv3d.weight"].flatten(1)
        if not isinstance(model.head, AveragePoolHead):
            verdict = f"dropped: attention head {model.attention!r} has its own classifiers"
        elif weight.shape[0] != model.num_classes:
            verdict = f"dropped: checkpoint has {weight.shape[0]} classes, model has {model.num_classes}"
        else:
            with torch.no_grad():
                model.head.classifier.weight.copy_(weight)
                model.head.classifier.bias.copy_(classifier["logits.conv3d.bias"])
            verdict = "loaded"
    log.info("loaded %d tensors from %s; classifier %s", len(state), path, verdict)
    return PretrainedReport(path, len(state) + (2 if verdict == "loaded" else 0), verdict)


def _listing(title: str, items: list[str], limit: int = 25) -> str:
    if not items:
        return ""
    shown = "\n  ".join(items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n{title} ({len(items)}):\n  {shown}{more}"


@register_model
def i3d(**kwargs) -> I3D:
    """The published I3D (width 1.0): 12.7M parameters at 400 classes."""
    return I3D(**{"width": 1.0, **kwargs})


@register_model
def i3d_small(**kwargs) -> I3D:
    """Reduced-width I3D (1/4 of the channels) for small data sets and quick runs."""
    return I3D(**{"width": 0.25, **kwargs})


@register_model
def i3d_tiny(**kwargs) -> I3D:
    """Reduced-width I3D (1/8 of the channels) for CPU tests."""
    return I3D(**{"width": 0.125, **kwargs})
