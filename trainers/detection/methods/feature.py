"""Plain feature distillation, the baseline of decomposed distillation (its Sec. "direct distillation").

    --set method=feature --set 'teachers=[{features: FLOW, detector: "models:/D-detector-flow/1"}]'

One RGB detector whose whole embedding (its first 1D-conv projection, `Detector.embed`) is
regressed onto the flow teacher's (the frozen teacher detector's embedding, or the teacher
stream's features without one), plus its detection loss:
    L = L_det + mimic_weight * teacher.weight * mimic(embed(rgb), teacher)
Unlike the decomposed method the one representation must serve both motion and appearance, which
is the conflict the decomposed method's two branches avoid. The student's width is the target's,
so no regressor stands between them (the detector's `dim` is overridden); the mimic loss and its
default (L2) are those of the decomposed method, for a like-for-like baseline.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from vidistill.trainers.detection.methods import (DetectionMethod, StudentSpec, TeacherBatch,
                                                  register_detection_method)
from vidistill.trainers.detection.methods.decomposed import mimic_loss, mimic_target, target_width
from vidistill.trainers.detection.models import create_detector, detection_loss
from vidistill.trainers.schema import Schema


class FeatureOptions(Schema):
    mimic: Literal["l2", "cosine"] = Field("l2", description="feature-mimic loss of the embedding")
    mimic_weight: float = Field(1.0, ge=0, description="weight of the feature-mimic loss")


def build(spec: StudentSpec, options: FeatureOptions):
    return create_detector(spec.in_channels, spec.num_classes, **{**spec.detector, "dim": target_width(spec)})


def loss(output: dict, targets: list, teachers: list[TeacherBatch], options: FeatureOptions) -> dict:
    teacher = teachers[0]
    return {"detection": detection_loss(output, targets)[0],
            "mimic": options.mimic_weight * teacher.weight * mimic_loss(output["embedding"], mimic_target(teacher),
                                                                        teacher.mask, options.mimic)}


FEATURE = register_detection_method(DetectionMethod(
    "feature", "plain feature distillation: the RGB detector's embedding regressed onto the flow teacher's",
    build, loss, FeatureOptions, min_teachers=1))
