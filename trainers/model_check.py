"""One distillation step on a synthetic clip batch: builds the flow teacher and the RGB student,
runs the teacher, computes Eq. 8, back-propagates and takes one SGD step.

It shows that the models and the loss fit together on this machine (shapes, parameter
counts, each loss term, time per pass) before any data set is involved. The clips are
random noise, so the loss values say nothing about accuracy.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from vidistill.trainers.losses import TeacherSignals, attention_distillation_loss
from vidistill.trainers.models import create_model, create_student, create_teacher


@dataclass
class ModelCheckConfig:
    model: str = "i3d"
    num_classes: int = 101
    frames: int = 24
    height: int = 224
    width: int = 224
    batch_size: int = 2
    attention: str = "prob-atten"
    seed: int = 0
    device: str = "auto"  # auto: cuda when available


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_model_check(config: ModelCheckConfig) -> dict:
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                          else "cpu" if config.device == "auto" else config.device)
    on_gpu = device.type == "cuda"
    # The fast path on GPU: bf16 autocast and channels-last 3D tensors.
    memory_format = torch.channels_last_3d if on_gpu else torch.contiguous_format
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)

    teacher = create_teacher(config.model, num_classes=config.num_classes, attention=config.attention)
    student = create_student(config.model, num_classes=config.num_classes, attention=config.attention)
    plain_rgb = create_model(config.model, num_classes=config.num_classes)
    teacher = teacher.to(device, memory_format=memory_format).eval().requires_grad_(False)
    student = student.to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)

    shape = (config.batch_size, config.frames, config.height, config.width)
    b, t, h, w = shape
    rgb = (torch.rand((b, 3, t, h, w), generator=generator) * 2 - 1).to(device, memory_format=memory_format)
    flow = (torch.rand((b, 2, t, h, w), generator=generator) * 2 - 1).to(device, memory_format=memory_format)
    labels = torch.randint(config.num_classes, (b,), generator=generator).to(device)

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
        start = time.perf_counter()
        with torch.no_grad():
            teacher_out = teacher(flow)
        sync()
        teacher_s = time.perf_counter() - start

        start = time.perf_counter()
        student_out = student(rgb)
        terms = attention_distillation_loss(student_out, labels, TeacherSignals.from_output(teacher_out))
    terms.total.backward()
    sync()
    student_s = time.perf_counter() - start
    head_grads = {
        name: float(student.head.proj.weight.grad[i].norm()) for i, name in enumerate(student.head.branches)
    }
    optimizer.step()

    motion = student_out.attention["motion"]
    slice_sums = motion.probs.detach().flatten(2).sum(-1)
    return {
        "config": asdict(config),
        "device": str(device),
        "parameters": {
            "teacher_flow": _count(teacher),
            "student_rgb": _count(student),
            "plain_rgb_i3d": _count(plain_rgb),
        },
        "shapes": {
            "rgb_clip": list(rgb.shape),
            "flow_clip": list(flow.shape),
            "phi_block4": [b, student.phi_channels, *motion.log_probs.shape[1:]],
            "block5_features": list(student_out.features.shape),
            "attention_map": list(motion.log_probs.shape),
            "logits": list(student_out.logits.shape),
        },
        "loss": terms.as_floats(),
        "attention_slice_sums": [float(slice_sums.min()), float(slice_sums.max())],
        "attention_grad_norms": head_grads,
        "seconds": {"teacher_forward": teacher_s, "student_forward_backward": student_s},
    }
