"""A comparison study: arms x seeds x difficulty levels of the synthetic motion benchmark, as queue jobs.

    prepare (per difficulty) ──> train-teacher (seed s) ──> distill arms (seed s) ──┐
        └──────────────────────> train-rgb arms (seed s) ──────────────────────────┴──> evaluate (seed s)

Seeds are paired: for a seed s every arm starts from `seed=s` (the same initial weights where
the networks match, the same training clip plan) and its distilled arms learn from the teacher
trained with seed s; one evaluation job per (difficulty, seed) runs every arm's model on the
same clips (one clip plan per video, trainers/evaluate.py), with the fusion arms from it.

The study is recorded in `$VIDISTILL_HOME/studies/<name>/study.json` (job id of every step,
keyed by difficulty/seed/arm). Submitting it again resumes: jobs still in the queue are
kept, failed or cancelled ones retried (with the dependents that failed with them), and only
steps that have no job are submitted, so a rerun never queues a job twice.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from vidistill.platform.kinds import get_kind
from vidistill.platform.kinds.training import job_alias
from vidistill.platform.queue import JobNotFound, JobQueue
from vidistill.platform.settings import Settings
from vidistill.platform.submission import submit_job


@dataclass(frozen=True)
class Arm:
    """One row of the comparison: a training job of `kind` with `overrides`, or the late fusion
    (trainers/fusion.py) of another arm's model with the flow teacher."""

    name: str
    label: str  # as the paper's tables say it
    kind: str | None  # train-teacher | train-rgb | distill; None for a fusion arm
    overrides: tuple[str, ...] = ()
    fuses: str | None = None  # the arm fused with the flow teacher

    @property
    def needs_teacher(self) -> bool:
        return self.kind == "distill" or self.fuses is not None


TEACHER = "flow-teacher"
WARM = "warm-start"  # the pretraining set's folder and job keys
BASELINE = "rgb-plain"  # every paired test compares against it
# Named from the existing registries: attention variants (trainers/models) and distillation
# methods (trainers/methods). Rows of the paper's Tables 1 and 2.
ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm(TEACHER, "flow teacher (prob-atten)", "train-teacher"),
    Arm(BASELINE, "RGB I3D (plain)", "train-rgb", ("model.attention=none",)),
    Arm("rgb-soft-atten", "RGB soft-atten", "train-rgb", ("model.attention=soft-atten",)),
    Arm("rgb-soft-res", "RGB soft-res", "train-rgb", ("model.attention=soft-res",)),
    Arm("rgb-prob-atten", "RGB prob-atten", "train-rgb", ("model.attention=prob-atten",)),
    Arm("feature", "feature distillation", "distill", ("model.attention=none", "distill.objective=feature")),
    Arm("logit", "logit distillation", "distill", ("model.attention=none", "distill.objective=logit")),
    Arm("prob-distill", "Prob-Distill (attention)", "distill",
        ("model.attention=prob-atten", "distill.objective=attention")),
    Arm("prob-distill+flow", "Prob-Distill + flow teacher", None, fuses="prob-distill"),
    Arm("rgb-plain+flow", "RGB I3D + flow teacher", None, fuses=BASELINE),
)}


class StudyError(ValueError):
    """A study that cannot be submitted as asked; the message says what to change."""


