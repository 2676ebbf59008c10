"""Detection metrics: segment mAP at tIoU thresholds and frame-level mAP.

Segment mAP follows the ActivityNet evaluation code (`eval_detection.py`, also used by
ActionFormer, TriDet and OpenTAD for THUMOS14): per class, detections over all videos are
sorted by score; each is matched to the unmatched ground truth of its video with the highest
tIoU, and is a true positive when that tIoU reaches the threshold. A second detection of an
already matched instance is a false positive. AP is the area under the interpolated
precision-recall curve (precision made monotone from the right, summed over recall steps).
mAP is the mean over classes that have ground truth.

Numbers are comparable only under the same threshold set: THUMOS14 papers report
{0.3, ..., 0.7} and their mean, ActivityNet 0.5:0.05:0.95 and the mean, and some papers
average {0.1, ..., 0.5}. A `SegmentMAP` therefore carries its protocol name and thresholds.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

PROTOCOLS: dict[str, tuple[float, ...]] = {
    "thumos14": (0.3, 0.4, 0.5, 0.6, 0.7),
    "activitynet": tuple(round(0.5 + 0.05 * i, 2) for i in range(10)),
    "low": (0.1, 0.2, 0.3, 0.4, 0.5),
}


@dataclass(frozen=True)
class Detection:
    video_id: str
    start: float  # seconds
    end: float
    label: int
    score: float = 1.0


@dataclass
class SegmentMAP:
    """mAP per threshold and its mean, with the protocol that makes it comparable."""

    protocol: str
    thresholds: tuple[float, ...]
    map: dict[float, float]  # threshold -> mAP over classes
    average: float
    per_class: dict[int, dict[float, float]] = field(default_factory=dict)  # label -> threshold -> AP

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "thresholds": list(self.thresholds),
                "map": {f"{t:g}": v for t, v in self.map.items()}, "average": self.average}

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat names for MLflow: `mAP@0.5`, `mAP_avg` (prefixed)."""
        out = {f"{prefix}mAP@{t:g}": v for t, v in self.map.items()}
        out[f"{prefix}mAP_avg"] = self.average
        return out


def tiou(segment: Sequence[float], others: np.ndarray) -> np.ndarray:
    """Temporal IoU of one [start, end] segment with each row of `others` (n x 2)."""
    others = np.asarray(others, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(segment[1], others[:, 1]) - np.maximum(segment[0], others[:, 0]), 0, None)
    union = (segment[1] - segment[0]) + (others[:, 1] - others[:, 0]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """ActivityNet's interpolated AP: sum over recall steps of the monotone precision envelope."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    steps = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mprec[steps]))


def class_ap(ground_truth: list[Detection], detections: list[Detection],
             thresholds: Sequence[float]) -> np.ndarray:
    """AP of one class at each threshold."""
    if not ground_truth:
        return np.zeros(len(thresholds))
    by_video: dict[str, list[int]] = defaultdict(list)
    for index, g in enumerate(ground_truth):
        by_video[g.video_id].append(index)
    segments = np.array([[g.start, g.end] for g in ground_truth], dtype=np.float64)
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)  # stable for ties
    tp = np.zeros((len(thresholds), len(order)))
    fp = np.zeros((len(thresholds), len(order)))
    matched = np.zeros((len(thresholds), len(ground_truth)), dtype=bool)
    for rank, i in enumerate(order):
        d = detections[i]
        candidates = by_video.get(d.video_id, [])
        if not candidates:
            fp[:, rank] = 1
            continue
        overlaps = tiou((d.start, d.end), segments[candidates])
        by_overlap = np.argsort(-overlaps, kind="stable")
        for t, threshold in enumerate(thresholds):
            for j in by_overlap:
                if overlaps[j] < threshold:
                    break
                if not matched[t, candidates[j]]:
                    matched[t, candidates[j]] = True
                    tp[t, rank] = 1
                    break
            if not tp[t, rank]:
                fp[t, rank] = 1
    tp_c, fp_c = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    recall = tp_c / len(ground_truth)
    precision = tp_c / np.maximum(tp_c + fp_c, 1e-12)
    return np.array([interpolated_ap(precision[t], recall[t]) for t in range(len(thresholds))])


def segment_map(ground_truth: Iterable[Detection], detections: Iterable[Detection],
                protocol: str = "thumos14", thresholds: Sequence[float] | None = None) -> SegmentMAP:
    """mAP at each tIoU threshold of `protocol` (or the thresholds given, protocol then 'custom')."""
    if thresholds is None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)} or give thresholds")
        thresholds = PROTOCOLS[protocol]
    else:
        protocol = "custom" if tuple(thresholds) not in PROTOCOLS.values() else protocol
    thresholds = tuple(float(t) for t in thresholds)
    gt_by_class: dict[int, list[Detection]] = defaultdict(list)
    det_by_class: dict[int, list[Detection]] = defaultdict(list)
    for g in ground_truth:
        gt_by_class[g.label].append(g)
    for d in detections:
        det_by_class[d.label].append(d)
    if not gt_by_class:
        raise ValueError("no ground-truth segments to evaluate against")
    per_class = {label: dict(zip(thresholds, class_ap(gt, det_by_class.get(label, []), thresholds).tolist()))
                 for label, gt in sorted(gt_by_class.items())}
    maps = {t: float(np.mean([aps[t] for aps in per_class.values()])) for t in thresholds}
    return SegmentMAP(protocol, thresholds, maps, float(np.mean(list(maps.values()))), per_class)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP (mean precision at each positive's rank), as Charades' evaluation."""
    order = np.argsort(-scores, kind="stable")
    hits = targets[order] > 0
    if not hits.any():
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def frame_map(scores: np.ndarray, targets: np.ndarray) -> float:
    """Frame-level mAP: per-class AP over all frames (n_frames x n_classes), mean over classes with positives."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be frames x classes")
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    if not aps:
        raise ValueError("no class has a positive frame")
    return float(np.mean(aps))
