"""An anchor-free, multi-scale temporal action detector in the manner of ActionFormer.

ActionFormer (Zhang et al., ECCV 2022), Sec. 3: features (B, C, T) ->
  projection  two 1D convolutions to the model width;
  encoder     local-window self-attention transformer layers; the first ``stem`` layers at full
              resolution, then one layer + 2x max-pool per further pyramid level
              (ActionFormer downsamples inside its attention; pooling after it is the plain form);
  neck        per-level normalisation (``identity``) or a top-down ``fpn``;
  head        shared over levels: a classification branch (sigmoid focal loss) and a regression
              branch predicting the distances from each point to the action's start and end
              (DIoU loss), scaled per level; Soft-NMS on the decoded segments at inference.

Necks and heads are registered by name (``register_neck`` / ``register_head``) as models are,
so a distillation method can be shown to work whatever head sits on the features. The
``dense`` head is a frame-level multi-label classifier (per-snippet sigmoid, BCE) for
Charades / MultiTHUMOS-type data.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

_NECKS: dict[str, Callable[..., nn.Module]] = {}
_HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_neck(fn):
    _NECKS[fn.__name__.replace("_", "-")] = fn
    return fn


def register_head(fn):
    _HEADS[fn.__name__.replace("_", "-")] = fn
    return fn


def list_necks() -> list[str]:
    return sorted(_NECKS)


def list_heads() -> list[str]:
    return sorted(_HEADS)


class LocalAttentionLayer(nn.Module):
    """Pre-norm transformer layer whose attention sees only a window of +-window//2 positions."""

    def __init__(self, dim: int, heads: int, window: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.window = heads, window
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True at real positions."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        i = torch.arange(t, device=x.device)
        # A masked full attention: O(T^2) memory, plain and exact; fine for feature sequences
        # of a few thousand snippets. Every row keeps itself, so no row is all -inf.
        allowed = ((i[:, None] - i[None, :]).abs() <= self.window // 2)[None] & mask[:, None, :]
        allowed = allowed | torch.eye(t, dtype=torch.bool, device=x.device)[None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None],
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        x = x + self.mlp(self.norm2(x))
        return x * mask[..., None]


class Encoder(nn.Module):
    """Projection + local-attention transformer giving a temporal feature pyramid."""

    def __init__(self, in_channels: int, dim: int = 128, levels: int = 4, stem: int = 2, heads: int = 4,
                 window: int = 9, dropout: float = 0.0):
        super().__init__()
        self.project = nn.Sequential(nn.Conv1d(in_channels, dim, 3, padding=1), nn.ReLU(),
                                     nn.Conv1d(dim, dim, 3, padding=1), nn.ReLU())
        self.stem = nn.ModuleList(LocalAttentionLayer(dim, heads, window, dropout) for _ in range(stem))
        self.branch = nn.ModuleList(LocalAttentionLayer(dim, heads, window, dropout) for _ in range(levels - 1))

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) -> (B, T, D): the 1D-conv projection, the layer distillation methods mimic."""
        return self.project(x).transpose(1, 2) * mask[..., None]

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        """x (B, C, T), mask (B, T) -> [(B, T_l, D)] and [(B, T_l)] for levels l, T_l = T / 2^l."""
        return self.pyramid(self.embed(x, mask), mask)

    def pyramid(self, x: torch.Tensor, mask: torch.Tensor):
        """The encoder after the projection: x (B, T, D) -> the levels' features and masks."""
        for layer in self.stem:
            x = layer(x, mask)
        features, masks = [x], [mask]
        for layer in self.branch:
            x = F.max_pool1d(x.transpose(1, 2), 3, stride=2, padding=1).transpose(1, 2)
            mask = mask[:, ::2]
            x = layer(x * mask[..., None], mask)
            features.append(x)
            masks.append(mask)
        return features, masks


@register_neck
def identity(dim: int, levels: int) -> nn.Module:
    """ActionFormer's default neck: a LayerNorm per level."""
    return _PerLevelNorm(dim, levels)


class _PerLevelNorm(nn.Module):
    def __init__(self, dim: int, levels: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(levels))

    def forward(self, features, masks):
        return [n(f) * m[..., None] for n, f, m in zip(self.norms, features, masks)]


@register_neck
def fpn(dim: int, levels: int) -> nn.Module:
    """A top-down feature pyramid: each level adds the upsampled coarser one."""
    return _TopDown(dim, levels)


class _TopDown(_PerLevelNorm):
    def __init__(self, dim: int, levels: int):
        super().__init__(dim, levels)
        self.lateral = nn.ModuleList(nn.Linear(dim, dim) for _ in range(levels))

    def forward(self, features, masks):
        out = [lat(f) for lat, f in zip(self.lateral, features)]
        for level in range(len(out) - 2, -1, -1):
            up = F.interpolate(out[level + 1].transpose(1, 2), size=out[level].shape[1], mode="nearest")
            out[level] = out[level] + up.transpose(1, 2)
        return super().forward(out, masks)


def _conv_branch(dim: int, out: int, layers: int = 2) -> nn.Sequential:
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Conv1d(dim, dim, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*blocks, nn.Conv1d(dim, out, 3, padding=1))


class SegmentHead(nn.Module):
    """Classification logits and start/end distances (in units of the level's stride) per point."""

    kind = "segments"

    def __init__(self, dim: int, num_classes: int, levels: int, prior: float = 0.01):
        super().__init__()
        self.cls = _conv_branch(dim, num_classes)
        self.reg = _conv_branch(dim, 2)
        self.scales = nn.Parameter(torch.ones(levels))
        # Focal-loss prior (RetinaNet Sec. 4.1): start every class at probability `prior`.
        nn.init.constant_(self.cls[-1].bias, -math.log((1 - prior) / prior))

    def forward(self, features, masks):
        logits, distances = [], []
        for level, (f, m) in enumerate(zip(features, masks)):
            x = f.transpose(1, 2)
            logits.append(self.cls(x).transpose(1, 2))
            distances.append(F.relu(self.scales[level] * self.reg(x)).transpose(1, 2))
        return {"logits": logits, "distances": distances, "masks": masks}


@register_head
def actionformer(dim: int, num_classes: int, levels: int) -> nn.Module:
    return SegmentHead(dim, num_classes, levels)


class DenseHead(nn.Module):
    """Per-snippet multi-label logits at full resolution (the finest pyramid level)."""

    kind = "dense"

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.cls = _conv_branch(dim, num_classes, layers=1)

    def forward(self, features, masks):
        return {"frame_logits": self.cls(features[0].transpose(1, 2)).transpose(1, 2), "masks": masks}


@register_head
def dense(dim: int, num_classes: int, levels: int) -> nn.Module:
    return DenseHead(dim, num_classes)


class Detector(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, dim: int = 128, levels: int = 4, stem: int = 2,
                 heads: int = 4, window: int = 9, neck: str = "identity", head: str = "actionformer",
                 dropout: float = 0.0):
        super().__init__()
        for what, name, known in (("neck", neck, _NECKS), ("head", head, _HEADS)):
            if name not in known:
                raise ValueError(f"unknown {what} {name!r}; registered: {', '.join(sorted(known))}")
        self.settings = dict(in_channels=in_channels, num_classes=num_classes, dim=dim, levels=levels, stem=stem,
                             heads=heads, window=window, neck=neck, head=head)
        self.levels = levels
        self.encoder = Encoder(in_channels, dim, levels, stem, heads, window, dropout)
        self.neck = _NECKS[neck](dim, levels)
        self.head = _HEADS[head](dim, num_classes, levels)

    @property
    def kind(self) -> str:
        return self.head.kind

    @property
    def length_multiple(self) -> int:
        """Sequence lengths are padded to a multiple of this, so every level halves evenly."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict:
        """The head's output, plus "embedding" (B, T, D): the projected input a distillation loss may read."""
        embedding = self.encoder.embed(x, mask)
        features, masks = self.encoder.pyramid(embedding, mask)
        return {**self.head(self.neck(features, masks), masks), "embedding": embedding}


def create_detector(in_channels: int, num_classes: int, **kwargs) -> Detector:
    return Detector(in_channels, num_classes, **kwargs)


# --- targets and losses -------------------------------------------------------------------------

def level_ranges(levels: int) -> list[tuple[float, float]]:
    """Regression range per level in snippets, ActionFormer's (0,4), (4,8), ..., last open-ended."""
    ranges = [(0.0 if level == 0 else 4.0 * 2 ** (level - 1), 4.0 * 2 ** level) for level in range(levels)]
    ranges[-1] = (ranges[-1][0], float("inf"))
    return ranges


def point_targets(segments: torch.Tensor, labels: torch.Tensor, length: int, levels: int, num_classes: int,
                  radius: float = 1.5):
    """Per level: (T_l, classes) one-hot targets and (T_l, 2) distances in level strides.

    segments (N, 2) in snippet units. A point t (= i * stride_l) is positive for a segment that
    contains it, whose centre lies within radius * stride_l (centre sampling, ActionFormer
    Sec. 3.3), and whose largest distance fits the level's range; among several, the shortest.
    """
    out = []
    for level, (low, high) in enumerate(level_ranges(levels)):
        stride = 2 ** level
        t = torch.arange(0, length, stride, dtype=torch.float32)
        cls = torch.zeros(len(t), num_classes)
        dist = torch.zeros(len(t), 2)
        if len(segments):
            start, end = segments[:, 0][None], segments[:, 1][None]
            left, right = t[:, None] - start, end - t[:, None]
            centre = (start + end) / 2
            near = (t[:, None] - centre).abs() <= radius * stride
            reach = torch.maximum(left, right)
            ok = (left >= 0) & (right >= 0) & near & (reach >= low) & (reach <= high)
            lengths = (end - start).expand_as(ok).masked_fill(~ok, float("inf"))
            best, which = lengths.min(dim=1)
            pos = torch.isfinite(best)
            cls[pos, labels[which[pos]]] = 1.0
            dist[pos] = torch.stack([left[pos, which[pos]], right[pos, which[pos]]], dim=1) / stride
        out.append((cls, dist))
    return out


def diou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1D DIoU loss (Zheng et al., AAAI 2020, Eq. 6) on (N, 2) start/end distances from the same point."""
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = pred.sum(1) + target.sum(1) - inter
    iou = inter / union.clamp(min=1e-6)
    enclose = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 1], target[:, 1])
    centre_gap = ((pred[:, 1] - pred[:, 0]) - (target[:, 1] - target[:, 0])) / 2  # offset of the two centres
    return 1 - iou + centre_gap ** 2 / enclose.clamp(min=1e-6) ** 2


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Summed sigmoid focal loss (Lin et al., ICCV 2017, Eq. 5)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * ce).sum()


def detection_loss(output: dict, targets: list) -> tuple[torch.Tensor, dict]:
    """Focal classification + DIoU regression, each normalised by the number of positive points.

    targets: per video, the (cls, dist) pairs per level of point_targets; for the dense head,
    per video a (T, classes) tensor of frame labels.
    """
    if "frame_logits" in output:
        logits, mask = output["frame_logits"], output["masks"][0]
        frame_targets = torch.stack(targets).to(logits.device)[:, : logits.shape[1]]
        loss = F.binary_cross_entropy_with_logits(logits[mask], frame_targets[mask])
        return loss, {"bce": float(loss.detach())}
    cls_loss = reg_loss = 0.0
    positives = 0.0
    for level, (logits, distances, mask) in enumerate(zip(output["logits"], output["distances"], output["masks"])):
        cls_t = torch.stack([t[level][0] for t in targets]).to(logits.device)
        dist_t = torch.stack([t[level][1] for t in targets]).to(logits.device)
        pos = (cls_t.sum(-1) > 0) & mask
        positives += float(pos.sum())
        cls_loss = cls_loss + sigmoid_focal_loss(logits[mask], cls_t[mask])
        if pos.any():
            reg_loss = reg_loss + diou_loss(distances[pos], dist_t[pos]).sum()
    normaliser = max(positives, 1.0)
    cls_loss, reg_loss = cls_loss / normaliser, reg_loss / normaliser
    loss = cls_loss + reg_loss
    return loss, {"cls": float(cls_loss.detach()), "reg": float(reg_loss.detach()) if torch.is_tensor(reg_loss) else 0.0}


# --- inference ----------------------------------------------------------------------------------

def soft_nms(segments: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, sigma: float = 0.5,
             min_score: float = 1e-3, max_segments: int = 200):
    """Gaussian Soft-NMS per class (Bodla et al., ICCV 2017, Eq. 3): decay, not drop, overlapping segments."""
    keep_s, keep_c, keep_l = [], [], []
    for label in labels.unique():
        idx = labels == label
        seg, sc = segments[idx].clone(), scores[idx].clone()
        while len(sc):
            best = int(sc.argmax())
            top, top_score = seg[best], sc[best]
            if top_score < min_score:
                break
            keep_s.append(top)
            keep_c.append(top_score)
            keep_l.append(label)
            rest = torch.ones(len(sc), dtype=torch.bool)
            rest[best] = False
            seg, sc = seg[rest], sc[rest]
            inter = (torch.minimum(seg[:, 1], top[1]) - torch.maximum(seg[:, 0], top[0])).clamp(min=0)
            iou = inter / ((seg[:, 1] - seg[:, 0]) + (top[1] - top[0]) - inter).clamp(min=1e-6)
            sc = sc * torch.exp(-(iou ** 2) / sigma)
    if not keep_s:
        return segments[:0], scores[:0], labels[:0]
    s, c, l = torch.stack(keep_s), torch.stack(keep_c), torch.stack(keep_l)
    order = c.argsort(descending=True)[:max_segments]
    return s[order], c[order], l[order]


@torch.no_grad()
def decode_segments(output: dict, index: int, length: int, pre_nms_topk: int = 1000, threshold: float = 1e-3):
    """Segments (snippet units), scores and labels of video `index` of a batch, before NMS."""
    segs, scores, labels = [], [], []
    for level, (logits, distances) in enumerate(zip(output["logits"], output["distances"])):
        stride = 2 ** level
        n = min(logits.shape[1], math.ceil(length / stride))
        prob = torch.sigmoid(logits[index, :n]).cpu()
        dist = distances[index, :n].float().cpu()
        flat = prob.flatten()
        top = flat.topk(min(pre_nms_topk, len(flat))).indices
        top = top[flat[top] > threshold]
        point, label = top // prob.shape[1], top % prob.shape[1]
        t = point.float() * stride
        segs.append(torch.stack([t - dist[point, 0] * stride, t + dist[point, 1] * stride], dim=1))
        scores.append(flat[top])
        labels.append(label)
    return torch.cat(segs), torch.cat(scores), torch.cat(labels)