@dataclass
class StudySpec:
    name: str
    arms: list[str]
    seeds: list[int]
    difficulties: list[str] = field(default_factory=lambda: ["easy"])
    size: str = "tiny"  # a quickstart size: data, preparation and schedule
    common: list[str] = field(default_factory=list)  # dotted overrides for every training job
    # Pretrain the backbones (plain RGB I3D, flow teacher) once on a larger, separate synthetic
    # set, and start every arm from them (platform/warm_start.py); False: from scratch.
    warm_start: bool = False
    priority: int = 0
    owner: str | None = None

    def check(self) -> None:
        from vidistill.datasets.synthetic import DIFFICULTIES
        from vidistill.platform.quickstart import SIZES

        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise StudyError(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
        if not self.arms or not self.seeds:
            raise StudyError("give at least one arm (--arms) and one seed (--seeds)")
        bad = [d for d in self.difficulties if d not in DIFFICULTIES]
        if bad or not self.difficulties:
            raise StudyError(f"unknown difficulty {bad[0] if bad else ''!r}; choose from {', '.join(DIFFICULTIES)}")
        if self.size not in SIZES:
            raise StudyError(f"unknown size {self.size!r}; choose from {', '.join(SIZES)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise StudyError(f"seeds repeat: {self.seeds}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise StudyError(f"study name {self.name!r}: give a plain folder name, e.g. --name tiny-easy")

    def settings_digest(self) -> str:
        """What must not change between a study's runs (arms and seeds may grow)."""
        return hashlib.sha256(json.dumps([self.size, self.common, *(["warm"] if self.warm_start else [])], sort_keys=True)
                              .encode()).hexdigest()[:16]

    def trained_arms(self) -> list[str]:
        """Arms that train a model, the teacher first when any arm needs it, in a stable order."""
        wanted = set(self.arms) | {ARMS[a].fuses for a in self.arms if ARMS[a].fuses}
        if any(ARMS[a].needs_teacher for a in wanted):
            wanted.add(TEACHER)
        return [a for a in ARMS if a in wanted and ARMS[a].kind is not None]


def study_folder(settings: Settings, name: str) -> Path:
    return settings.home / "studies" / name


@dataclass
class StudyRecord:
    """What a study submitted: its spec, and the job id and model URI of every step by key."""

    spec: dict
    digest: str
    jobs: dict[str, int] = field(default_factory=dict)  # "easy/prepare", "easy/0/prob-distill", "easy/0/evaluate"
    uris: dict[str, str] = field(default_factory=dict)  # "easy/0/prob-distill" -> models:/...@job-N
    evaluations: dict[str, list[str]] = field(default_factory=dict)  # "easy/0" -> keys of the evaluate job's models
    study_run: str | None = None  # the MLflow run holding the table and plots

    @staticmethod
    def load(path: Path) -> "StudyRecord | None":
        return StudyRecord(**json.loads(path.read_text())) if path.is_file() else None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        temporary.replace(path)  # a study interrupted mid-submission keeps a readable record


@dataclass
class SubmittedStudy:
    record: StudyRecord
    submitted: list[int]  # new jobs
    retried: list[int]  # failed or cancelled jobs re-queued
    kept: list[int]  # jobs of an earlier run still in the queue

    def to_dict(self) -> dict:
        return {"name": self.record.spec["name"], "jobs": self.record.jobs, "models": self.record.uris,
                "submitted": self.submitted, "retried": self.retried, "kept": self.kept}


def submit_study(queue: JobQueue, spec: StudySpec, echo: Callable[[str], None] = lambda _: None) -> SubmittedStudy:
    """Submit (or resume) the study's jobs; returns what it submitted, retried and kept."""
    from vidistill.trainers.tracking import registered_name

    spec.check()
    folder = study_folder(queue.settings, spec.name)
    path = folder / "study.json"
    record = StudyRecord.load(path)
    if record is not None and record.digest != spec.settings_digest():
        raise StudyError(f"study {spec.name!r} was submitted with another size, --set or --warm-start "
                         f"({path}); choose another --name, or give the same settings to resume it")
    if record is None:
        record = StudyRecord(asdict(spec), spec.settings_digest())
    else:  # arms and seeds may grow; the recorded spec becomes their union
        merged = dict(record.spec)
        for key in ("arms", "seeds", "difficulties"):
            merged[key] = list(dict.fromkeys([*record.spec[key], *getattr(spec, key)]))
        record.spec = merged
    done = SubmittedStudy(record, [], [], [])

    def existing(key: str) -> int | None:
        job_id = record.jobs.get(key)
        if job_id is None:
            return None
        try:
            job = queue.get(job_id)
        except JobNotFound:
            return None  # another queue, or a wiped database: submit anew
        if job.state in ("failed", "cancelled"):
            # The dependents that failed with it come back too (once, however many of their
            # dependencies are retried).
            done.retried.extend(i for i in queue.retry(job_id) if i not in done.retried)
            echo(f"retrying job {job_id} ({job.kind}, {key}), which had {job.state}")
        elif job_id not in done.retried:
            done.kept.append(job_id)
        return job_id

    def step(key: str, kind: str, config: dict, after: list[int]) -> int:
        job_id = existing(key)
        if job_id is None:
            job_id = submit_job(queue, kind, config, owner=spec.owner, priority=spec.priority,
                                depends_on=after).id
            record.jobs[key] = job_id
            done.submitted.append(job_id)
            record.save(path)  # after every job, so an interrupted submission resumes without duplicates
        return job_id

    def prepared_set(label: str, synthetic: dict) -> tuple[dict, int, object]:
        source, prepared, size = _write_data(folder / label, spec.size, synthetic, echo)
        prepare_id = step(f"{label}/prepare", "prepare",
                          {"root": str(source), "out": str(prepared), "layout": "generic", **size.prepare}, [])
        return {"root": str(source), "prepared": str(prepared), "layout": "generic"}, prepare_id, size

    # The warm start: backbones pretrained once, on a separate set (its own seed, twice the videos).
    pretrained: dict[str, tuple[str, int]] = {}  # modality -> (checkpoint path, the job writing it)
    if spec.warm_start:
        from vidistill.platform.quickstart import SIZES

        base = SIZES[spec.size].synthetic
        data, prepare_id, size = prepared_set(WARM, {**base, "seed": 1000, "videos_per_class": 2 * base["videos_per_class"]})
        for modality, arm in (("rgb", BASELINE), ("flow", TEACHER)):
            config = {**data, "set": [*size.training, f"data.name=study-{spec.name}-{WARM}", *spec.common,
                                      *(size.teacher if arm == TEACHER else ()), *ARMS[arm].overrides]}
            job_id = step(f"{WARM}/{modality}", ARMS[arm].kind, config, [prepare_id])
            resolved = get_kind(ARMS[arm].kind).parse(config).resolved
            uri = f"models:/{registered_name(resolved)}@{job_alias(job_id)}"
            checkpoint = folder / WARM / f"{modality}.pt"
            export = {"command": f"{sys.executable} -m vidistill.platform.warm_start {uri} {checkpoint}",
                      "cpus": 1.0, "workdir": str(folder)}
            pretrained[modality] = (str(checkpoint), step(f"{WARM}/export-{modality}", "command", export, [job_id]))

    trained = spec.trained_arms()
    for difficulty in spec.difficulties:
        from vidistill.datasets.synthetic import DIFFICULTIES
        from vidistill.platform.quickstart import SIZES

        data, prepare_id, size = prepared_set(difficulty, {**SIZES[spec.size].synthetic, **DIFFICULTIES[difficulty]})
        common = [*size.training, f"data.name=study-{spec.name}-{difficulty}", *spec.common]
        for seed in spec.seeds:
            prefix = f"{difficulty}/{seed}"
            ids: dict[str, int] = {}
            for name in trained:
                arm = ARMS[name]
                config = {**data, "set": [*common, *(size.teacher if name == TEACHER else ()),
                                          *arm.overrides, f"seed={seed}"]}
                after = [prepare_id]
                if arm.kind == "distill":
                    config["teacher"] = record.uris[f"{prefix}/{TEACHER}"]
                    after = [ids[TEACHER]]
                if pretrained:
                    checkpoint, export_id = pretrained["flow" if name == TEACHER else "rgb"]
                    config["set"].insert(-1, f"model.pretrained={checkpoint}")
                    after.append(export_id)
                ids[name] = step(f"{prefix}/{name}", arm.kind, config, after)
                resolved = get_kind(arm.kind).parse(config).resolved
                record.uris[f"{prefix}/{name}"] = f"models:/{registered_name(resolved)}@{job_alias(ids[name])}"
            record.save(path)
            # One evaluation of every model of this seed on the same clips; fusion arms from it.
            fused = {ARMS[a].fuses for a in spec.arms if ARMS[a].fuses}
            evaluated = [name for name in trained if name in spec.arms or name in fused
                         or (fused and name == TEACHER)]
            models = [record.uris[f"{prefix}/{name}"] for name in evaluated]
            fuse = [f"{evaluated.index(ARMS[a].fuses)}+{evaluated.index(TEACHER)}" for a in spec.arms if ARMS[a].fuses]
            evaluation = {**data, "models": models, "fuse": fuse,
                          "set": [item for item in common if item.startswith("data.")]}
            # Keyed by the models it evaluates: an arm added later gets an evaluation of its own seed.
            key = f"{prefix}/evaluate:{'+'.join(evaluated)}"
            step(key, "evaluate", evaluation, [ids[name] for name in evaluated])
            record.evaluations[key] = evaluated
    record.save(path)
    return done


def wait_for_study(queue: JobQueue, record: StudyRecord, echo: Callable[[str], None], *, poll: float = 5.0,
                   timeout: float | None = None) -> dict[str, int]:
    """Wait until none of the study's jobs is queued or running, printing the counts by state as
    they change; returns them. A failed job does not stop the wait: the table shows what finished."""
    import time

    began, seen = time.monotonic(), None
    while True:
        counts: dict[str, int] = {}
        for job_id in record.jobs.values():
            try:
                state = queue.get(job_id).state
            except JobNotFound:
                state = "not in this queue"
            counts[state] = counts.get(state, 0) + 1
        if counts != seen:
            seen = counts
            minutes = (time.monotonic() - began) / 60
            echo(f"[{minutes:5.1f} min] jobs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        if not counts.get("queued") and not counts.get("running"):
            return counts
        if timeout is not None and time.monotonic() - began > timeout:
            echo(f"stopped waiting after {timeout:.0f} s; the jobs go on (`vidistill compare --report "
                 f"{record.spec['name']}` later)")
            return counts
        time.sleep(poll)


def _write_data(folder: Path, size_name: str, synthetic: dict, echo) -> tuple[Path, Path, object]:
    """The synthetic set under `folder/source` (written once); (source, prepared, size)."""
    from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic
    from vidistill.platform.quickstart import SIZES

    size = SIZES[size_name]
    config = SyntheticConfig(**synthetic)
    source, prepared = folder / "source", folder / "prepared"
    recorded = source / "synthetic.json"
    if not (recorded.is_file() and json.loads(recorded.read_text()) == json.loads(json.dumps(asdict(config)))):
        if (source / "classes.txt").exists():
            raise StudyError(f"{source} holds a synthetic set made with other settings; remove the study's "
                             f"folder {folder.parent} or choose another --name")
        make_synthetic(source, config)
        echo(f"{folder.name}: wrote {config.classes * config.videos_per_class} videos to {source}")
    return source, prepared, size


__all__ = ["ARMS", "BASELINE", "TEACHER", "Arm", "StudyError", "StudyRecord", "StudySpec", "SubmittedStudy",
           "study_folder", "submit_study", "wait_for_study"]
