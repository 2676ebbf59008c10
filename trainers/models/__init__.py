"""Models: backbones with pluggable attention heads, built by name.

Importing this package registers every model family.
"""
from vidistill.trainers.models import i3d  # noqa: F401  (registers i3d, i3d_small, i3d_tiny)
from vidistill.trainers.models.attention import (
    ATTENTION_VARIANTS,
    AttentionMap,
    InvalidAttentionError,
    ModelOutput,
    attention_variant,
)
from vidistill.trainers.models.factory import (
    STUDENT_HEADS,
    TEACHER_HEADS,
    UnknownModelError,
    create_model,
    create_student,
    create_teacher,
    list_models,
    register_model,
)
from vidistill.trainers.models.i3d import PretrainedMismatchError, load_pytorch_i3d_checkpoint

__all__ = [
    "ATTENTION_VARIANTS", "AttentionMap", "InvalidAttentionError", "ModelOutput", "PretrainedMismatchError",
    "STUDENT_HEADS", "TEACHER_HEADS", "UnknownModelError", "attention_variant", "create_model", "create_student",
    "create_teacher", "list_models", "load_pytorch_i3d_checkpoint", "register_model",
]
