"""Segment and frame mAP against values computed by hand."""
import numpy as np
import pytest

from vidistill.trainers.detection.metrics import (PROTOCOLS, Detection, frame_map, interpolated_ap, segment_map,
                                                  tiou)


def test_perfect_detection_is_one_at_every_threshold():
    gt = [Detection("v1", 10, 20, 0), Detection("v1", 30, 35, 1), Detection("v2", 0, 5, 0)]
    result = segment_map(gt, [Detection(g.video_id, g.start, g.end, g.label, 0.9) for g in gt], "activitynet")
    assert result.thresholds == PROTOCOLS["activitynet"] and len(result.thresholds) == 10
    assert all(v == pytest.approx(1.0) for v in result.map.values()) and result.average == pytest.approx(1.0)
    assert result.to_dict()["protocol"] == "activitynet"


def test_shifted_detection_counts_up_to_its_tiou():
    # [10, 20] vs [12.5, 22.5]: overlap 7.5, union 12.5 -> tIoU 0.6
    assert tiou((10, 20), np.array([[12.5, 22.5]]))[0] == pytest.approx(0.6)
    result = segment_map([Detection("v", 10, 20, 0)], [Detection("v", 12.5, 22.5, 0, 0.8)], "thumos14")
    assert [result.map[t] for t in (0.3, 0.4, 0.5, 0.6, 0.7)] == pytest.approx([1, 1, 1, 1, 0])
    assert result.average == pytest.approx(0.8)
    assert result.metrics()["mAP@0.7"] == 0.0


def test_duplicates_are_false_positives():
    gt = [Detection("v", 0, 10, 0), Detection("v", 20, 30, 0)]
    dets = [Detection("v", 0, 10, 0, 0.9), Detection("v", 0, 10, 0, 0.8), Detection("v", 20, 30, 0, 0.7)]
    # ranks: TP, FP (duplicate), TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # interpolated AP = 0.5 * 1 + 0.5 * 2/3
    assert segment_map(gt, dets, thresholds=[0.5]).map[0.5] == pytest.approx(0.5 + 1 / 3)


def test_wrong_class_and_wrong_video_do_not_match_and_map_averages_classes():
    gt = [Detection("v", 0, 10, 0), Detection("v", 0, 10, 1)]
    dets = [Detection("v", 0, 10, 0, 0.9), Detection("w", 0, 10, 1, 0.9)]
    result = segment_map(gt, dets, thresholds=[0.5])
    assert result.per_class[0][0.5] == 1.0 and result.per_class[1][0.5] == 0.0
    assert result.map[0.5] == pytest.approx(0.5) and result.protocol == "custom"


def test_interpolated_ap_envelope():
    # precision 1, 0.5, 0.667 at recall 0.25, 0.25, 0.5 (half the instances never found)
    assert interpolated_ap(np.array([1, 0.5, 2 / 3]), np.array([0.25, 0.25, 0.5])) == pytest.approx(0.25 + 0.25 * 2 / 3)


def test_frame_map():
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    assert frame_map(targets.astype(float), targets) == pytest.approx(1.0)
    # class 0: positives ranked 1st and 3rd -> (1 + 2/3) / 2; class 1: positive ranked 1st -> 1
    scores = np.array([[0.9, 0.1], [0.8, 0.9], [0.7, 0.2], [0.1, 0.3]])
    assert frame_map(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    with pytest.raises(ValueError, match="frames x classes"):
        frame_map(scores[:, 0], targets)


def test_frame_map_multi_label_frames_and_classes_without_positives():
    # frame 1 carries two actions at once (multi-label); class 2 has no positive frame and is left out
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    scores = np.array([[0.2, 0.9, 0.5], [0.9, 0.8, 0.5], [0.1, 0.7, 0.5], [0.3, 0.1, 0.5]])
    # class 0: ranks 0.9 (pos), 0.3 (neg), 0.2 (pos) -> (1 + 2/3) / 2; class 1: 0.9 (neg), 0.8, 0.7 (pos) -> (1/2 + 2/3) / 2
    assert frame_map(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 2)
    with pytest.raises(ValueError, match="no class has a positive frame"):
        frame_map(scores, np.zeros_like(targets))
