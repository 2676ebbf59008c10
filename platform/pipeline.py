"""The method end to end as dependent queue jobs: prepare -> teacher -> student -> evaluation.

    prepare ──> train-teacher ──> distill ──┬──> evaluate: student, teacher, RGB baseline,
        └─────> train-rgb ──────────────────┘    student + teacher and RGB + teacher fused

The student names its teacher before the teacher exists: `models:/<data>-teacher-flow@job-N`,
the alias the teacher job N puts on the version it registers (see kinds/training.py); the
student pins the exact version when it starts. Every job's config is checked before the first
is submitted, so a wrong option submits nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vidistill.platform.kinds import get_kind
from vidistill.platform.kinds.training import job_alias
from vidistill.platform.queue import JobQueue
from vidistill.platform.submission import submit_job


@dataclass
class PipelineSpec:
    root: str  # source data set
    prepared: str  # where `prepare` writes (or has written) the frames and flow
    layout: str = "generic"
    split: int = 1
    prepare: bool = True  # False: the prepared folder exists already
    prepare_options: dict = field(default_factory=dict)  # flow, bound, fps, width, height, cpus
    train_config: str | None = None  # one training config file for every training job
    common: list[str] = field(default_factory=list)  # dotted overrides for every training job
    teacher: list[str] = field(default_factory=list)  # ... for the teacher only
    student: list[str] = field(default_factory=list)
    rgb: list[str] | None = field(default_factory=lambda: ["model.attention=none"])  # None: no RGB baseline
    evaluate: list[str] = field(default_factory=list)  # data.* overrides for the evaluations
    priority: int = 0
    owner: str | None = None
    max_attempts: int = 3


@dataclass
class PipelineJobs:
    """Job ids of one submitted pipeline, by step."""

    prepare: int | None
    teacher: int
    student: int
    rgb: int | None
    evaluate: int  # the student, the teacher and the RGB baseline; student+teacher and RGB+teacher fused
    teacher_uri: str  # the registry URIs the models will have (aliases until they exist)
    student_uri: str
    rgb_uri: str | None

    def ids(self) -> list[int]:
        return [i for i in (self.prepare, self.teacher, self.rgb, self.student, self.evaluate) if i is not None]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _training(spec: PipelineSpec, role_overrides: list[str]) -> dict:
    base = {"prepared": spec.prepared, "root": spec.root, "layout": spec.layout,
            "set": [f"data.split={spec.split}", *spec.common, *role_overrides]}
    return {**base, "train_config": spec.train_config} if spec.train_config else base


def submit_pipeline(queue: JobQueue, spec: PipelineSpec) -> PipelineJobs:
    """Validate every step, then submit them as dependent jobs; returns their ids."""
    from vidistill.trainers.tracking import registered_name

    prepare = {"root": spec.root, "out": spec.prepared, "layout": spec.layout, "split": spec.split,
               **spec.prepare_options}
    teacher = _training(spec, spec.teacher)
    student = _training(spec, spec.student)
    rgb = _training(spec, spec.rgb) if spec.rgb is not None else None
    evaluation = {"prepared": spec.prepared, "root": spec.root, "layout": spec.layout,
                  "set": [f"data.split={spec.split}", *_data_overrides(spec.common), *spec.evaluate]}
    if spec.train_config:
        evaluation["train_config"] = spec.train_config

    # Names the models will be registered under, from the resolved configs.
    def name_of(kind: str, config: dict) -> str:
        job_config = get_kind(kind).parse(config)
        return registered_name(job_config.resolved)

    teacher_name = name_of("train-teacher", teacher)
    placeholder = f"models:/{teacher_name}@{job_alias(0)}"
    student_name = name_of("distill", {**student, "teacher": placeholder})
    rgb_name = name_of("train-rgb", rgb) if rgb is not None else None
    if spec.prepare:
        get_kind("prepare").validated(prepare)
    get_kind("evaluate").validated({**evaluation, "models": [placeholder]})

    def submit(kind: str, config: dict, after: list[int | None]) -> int:
        return submit_job(queue, kind, config, owner=spec.owner, priority=spec.priority,
                            depends_on=[i for i in after if i is not None], max_attempts=spec.max_attempts).id

    prepare_id = submit("prepare", prepare, []) if spec.prepare else None
    teacher_id = submit("train-teacher", teacher, [prepare_id])
    teacher_uri = f"models:/{teacher_name}@{job_alias(teacher_id)}"
    student_id = submit("distill", {**student, "teacher": teacher_uri}, [teacher_id])
    student_uri = f"models:/{student_name}@{job_alias(student_id)}"
    rgb_id = rgb_uri = None
    if rgb is not None:
        rgb_id = submit("train-rgb", rgb, [prepare_id])
        rgb_uri = f"models:/{rgb_name}@{job_alias(rgb_id)}"
    # One evaluation of every model on the same clips, so their speeds compare side by side.
    models = [student_uri, teacher_uri] + ([rgb_uri] if rgb is not None else [])
    fuse = ["0+1"] + (["2+1"] if rgb is not None else [])
    evaluate_id = submit("evaluate", {**evaluation, "models": models, "fuse": fuse},
                         [student_id, teacher_id, rgb_id])
    return PipelineJobs(prepare_id, teacher_id, student_id, rgb_id, evaluate_id, teacher_uri, student_uri, rgb_uri)


def _data_overrides(overrides: list[str]) -> list[str]:
    """The data.* part of the training overrides: evaluation reads the clips training read."""
    return [item for item in overrides if item.startswith("data.")]


__all__ = ["PipelineJobs", "PipelineSpec", "submit_pipeline"]
