"""Hyperparameter search on Ray Tune with ASHA early stopping, tracked as one MLflow run with its trials.

    from vidistill.trainers.config import load_config
    from vidistill.trainers.tune import load_space, tune
    result = tune(load_config("student.yaml"), load_space("space.yaml"), trials=16, name="ucf101-search")
    result.model_uri          # the best trial's model, registered with its trial config as tags

The search space (its file format and checks) is `vidistill.trainers.search_space`.

How a trial trains: each Tune trial is the driver of one ordinary `train()` run (Ray Train V2
nested in Tune), so the training loop stays `train_worker`. The trial's run is an MLflow child
run (`mlflow.parentRunId`) of the tuning run; its workers log the per-epoch curve there, and a
Train callback forwards each epoch's metrics to Tune, where ASHA (`AsyncHyperBandScheduler`)
stops the trials whose validation accuracy falls behind at its rungs (time unit: epochs). A
trial's driver asks Ray for no resources; its Train workers ask for `cpus_per_worker` and
`gpus_per_worker` each (half a GPU lets two trials share one), and `max_concurrent` trials run
at once.

Trials are ranked by validation accuracy; validation loss breaks ties (`tune_score` =
accuracy - 1e-6 * loss), which matters when a small validation set gives several trials the same
accuracy. The best trial (by its last epoch) has its final checkpoint registered like any
trained model, with `vidistill.tune.*` tags holding its trial config. A results table goes to
stdout and to the tuning run as `tune_results.csv` and `tune_results.md`.

Detectors: `tune_detector(DetectorTrainConfig(...), parse_space(data, "detection"), trials)`
searches a temporal action detector's fields and its method's options (`method_options.*`, e.g.
the decomposed method's mimic weight and fusion window); each trial is one `train_detector` in
its own Ray process, ranked by validation mAP on a held-out slice of the training videos.

Resume: the experiment lives at `storage/name`. Calling `tune` again with the same name after
the process died restores it (`Tuner.restore`): finished trials are kept, unfinished ones
continue from their last Ray Train checkpoint in their own child run, and everything stays in
the same tuning run.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prettytable import PrettyTable, TableStyle

from vidistill.datasets.ray_session import connect_ray
from vidistill.trainers import methods, tracking
from vidistill.trainers.config import ConfigError, TrainConfig, worker_resources
from vidistill.trainers.detection.train import TAG_LOGGED_MODEL, register_detector, train_detector
from vidistill.trainers.search_space import (  # noqa: F401 (the space's names, as tune() takes them)
    ALIASES, LAMBDA2, SearchSpace, _short, check_space, default_space, lambda2_unit, load_space, parse_space,
    trial_config)

TAG_PREFIX = "vidistill.tune."
TAG_NAME = TAG_PREFIX + "name"  # on the tuning run: the Tune experiment it records
TAG_TRIAL = TAG_PREFIX + "trial_id"  # on a child run
TAG_STOPPED_EARLY = TAG_PREFIX + "stopped_early"
TAG_PARENT = "mlflow.parentRunId"
TIME_ATTR = "epochs_done"
SCORE = "tune_score"
RESULTS_CSV, RESULTS_MD, SPACE_FILE = "tune_results.csv", "tune_results.md", "tune_space.json"


@dataclass
class TrialRow:
    trial_id: str
    run_id: str | None
    status: str  # completed | stopped early | error | not run
    epochs: int
    val_metric: float | None  # the search's metric: val_accuracy (recognition) or val_mAP (detection)
    val_loss: float | None
    best_val_metric: float | None
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: str | None = None  # a Ray Train checkpoint, or a detector's logged model URI
    score: float | None = None

    @property
    def val_accuracy(self) -> float | None:
        return self.val_metric


@dataclass
class TuneResult:
    run_id: str  # the tuning (parent) MLflow run
    name: str  # the Tune experiment, under storage
    rows: list[TrialRow]
    best: TrialRow | None
    best_config: TrainConfig | None
    registered_name: str | None
    model_version: str | None
    table: str

    @property
    def model_uri(self) -> str | None:
        return f"models:/{self.registered_name}/{self.model_version}" if self.model_version else None

    @property
    def stopped_early(self) -> list[TrialRow]:
        return [r for r in self.rows if r.status == "stopped early"]


def find_tuning_run(name: str, experiment: str) -> str | None:
    """The tuning run that records the Tune experiment `name`, if one was started."""
    client = tracking.configure()
    found = client.search_runs([tracking.experiment_id(client, experiment)],
                               f"tags.`{TAG_NAME}` = '{name}'", max_results=1, order_by=["attributes.start_time ASC"])
    return found[0].info.run_id if found else None


def tune(base: TrainConfig, space: SearchSpace | None = None, trials: int = 8, *, name: str | None = None,
         storage: str | Path | None = None, max_concurrent: int = 1, cpus_per_worker: float = 1.0,
         gpus_per_worker: float = 0.0, grace_period: int = 1, reduction_factor: float = 2.0, seed: int = 0,
         run_id: str | None = None, on_run=None, alias: str | None = None) -> TuneResult:
    """Search `space` around `base` with `trials` samples; ASHA stops the laggards; registers the best.

    `name` names the Tune experiment under `storage` (default $VIDISTILL_HOME/ray_results): calling
    again with the same name resumes it. `run_id` names the tuning run to continue (found by name
    otherwise); `on_run(run_id)` is called as soon as it exists; `alias` goes to the best version.
    """
    from ray import tune as ray_tune

    from vidistill.trainers.data import open_splits
    from vidistill.trainers.teacher import pin_run_teacher

    space = space or default_space(base.role)
    if trials < 1:
        raise ConfigError("trials", f"must be at least 1, got {trials}")
    if max_concurrent < 1:
        raise ConfigError("max_concurrent", f"must be at least 1, got {max_concurrent}")
    check_space(base, space)
    base = pin_run_teacher(base)  # every trial learns from the same teacher version
    use_gpu = gpus_per_worker > 0
    base = base.model_copy(update={"register": False, "use_gpu": use_gpu})  # the best one is registered here
    splits = open_splits(base.data)
    unit = lambda2_unit(base)
    name = name or f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = Path(storage or tracking.vidistill_home() / "ray_results")
    client = tracking.configure()
    run_id = run_id or find_tuning_run(name, base.experiment) or _create_tuning_run(
        client, base, space, name, trials, unit, dict(max_concurrent=max_concurrent, cpus_per_worker=cpus_per_worker,
                                                      gpus_per_worker=gpus_per_worker, grace_period=grace_period,
                                                      reduction_factor=reduction_factor, seed=seed))
    if on_run is not None:
        on_run(run_id)
    resources = worker_resources(base, cpus=cpus_per_worker, gpus=gpus_per_worker).per_worker()
    trainable = ray_tune.with_parameters(
        _run_trial, base=base, parent=run_id, unit=unit, tracking_uri=tracking.tracking_uri(), storage=str(storage),
        env={"VIDISTILL_HOME": str(tracking.vidistill_home()), **methods.environment()}, resources=resources)
    # The trial's driver waits on its Train workers, which hold the CPUs/GPUs: it asks for none.
    # (Tune refuses an empty request, so it asks for one byte of memory.)
    trainable = ray_tune.with_resources(trainable, {"CPU": 0, "memory": 1})
    rows, table = _search(client, run_id, trainable, space, name, storage, base.epochs, base.experiment,
                          dict(trials=trials, max_concurrent=max_concurrent, grace_period=grace_period,
                               reduction_factor=reduction_factor, seed=seed))
    best = _best(client, run_id, rows, name)
    best_config = trial_config(base, best.params, unit)
    version = _register_best(client, run_id, best, best_config, splits, space, unit, alias)
    _finish(client, run_id, rows, best, version)
    return TuneResult(run_id, name, rows, best, best_config, version.name, str(version.version), table)


def _search(client, run_id: str, trainable, space: SearchSpace, name: str, storage: Path, epochs: int,
            experiment: str, options: dict, metric: str = "val_accuracy") -> tuple[list[TrialRow], str]:
    """Run (or resume) the Tune experiment `storage/name`; its rows, matched to their child runs,
    and the results table, printed and logged to the tuning run."""
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # A trial that ends without a result (it failed before its first epoch) fails alone, not the search.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    connect_ray()
    path = storage / name
    try:
        if ray_tune.Tuner.can_restore(str(path)):
            print(f"[vidistill] resuming the tuning experiment {path} in MLflow run {run_id}", flush=True)
            tuner = ray_tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                           resume_errored=True)
        else:
            scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=epochs,
                                      grace_period=min(options["grace_period"], epochs),
                                      reduction_factor=options["reduction_factor"], stop_last_trials=False)
            tuner = ray_tune.Tuner(
                trainable, param_space=space.to_tune(),
                tune_config=ray_tune.TuneConfig(
                    metric=SCORE, mode="max", scheduler=scheduler, num_samples=options["trials"],
                    # (Tune ignores max_concurrent_trials when given a BasicVariantGenerator)
                    search_alg=BasicVariantGenerator(random_state=options["seed"],
                                                     max_concurrent=options["max_concurrent"])),
                run_config=ray_tune.RunConfig(name=name, storage_path=str(storage), verbose=1,
                                              failure_config=ray_tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
    except BaseException:
        client.set_terminated(run_id, status="FAILED")  # the same name resumes it
        raise

    rows = _rows(grid, epochs, metric)
    _close_trial_runs(client, run_id, experiment, rows)
    table = results_table(rows, space, metric)
    print(table, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / RESULTS_MD).write_text(table + "\n")
        (Path(folder) / RESULTS_CSV).write_text(_csv(rows, space, metric))
        client.log_artifact(run_id, str(Path(folder) / RESULTS_MD))
        client.log_artifact(run_id, str(Path(folder) / RESULTS_CSV))
    return rows, table


def _best(client, run_id: str, rows: list[TrialRow], name: str) -> TrialRow:
    """The best-scored trial that left weights to register (the tuning run FAILED if none did)."""
    ranked = [r for r in rows if r.score is not None and r.checkpoint_path]
    if not ranked:
        client.set_terminated(run_id, status="FAILED")
        raise RuntimeError(f"tuning {name}: no trial finished an epoch; see the table above and the trials' logs")
    return max(ranked, key=lambda r: r.score)


def _finish(client, run_id: str, rows: list[TrialRow], best: TrialRow, version, metric: str = "val_accuracy") -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in {
        f"best_{metric}": best.val_metric, "best_val_loss": best.val_loss,
        "trials_completed": sum(r.status == "completed" for r in rows),
        "trials_stopped_early": sum(r.status == "stopped early" for r in rows),
        "trials_failed": sum(r.status == "error" for r in rows)}.items() if v is not None and math.isfinite(v)])
    client.set_tag(run_id, TAG_PREFIX + "best_trial", best.trial_id)
    client.set_tag(run_id, TAG_PREFIX + "best_run_id", best.run_id)
    client.set_tag(run_id, TAG_PREFIX + "best_model", f"models:/{version.name}/{version.version}")
    client.set_terminated(run_id, status="FINISHED")


def _create_tuning_run(client, base: TrainConfig, space: SearchSpace, name: str, trials: int, unit: float,
                       options: dict) -> str:
    tags = {"vidistill.tuned_role": base.role}
    if base.role == "distill":
        tags[tracking.TAG_TEACHER] = base.distill.teacher
    return _open_tuning_run(client, base.experiment, tags, base.flat(), space, name,
                            {**options, "trials": trials, "lambda2_unit": unit, "metric": "val_accuracy"})


def _open_tuning_run(client, experiment: str, tags: dict, flat: dict, space: SearchSpace, name: str,
                     options: dict) -> str:
    """The tuning (parent) run: the base config's unsearched fields, the search's options and space."""
    tags = {TAG_NAME: name, tracking.TAG_ROLE: "tune", tracking.TAG_CODE: tracking.code_version(), **tags}
    run = client.create_run(tracking.experiment_id(client, experiment), run_name=f"tune {name}", tags=tags)
    run_id = run.info.run_id
    searched = set(space.searched)
    params = {k: ("" if v is None else v) for k, v in flat.items() if k not in searched}
    params.update({f"tune.{k}": v for k, v in options.items()})
    params.update({f"tune.space.{d.key}": d.describe() for d in space.dimensions})
    tracking.log_params(client, run_id, params)  # scrubs credentials out of URL-valued fields
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / SPACE_FILE).write_text(json.dumps(space.to_dict(), indent=2))
        client.log_artifact(run_id, str(Path(folder) / SPACE_FILE))
    return run_id


def _run_trial(params: dict, *, base: TrainConfig, parent: str, unit: float, env: dict, tracking_uri: str, storage: str,
               resources: dict) -> None:
    """One Tune trial: the driver of one `train()` run, logged as a child run of the tuning run."""
    import ray.tune

    from vidistill.trainers.train import train

    os.environ.update(env, MLFLOW_TRACKING_URI=tracking_uri)
    trial_id = ray.tune.get_context().get_trial_id()
    config = trial_config(base, params, unit)
    client = tracking.configure()
    # A restored experiment restarts an unfinished trial: it continues its own child run (and that
    # run's Ray Train checkpoints) instead of starting a second one.
    found = client.search_runs([tracking.experiment_id(client, config.experiment)],
                               f"tags.`{TAG_PARENT}` = '{parent}' and tags.`{TAG_TRIAL}` = '{trial_id}'",
                               max_results=1)
    if found:
        run_id = found[0].info.run_id
        print(f"[vidistill] trial {trial_id} continues MLflow run {run_id}", flush=True)
    else:
        run_id = tracking.create_run(config, run_name=f"trial {trial_id}", parent_run_id=parent)
        client.set_tag(run_id, TAG_TRIAL, trial_id)
        for key, value in params.items():
            client.set_tag(run_id, f"{TAG_PREFIX}{key}", value * unit if key == LAMBDA2 else value)
    if _report_if_already_trained(config, Path(storage) / run_id):
        return
    train(config, run_id=run_id, storage=storage, callbacks=[_report_to_tune()], resources_per_worker=resources)


def _report_if_already_trained(config: TrainConfig, folder: Path) -> bool:
    """A restored trial whose run had committed its last epoch before the process died: nothing is
    left to train, so tell Tune where the run ended (from Ray Train's checkpoint record)."""
    import json

    import ray.tune
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    try:
        last = json.loads((folder / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"][-1]
        epoch = int(last["metrics"]["epoch"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False
    if epoch + 1 < config.epochs or not (folder / last["checkpoint_dir_name"]).is_dir():
        return False
    metrics = dict(last["metrics"])
    metrics.update({TIME_ATTR: epoch + 1, SCORE: _score(metrics.get("val_accuracy"), metrics.get("val_loss")),
                    CHECKPOINT_PATH_KEY: str(folder / last["checkpoint_dir_name"])})
    ray.tune.report(metrics)
    return True


def _report_to_tune():
    """Ray Train -> Tune: rank 0's epoch metrics, plus the epochs done and the ranking score."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReport(TuneReportCallback):  # runs in the Train controller, not in the trial
        def after_report(self, run_context, metrics, checkpoint):
            first = dict(metrics[0])
            first[TIME_ATTR] = int(first["epoch"]) + 1
            first[SCORE] = _score(first.get("val_accuracy"), first.get("val_loss"))
            super().after_report(run_context, [first, *metrics[1:]], checkpoint)

    return EpochReport()


def _score(accuracy, loss) -> float:
    """Accuracy first; the validation loss breaks ties between equally accurate trials."""
    accuracy = float(accuracy) if accuracy is not None and math.isfinite(float(accuracy)) else 0.0
    loss = float(loss) if loss is not None and math.isfinite(float(loss)) else 1e6
    return accuracy - 1e-6 * min(loss, 1e6)


def _rows(grid, epochs: int, metric: str = "val_accuracy") -> list[TrialRow]:
    """One row per trial: its last result and its best validation metric, from Tune's result tables."""
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    # get_dataframe(): the last result of every trial that reported; filtered: the best ever.
    last = _by_trial(grid.get_dataframe())
    best = _by_trial(grid.get_dataframe(filter_metric=metric, filter_mode="max"))
    rows = []
    for result in grid:  # every trial, also one that failed before it reported
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        metrics = last.get(trial_id, {})
        done = int(_float(metrics.get(TIME_ATTR)) or 0)
        if result.error is not None:
            status = "error"
        elif done == 0:
            status = "not run"
        elif done < epochs:
            status = "stopped early"
        else:
            status = "completed"
        rows.append(TrialRow(
            trial_id=str(trial_id), run_id=None, status=status,
            epochs=done, val_metric=_float(metrics.get(metric)), val_loss=_float(metrics.get("val_loss")),
            best_val_metric=_float(best.get(trial_id, {}).get(metric)),
            params=dict(result.config or {}),  # the sampled values as Python types (not the table's numpy ones)
            checkpoint_path=metrics.get(CHECKPOINT_PATH_KEY) if isinstance(metrics.get(CHECKPOINT_PATH_KEY), str)
            else None, score=_float(metrics.get(SCORE))))
    return sorted(rows, key=lambda r: r.trial_id)


def _by_trial(frame) -> dict[str, dict]:
    """Rows of a ResultGrid dataframe by trial id."""
    if frame is None or frame.empty or "trial_id" not in frame:
        return {}
    return {row["trial_id"]: row for row in frame.to_dict("records")}


def _float(value) -> float | None:
    """A finite float, or None (missing values are NaN in the result tables)."""
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None


def _close_trial_runs(client, parent: str, experiment: str, rows: list[TrialRow]) -> None:
    """Match each trial to its child run; close the ones whose process Tune ended (still RUNNING)."""
    children = client.search_runs([tracking.experiment_id(client, experiment)], f"tags.`{TAG_PARENT}` = '{parent}'",
                                  max_results=10000)
    by_trial = {run.data.tags.get(TAG_TRIAL): run for run in children}
    for row in rows:
        run = by_trial.get(row.trial_id)
        if run is None:
            continue
        row.run_id = run.info.run_id
        if row.status == "stopped early":
            client.set_tag(row.run_id, TAG_STOPPED_EARLY, "true")
            # Its train() may have seen its Train controller go first and marked the run FAILED.
            client.set_terminated(row.run_id, status="KILLED")
        elif row.status == "completed" and run.info.status != "FINISHED":
            # Tune ended its process at its last epoch (RUNNING), or a resumed search found it
            # already trained after its process died (train() had marked the run FAILED).
            client.set_terminated(row.run_id, status="FINISHED")
        elif run.info.status == "RUNNING":
            client.set_terminated(row.run_id, status="FAILED")


def results_table(rows: list[TrialRow], space: SearchSpace, metric: str = "val_accuracy") -> str:
    keys = space.searched
    head = ["trial", "status", "epochs", metric, "val_loss", f"best_{metric}", *map(_short, keys), "run"]
    table = PrettyTable(head)
    table.set_style(TableStyle.MARKDOWN)
    table.align = "l"
    for r in sorted(rows, key=lambda r: (r.score is None, -(r.score or 0))):
        table.add_row([r.trial_id, r.status, str(r.epochs), _fmt(r.val_metric), _fmt(r.val_loss),
                       _fmt(r.best_val_metric), *(_fmt(r.params.get(k)) for k in keys), r.run_id or ""])
    return table.get_string()


def _csv(rows: list[TrialRow], space: SearchSpace, metric: str = "val_accuracy") -> str:
    keys = space.searched
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "status", "epochs", metric, "val_loss", f"best_{metric}", *keys, "run_id"])
    for r in rows:
        writer.writerow([r.trial_id, r.status, r.epochs, r.val_metric, r.val_loss, r.best_val_metric,
                         *(r.params.get(k) for k in keys), r.run_id])
    return out.getvalue()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _register_best(client, run_id: str, best: TrialRow, config: TrainConfig, splits, space: SearchSpace,
                   unit: float, alias: str | None = None):
    """Register the best trial's kept weights (config.keep_weights: its best validation epoch's
    or its last), through register_checkpoint, tagged with its trial config."""
    from vidistill.trainers.train import register_checkpoint

    tags = {TAG_PREFIX + "run_id": run_id, TAG_TRIAL: best.trial_id,
            TAG_PREFIX + "val_accuracy": best.val_accuracy, TAG_PREFIX + "val_loss": best.val_loss}
    flat = config.flat()
    for key in space.searched:
        tags[TAG_PREFIX + key] = flat[key]
    if LAMBDA2 in space.searched:
        tags[TAG_PREFIX + "lambda2_multiple"] = best.params[LAMBDA2]
    return register_checkpoint(best.run_id, best.checkpoint_path, config, splits, alias=alias, tags=tags)


# --- detector searches ------------------------------------------------------------------------

DETECTION_METRIC = "val_mAP"
DEFAULT_DETECTION_VAL_FRACTION = 0.25


def tune_detector(base, space: SearchSpace | None = None, trials: int = 8, *, name: str | None = None,
                  storage: str | Path | None = None, max_concurrent: int = 1, cpus_per_trial: float = 1.0,
                  gpus_per_trial: float = 0.0, grace_period: int = 1, reduction_factor: float = 2.0, seed: int = 0,
                  run_id: str | None = None, on_run=None, alias: str | None = None) -> TuneResult:
    """Search `space` around a DetectorTrainConfig: each trial trains one detector (train_detector,
    in the trial's own Ray process with `cpus_per_trial`/`gpus_per_trial`), reporting every epoch's
    validation mAP and loss on a held-out slice of the training videos to ASHA. Trials rank by
    val_mAP (val_loss breaks ties, as `_score` does for accuracy); the test subset is evaluated
    and logged in each trial's run but never read by the search. Without a validation slice in
    the base (val_fraction 0) a quarter of the training videos is held out. Each trial logs its
    detector to its child run unregistered; the best one is registered (register_detector) with
    its trial config as `vidistill.tune.*` tags and `alias`. Same name: the search resumes (an
    unfinished trial restarts in its own child run: a detector trains in seconds to minutes, so
    trials keep no checkpoint).
    """
    from ray import tune as ray_tune

    from vidistill.trainers.detection.train import DetectorTrainConfig, detector_name, load_detection_data
    from vidistill.trainers.search_space import default_detection_space

    if not isinstance(base, DetectorTrainConfig):
        raise ConfigError("base", f"tune_detector searches a DetectorTrainConfig, got {type(base).__name__}; "
                                  "use tune() for recognition")
    space = space or default_detection_space(base.method)
    if trials < 1:
        raise ConfigError("trials", f"must be at least 1, got {trials}")
    if max_concurrent < 1:
        raise ConfigError("max_concurrent", f"must be at least 1, got {max_concurrent}")
    update = {"registry": True, "device": "cuda" if gpus_per_trial > 0 else "cpu"}
    if base.val_fraction == 0:
        update["val_fraction"] = DEFAULT_DETECTION_VAL_FRACTION
    base = base.model_copy(update=update)
    check_space(base, space)
    streams = load_detection_data(base.root, base.layout, base.features, base.test_subset, base.annotations).streams
    name = name or f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = Path(storage or tracking.vidistill_home() / "ray_results")
    client = tracking.configure()
    flat = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in base.model_dump().items()}
    run_id = run_id or find_tuning_run(name, base.experiment) or _open_tuning_run(
        client, base.experiment, {"vidistill.tuned_role": "detector", "vidistill.detection_method": base.method},
        flat, space, name, dict(trials=trials, max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
                                gpus_per_trial=gpus_per_trial, grace_period=grace_period,
                                reduction_factor=reduction_factor, seed=seed, metric=DETECTION_METRIC))
    if on_run is not None:
        on_run(run_id)
    from vidistill.trainers.detection.methods import MODULES_VARIABLE

    env = {"VIDISTILL_HOME": str(tracking.vidistill_home()),
           **{k: os.environ[k] for k in ("VIDISTILL_METHOD_MODULES", MODULES_VARIABLE) if os.environ.get(k)}}
    trainable = ray_tune.with_parameters(_run_detector_trial, base=base, parent=run_id, env=env,
                                         tracking_uri=tracking.tracking_uri())
    # The trial trains in its own process, which holds the CPUs/GPU (no Train workers here).
    trainable = ray_tune.with_resources(trainable, {"CPU": cpus_per_trial, "GPU": gpus_per_trial})
    rows, table = _search(client, run_id, trainable, space, name, storage, base.epochs, base.experiment,
                          dict(trials=trials, max_concurrent=max_concurrent, grace_period=grace_period,
                               reduction_factor=reduction_factor, seed=seed), DETECTION_METRIC)
    for row in rows:  # the weights a trial left: the model its run logged when it finished
        row.checkpoint_path = client.get_run(row.run_id).data.tags.get(TAG_LOGGED_MODEL) if row.run_id else None
    best = _best(client, run_id, rows, name)
    best_config = trial_config(base, best.params)
    tags = {TAG_PREFIX + "run_id": run_id, TAG_TRIAL: best.trial_id, TAG_PREFIX + DETECTION_METRIC: best.val_metric,
            TAG_PREFIX + "val_loss": best.val_loss}
    for key in space.searched:
        tags[TAG_PREFIX + key] = _dotted(best_config.model_dump(), key)
    version = register_detector(client, best.run_id, best.checkpoint_path, detector_name(best_config, streams),
                                best_config, streams, alias=alias, tags=tags)
    _finish(client, run_id, rows, best, version, DETECTION_METRIC)
    return TuneResult(run_id, name, rows, best, best_config, version.name, str(version.version), table)


def _dotted(data: dict, key: str):
    for part in key.split("."):
        data = data[part]
    return data


def _run_detector_trial(params: dict, *, base, parent: str, env: dict, tracking_uri: str) -> None:
    """One detector trial: train_detector in this process, each epoch's validation reported to Tune."""
    import ray.tune

    os.environ.update(env, MLFLOW_TRACKING_URI=tracking_uri)
    trial_id = ray.tune.get_context().get_trial_id()
    config = trial_config(base, params)
    client = tracking.configure()
    found = client.search_runs([tracking.experiment_id(client, config.experiment)],
                               f"tags.`{TAG_PARENT}` = '{parent}' and tags.`{TAG_TRIAL}` = '{trial_id}'",
                               max_results=1)

    def tag(run_id: str) -> None:
        client.set_tag(run_id, TAG_TRIAL, trial_id)
        client.set_tag(run_id, "mlflow.runName", f"trial {trial_id}")
        for key, value in params.items():
            client.set_tag(run_id, f"{TAG_PREFIX}{key}", value)

    last = {}

    def report(metrics: dict) -> None:
        metrics = {**metrics, TIME_ATTR: metrics["epoch"] + 1,
                   SCORE: _score(metrics.get(DETECTION_METRIC), metrics.get("val_loss"))}
        if metrics[TIME_ATTR] < config.epochs:
            ray.tune.report(metrics)
        else:  # at max_t Tune ends the trial's process: report once the model is logged
            last.update(metrics)

    if found:  # a restored search restarts an unfinished trial in its own child run
        print(f"[vidistill] trial {trial_id} restarts in MLflow run {found[0].info.run_id}", flush=True)
    train_detector(config, on_run=tag, parent_run_id=parent, run_id=found[0].info.run_id if found else None,
                   on_epoch=report, register=False)
    ray.tune.report(last)
