"""Temporal action detection end to end as dependent queue jobs.

    prepare (untrimmed) ───────────────┬──> extract-features rgb ──┬──> train-detector rgb ──────┐
    [prepare (trimmed) ─> train-rgb ───┘                           ├──> train-detector rgb+flow ─┼─> evaluate-detectors
     prepare (trimmed) ─> train-teacher] ──> extract-features flow ┴──> train-detector flow ─────┘

The feature models are either given as registry URIs (`rgb_model`, `flow_model`) or trained
here by recognition on a trimmed set (`recognition_root`: the motion benchmark for the
synthetic untrimmed set; the actions' own clips for a real one). Models that do not exist
yet are named by the alias their job will set (`models:/NAME@job-N`), as in `pipeline`.
Every config is checked before the first job is submitted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidistill.platform.kinds import ConfigError, get_kind
from vidistill.platform.kinds.training import job_alias
from vidistill.platform.queue import JobQueue
from vidistill.platform.submission import check_submission, submit_job


@dataclass
class DetectionPipelineSpec:
    root: str  # untrimmed, annotated set (e.g. `datasets make-untrimmed`)
    prepared: str  # its frames and flow
    features: str  # feature folders go under here: <features>/rgb, <features>/flow
    layout: str = "thumos14"
    prepare: bool = True
    prepare_options: dict = field(default_factory=dict)  # flow, bound, fps, width, height, cpus
    rgb_model: str | None = None
    flow_model: str | None = None
    recognition_root: str | None = None  # trimmed set the feature models are trained on
    recognition_prepared: str | None = None
    recognition_prepare_options: dict = field(default_factory=dict)
    recognition_set: list[str] = field(default_factory=list)  # overrides of both recognition trainings
    extract: dict = field(default_factory=dict)  # snippet_length, stride, input_size, chunk_snippets
    detector_set: list[str] = field(default_factory=list)  # DetectorTrainConfig overrides, every detector
    protocol: str = "thumos14"
    priority: int = 0
    owner: str | None = None
    max_attempts: int = 3


@dataclass
class DetectionPipelineJobs:
    prepare: int | None
    recognition_prepare: int | None
    rgb_model_job: int | None
    flow_model_job: int | None
    extract: dict  # stream -> job id
    detectors: dict  # streams -> job id
    evaluate: int
    models: dict  # rgb / flow feature model URIs and each detector's URI

    def ids(self) -> list[int]:
        ids = [self.prepare, self.recognition_prepare, self.rgb_model_job, self.flow_model_job,
               *self.extract.values(), *self.detectors.values(), self.evaluate]
        return [i for i in ids if i is not None]

    def to_dict(self) -> dict:
        return asdict(self)


def submit_detection_pipeline(queue: JobQueue, spec: DetectionPipelineSpec) -> DetectionPipelineJobs:
    from vidistill.trainers.tracking import registered_name

    if (spec.rgb_model is None or spec.flow_model is None) and spec.recognition_root is None:
        raise ConfigError("recognition_root", "give both feature models (--rgb-model, --flow-model) or a trimmed "
                                              "set to train them on (--recognition-root)")
    data = Path(spec.root).name
    checks: list[tuple[str, dict]] = []
    prepare = {"root": spec.root, "out": spec.prepared, "layout": spec.layout, **spec.prepare_options}
    if spec.prepare:
        checks.append(("prepare", prepare))
    recognition = None
    if spec.rgb_model is None or spec.flow_model is None:
        recognition_prepared = spec.recognition_prepared or f"{spec.recognition_root.rstrip('/')}-prepared"
        rec_prepare = {"root": spec.recognition_root, "out": recognition_prepared, "layout": "generic",
                       **spec.recognition_prepare_options}
        base = {"prepared": recognition_prepared, "root": spec.recognition_root, "layout": "generic",
                "set": list(spec.recognition_set)}
        recognition = (rec_prepare, base)
        checks += [("prepare", rec_prepare), ("train-teacher", base), ("train-rgb", base)]
    names = {}
    for kind, config in checks:
        parsed = get_kind(kind).parse(config)
        if kind == "prepare":  # its source folder is checked now, so a missing one queues nothing at all
            check_submission(kind, config, owner=spec.owner, priority=spec.priority, depends_on=[])
        if kind in ("train-teacher", "train-rgb"):
            names[kind] = registered_name(parsed.resolved)
    streams = {"rgb": ["rgb"], "flow": ["flow"], "rgb+flow": ["rgb", "flow"]}
    folders = {s: str(Path(spec.features) / s) for s in ("rgb", "flow")}
    placeholder = "models:/placeholder@job-0"
    for stream in ("rgb", "flow"):
        get_kind("extract-features").validated({"prepared": spec.prepared, "out": folders[stream],
                                                "model": placeholder, **spec.extract})
    for name, parts in streams.items():
        get_kind("train-detector").validated({"root": spec.root, "layout": spec.layout, "name": f"{data}-detector-{name}",
                                              "features": [folders[p] for p in parts], "set": spec.detector_set})
    get_kind("evaluate-detectors").validated({"models": [placeholder], "protocol": spec.protocol})

    def submit(kind: str, config: dict, after: list[int | None]) -> int:
        return submit_job(queue, kind, config, owner=spec.owner, priority=spec.priority,
                          depends_on=[i for i in after if i is not None], max_attempts=spec.max_attempts).id

    prepare_id = submit("prepare", prepare, []) if spec.prepare else None
    rec_prepare_id = rgb_job = flow_job = None
    models = {"rgb": spec.rgb_model, "flow": spec.flow_model}
    if recognition is not None:
        rec_prepare, base = recognition
        rec_prepare_id = submit("prepare", rec_prepare, [])
        if spec.flow_model is None:
            flow_job = submit("train-teacher", base, [rec_prepare_id])
            models["flow"] = f"models:/{names['train-teacher']}@{job_alias(flow_job)}"
        if spec.rgb_model is None:
            rgb_job = submit("train-rgb", base, [rec_prepare_id])
            models["rgb"] = f"models:/{names['train-rgb']}@{job_alias(rgb_job)}"
    extract = {}
    for stream, model_job in (("rgb", rgb_job), ("flow", flow_job)):
        extract[stream] = submit("extract-features", {"prepared": spec.prepared, "out": folders[stream],
                                                      "model": models[stream], **spec.extract},
                                 [prepare_id, model_job])
    detectors = {}
    for name, parts in streams.items():
        detectors[name] = submit("train-detector", {
            "root": spec.root, "layout": spec.layout, "name": f"{data}-detector-{name}",
            "features": [folders[p] for p in parts], "set": spec.detector_set}, [extract[p] for p in parts])
        models[f"detector-{name}"] = f"models:/{data}-detector-{name}@{job_alias(detectors[name])}"
    evaluate = submit("evaluate-detectors", {"models": [models[f"detector-{n}"] for n in streams],
                                             "protocol": spec.protocol}, list(detectors.values()))
    return DetectionPipelineJobs(prepare_id, rec_prepare_id, rgb_job, flow_job, extract, detectors, evaluate, models)


# --- the quickstart's detection part -------------------------------------------------------------

# Trimmed clips of the same motions train the feature models (the quickstart's small recipe),
# then the untrimmed set is prepared at the same size and frame rate its videos have.
QUICKSTART = {
    "tiny": dict(untrimmed=dict(train_videos=3, test_videos=2, min_seconds=8, max_seconds=10),
                 trimmed=dict(classes=4, videos_per_class=4, frames=24, width=96, height=72, distractors=1, fps=10),
                 training=["model.name=i3d_tiny", "data.flip=false", "data.loader_workers=1",
                           "data.backend=opencv", "batch_size=8", "optim.lr=0.01", "data.clip_length=8",
                           "data.crop_size=64", "data.test_clips_per_video=2", "epochs=1"],
                 detector=["epochs=5", "dim=32", "levels=3", "stem=1", "batch_size=2"]),
    "small": dict(untrimmed=dict(),
                  trimmed=dict(classes=4, videos_per_class=16, frames=24, width=96, height=72, distractors=1,
                                fps=10, test_fraction=0.25),
                  training=["model.name=i3d_tiny", "data.flip=false", "data.loader_workers=1",
                            "data.backend=opencv", "batch_size=8", "optim.lr=0.01", "data.clip_length=16",
                            "data.crop_size=64", "data.test_clips_per_video=2", "epochs=15",
                            "optim.plateau_patience=16"],
                  detector=["epochs=30", "dim=64", "levels=4", "stem=1", "batch_size=2", "lr=0.002"]),
}


def detection_quickstart(size: str = "small", *, settings=None, echo=print, poll: float = 2.0,
                         timeout: float | None = None, start_dispatcher: bool = True) -> tuple[DetectionPipelineJobs, dict]:
    """Write both synthetic sets, submit the detection pipeline, wait; returns the jobs and the table."""
    import json

    from vidistill.datasets.detection.synthetic import make_untrimmed, untrimmed_config
    from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic
    from vidistill.platform.dispatcher import ensure_dispatcher
    from vidistill.platform.quickstart import QuickstartFailed, _wait
    from vidistill.platform.settings import Settings
    from vidistill.trainers import tracking

    settings = settings or Settings.from_env()
    recipe = QUICKSTART[size]
    work = settings.home / "quickstart-detection" / size
    untrimmed, trimmed = work / "untrimmed", work / "trimmed"
    if not untrimmed.exists():
        make_untrimmed(untrimmed, untrimmed_config("tiny", **recipe["untrimmed"]))
        echo(f"synthetic untrimmed benchmark written to {untrimmed}")
    if not trimmed.exists():
        make_synthetic(trimmed, SyntheticConfig(**recipe["trimmed"]))
        echo(f"synthetic trimmed motion clips (for the feature models) written to {trimmed}")
    flow = {"flow": "farneback", "bound": 4.0, "width": 96, "height": 72, "fps": 10.0}
    spec = DetectionPipelineSpec(
        root=str(untrimmed), prepared=str(work / "untrimmed-prepared"), features=str(work / "features"),
        prepare_options=flow, recognition_root=str(trimmed), recognition_prepared=str(work / "trimmed-prepared"),
        recognition_prepare_options=flow,
        recognition_set=[*recipe["training"], f"data.name=qs-detection-{size}"],
        extract={"chunk_snippets": 16}, detector_set=recipe["detector"])
    queue = JobQueue(settings)
    jobs = submit_detection_pipeline(queue, spec)
    (work / "pipeline.json").write_text(json.dumps(jobs.to_dict(), indent=1))
    echo(f"submitted the detection pipeline: jobs {', '.join(map(str, jobs.ids()))}")
    if start_dispatcher:
        pid = ensure_dispatcher(settings)
        if pid is not None:
            echo(f"started a dispatcher in the background (pid {pid})")
    _wait(queue, jobs, echo, poll, timeout)
    run_id = queue.get(jobs.evaluate).mlflow_run_id
    if run_id is None:
        raise QuickstartFailed(f"evaluation job {jobs.evaluate} recorded no MLflow run")
    client = tracking.configure()
    table = json.loads(Path(client.download_artifacts(run_id, "detection_table.json")).read_text())
    return jobs, table
