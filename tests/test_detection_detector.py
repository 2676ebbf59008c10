"""The ActionFormer-style detector: learns actions that its features show, registers, and its parts."""
import json

import numpy as np
import pytest
import torch

from vidistill.trainers.detection.models import (create_detector, diou_loss, list_heads, list_necks, point_targets,
                                                 soft_nms)
from vidistill.trainers.detection.train import DetectorTrainConfig, load_detector, train_detector, load_detection_data


def write_feature_set(root, streams=("rgb",), videos=6, classes=2, seed=0):
    """THUMOS14-style annotations and feature folders in which class c's actions light up channel c."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    lines = {(c, s): [] for c in range(classes) for s in ("val", "test")}
    folders = {m: root / f"features-{m}" for m in streams}
    manifests = {m: {"settings": {"model": f"models:/x-{m}/1", "modality": m, "fps": 10.0, "snippet_length": 16,
                                  "stride": 4, "input_size": [48, 64]}, "videos": {}, "failed": {}} for m in streams}
    for folder in folders.values():
        folder.mkdir()
    for subset, count in (("val", videos), ("test", 3)):
        for i in range(count):
            vid = f"video_{'validation' if subset == 'val' else 'test'}_{i + 1:07d}"
            t = 64
            x = rng.normal(0, 0.3, size=(t, 8)).astype(np.float32)
            for c in range(classes):
                start = int(rng.integers(2, t - 20))
                length = int(rng.integers(5, 15))
                x[start:start + length, c] += 2.0
                # snippet i is centred at (4 i + 8) / 10 s
                lines[(c, subset)].append(f"{vid} {(4 * start + 8) / 10:.2f} {(4 * (start + length - 1) + 8) / 10:.2f}")
            for m, folder in folders.items():
                np.save(folder / f"{vid}.npy", x)
                manifests[m]["videos"][vid] = {"snippets": t, "channels": 8, "frames": 4 * t + 12}
    for (c, subset), rows in lines.items():
        (root / "annotations" / f"class{c}_{subset}.txt").write_text("".join(r + "\n" for r in rows))
    for m, folder in folders.items():
        (folder / "features.json").write_text(json.dumps(manifests[m]))
    return [str(f) for f in folders.values()]


def test_registries_and_shapes():
    assert {"actionformer", "dense"} <= set(list_heads()) and {"identity", "fpn"} <= set(list_necks())
    model = create_detector(8, 3, dim=16, levels=3, stem=1, neck="fpn")
    out = model(torch.randn(2, 8, 40), torch.ones(2, 40, dtype=torch.bool))
    assert [o.shape[1] for o in out["logits"]] == [40, 20, 10] and out["distances"][0].shape == (2, 40, 2)
    with pytest.raises(ValueError, match="unknown head 'nope'; registered: actionformer, dense"):
        create_detector(8, 3, head="nope")


def test_targets_losses_and_soft_nms_by_hand():
    cls, dist = point_targets(torch.tensor([[2.0, 6.0]]), torch.tensor([1]), 8, levels=1, num_classes=2)[0]
    # centre 4, radius 1.5: points 3, 4, 5 are positive; distances to start/end
    assert cls[:, 1].nonzero().flatten().tolist() == [3, 4, 5]
    assert dist[4].tolist() == [2.0, 2.0] and dist[3].tolist() == [1.0, 3.0]
    assert diou_loss(torch.tensor([[2.0, 2.0]]), torch.tensor([[2.0, 2.0]])).item() == pytest.approx(0.0)
    # pred [-1, 1] vs target [-2, 2]: IoU 0.5, same centre -> 0.5
    assert diou_loss(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 2.0]])).item() == pytest.approx(0.5)
    segs = torch.tensor([[0.0, 10.0], [0.0, 10.0], [20.0, 30.0]])
    kept, scores, labels = soft_nms(segs, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]))
    # the duplicate (IoU 1) decays by exp(-1 / 0.5): 0.8 * e^-2
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.8 * np.exp(-2)], rel=1e-5)


@pytest.mark.slow
def test_detector_learns_visible_actions_and_is_registered(tmp_path, trainer_home):
    features = write_feature_set(tmp_path, streams=("rgb", "flow"))
    data = load_detection_data(str(tmp_path), "thumos14", features, "val")
    assert data.streams == "rgb+flow" and data.videos[0].features.shape == (64, 16)
    config = DetectorTrainConfig(root=str(tmp_path), features=features, dim=32, levels=3, stem=1, epochs=40,
                                 batch_size=3, lr=3e-3, warmup_steps=5, max_length=48)
    result = train_detector(config)
    assert result.segment.protocol == "thumos14" and result.segment.thresholds == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert result.metrics["mAP@0.5"] > 0.6, result.metrics
    assert result.model_uri == f"models:/{tmp_path.name}-detector-rgb+flow/1"
    model, data_tag = load_detector(result.model_uri)
    assert data_tag["features"] == [str(p) for p in map(__import__("pathlib").Path, features)]
    assert model.settings["in_channels"] == 16


@pytest.mark.slow
def test_dense_head_frame_map(tmp_path):
    features = write_feature_set(tmp_path)
    result = train_detector(DetectorTrainConfig(root=str(tmp_path), features=features, head="dense", dim=16,
                                                levels=2, stem=1, epochs=30, batch_size=3, lr=3e-3, warmup_steps=5,
                                                registry=False))
    assert result.metrics["frame_mAP"] > 0.8 and result.run_id is None


@pytest.mark.slow
def test_train_and_evaluate_kinds_run_in_process(tmp_path, trainer_home, capsys):
    from vidistill.platform.kinds import get_kind

    features = write_feature_set(tmp_path)
    train_kind = get_kind("train-detector")
    # As a job runs: the JSON stored at submission, parsed again by the job's driver (kinds/driver.py).
    stored, _ = train_kind.validated({"root": str(tmp_path), "features": features, "name": "kind-det",
                                      "set": ["epochs=3", "dim=16", "levels=2", "stem=1", "batch_size=3"]})
    train_kind.run(train_kind.parse(json.loads(json.dumps(stored))))
    assert "models:/kind-det/1: mAP@0.3" in capsys.readouterr().out
    evaluate = get_kind("evaluate-detectors")
    evaluate.run(evaluate.parse(evaluate.validated({"models": ["models:/kind-det/1"], "protocol": "activitynet"})[0]))
    out = capsys.readouterr().out
    assert "protocol: activitynet" in out and "mAP@0.95" in out and "models:/kind-det/1" in out
