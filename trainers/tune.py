"""Hyperparameter search on Ray Tune with ASHA early stopping, tracked as one MLflow run with its trials.

    from vidistill.trainers.config import load_config
    from vidistill.trainers.tune import load_space, tune
    result = tune(load_config("student.yaml"), load_space("space.yaml"), trials=16, name="ucf101-search")
    result.model_uri          # the best trial's model, registered with its trial config as tags

A search space maps a parameter to a distribution; a missing parameter keeps the base config's
value. In a YAML or TOML file::

    lambda1: {loguniform: [0.1, 10]}                      # distill.lambda1
    lambda2: {choice: [0.25, 1, 4]}                       # distill.lambda2, in units of 1/(T*H*W)
    attention: {choice: [soft-atten, soft-res, prob-atten]}
    lr: {loguniform: [0.001, 0.1]}                        # optim.lr
    gumbel_temperature: {uniform: [0.2, 1.0]}
    optim.weight_decay: 4e-5                              # any model./optim./distill. field; a value: fixed

Distributions: `loguniform: [low, high]`, `uniform: [low, high]`, `choice: [values...]` (a bare
list is a choice), or a plain value. `lambda2` is searched as a multiple of 1/(T*H*W) of the
attention grid of the base config's clips (Sec. 3.5's default is 1); the trial config and the
registered version record the resulting value.

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

Resume: the experiment lives at `storage/name`. Calling `tune` again with the same name after
the process died restores it (`Tuner.restore`): finished trials are kept, unfinished ones
continue from their last Ray Train checkpoint in their own child run, and everything stays in
the same tuning run.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidistill.trainers import tracking
from vidistill.trainers.config import ConfigError, TrainConfig, from_dict, read_config_file

KINDS = ("loguniform", "uniform", "choice")
# Short names for the method's knobs; any other model./optim./distill. field may be given dotted.
ALIASES = {
    "lambda1": "distill.lambda1",
    "lambda2": "distill.lambda2",
    "attention": "model.attention",
    "lr": "optim.lr",
    "gumbel_temperature": "model.gumbel_temperature",
}
SEARCHABLE_PREFIXES = ("model.", "optim.", "distill.")
NOT_SEARCHABLE = {"distill.teacher", "distill.objective", "model.name", "model.pretrained"}
LAMBDA2 = "distill.lambda2"
TAG_PREFIX = "vidistill.tune."
TAG_NAME = TAG_PREFIX + "name"  # on the tuning run: the Tune experiment it records
TAG_TRIAL = TAG_PREFIX + "trial_id"  # on a child run
TAG_STOPPED_EARLY = TAG_PREFIX + "stopped_early"
TAG_PARENT = "mlflow.parentRunId"
TIME_ATTR = "epochs_done"
SCORE = "tune_score"
RESULTS_CSV, RESULTS_MD, SPACE_FILE = "tune_results.csv", "tune_results.md", "tune_space.json"


@dataclass(frozen=True)
class Dimension:
    """One searched (or fixed) parameter: a dotted TrainConfig field and its distribution."""

    key: str  # dotted TrainConfig name, e.g. "optim.lr"
    kind: str  # loguniform | uniform | choice | fixed
    values: tuple  # (low, high) | the choices | (value,)

    def to_tune(self):
        from ray import tune as ray_tune

        if self.kind == "loguniform":
            return ray_tune.loguniform(*self.values)
        if self.kind == "uniform":
            return ray_tune.uniform(*self.values)
        if self.kind == "choice":
            return ray_tune.choice(list(self.values))
        return self.values[0]

    def describe(self) -> str:
        if self.kind == "fixed":
            return repr(self.values[0])
        return f"{self.kind}{list(self.values)}"


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    def __post_init__(self):
        keys = [d.key for d in self.dimensions]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"space: a parameter is given twice: {sorted(k for k in keys if keys.count(k) > 1)[0]}")

    def to_tune(self) -> dict[str, Any]:
        return {d.key: d.to_tune() for d in self.dimensions}

    def to_dict(self) -> dict[str, Any]:
        return {d.key: (d.values[0] if d.kind == "fixed" else {d.kind: list(d.values)}) for d in self.dimensions}

    @property
    def searched(self) -> list[str]:
        return [d.key for d in self.dimensions if d.kind != "fixed"]


def default_space(role: str = "distill") -> SearchSpace:
    """The method's knobs: Eq. 8's weights (students only), the attention variant, lr, Gumbel temperature."""
    data: dict[str, Any] = {
        "lambda1": {"loguniform": [0.1, 10.0]},
        "lambda2": {"choice": [0.25, 0.5, 1.0, 2.0, 4.0]},
        "attention": {"choice": ["soft-atten", "soft-res", "prob-atten"]},
        "lr": {"loguniform": [1e-3, 1e-1]},
        "gumbel_temperature": {"uniform": [0.2, 1.0]},
    }
    if role != "distill":  # lambda1 and lambda2 weigh Eq. 8's terms: they change nothing else
        del data["lambda1"], data["lambda2"]
    return parse_space(data)


def load_space(path: str | Path) -> SearchSpace:
    """A space from a YAML/TOML/JSON file; a bad entry is refused with `space.<key>: why`."""
    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"space: {path} must hold a table of parameter: distribution")
    return parse_space(data)


def parse_space(data: dict[str, Any]) -> SearchSpace:
    return SearchSpace(tuple(_dimension(key, spec) for key, spec in _flatten_space(data)))


def _flatten_space(data: dict, prefix: str = ""):
    """TOML writes `optim.lr = {...}` as nested tables: walk them down to the distributions."""
    fields = TrainConfig().flat()
    for key, spec in data.items():
        name = f"{prefix}{key}"
        if isinstance(spec, dict) and spec and not set(spec) & set(KINDS) and ALIASES.get(name, name) not in fields:
            yield from _flatten_space(spec, name + ".")
        else:
            yield name, spec


def _dimension(name: str, spec: Any) -> Dimension:
    def fail(why: str):
        raise ConfigError(f"space.{name}: {why}")

    key = ALIASES.get(name, name)
    if key in NOT_SEARCHABLE or not key.startswith(SEARCHABLE_PREFIXES):
        fail(f"cannot be searched; use one of {', '.join(ALIASES)} or a model./optim./distill. field")
    known = TrainConfig().flat()
    if key not in known:
        fail(f"unknown parameter; {key} is not a training config field")
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, dict):
        return Dimension(key, "fixed", (spec,))
    if len(spec) != 1:
        fail(f"give exactly one distribution of {', '.join(KINDS)}, got {', '.join(map(str, spec))}")
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        fail(f"unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(values, list) or not values:
        fail(f"{kind} needs a list, e.g. {kind}: [0.001, 0.1]")
    if kind in ("loguniform", "uniform"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            fail(f"{kind} needs [low, high] numbers, got {values!r}")
        low, high = map(float, values)
        if not low < high:
            fail(f"{kind} needs low < high, got {values!r}")
        if kind == "loguniform" and low <= 0:
            fail(f"loguniform needs low > 0, got {low}")
        values = [low, high]
    if key == LAMBDA2 and any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in values):
        fail(f"multiples of 1/(T*H*W) must be numbers >= 0, got {values!r}")
    return Dimension(key, kind, tuple(values))


def check_space(base: TrainConfig, space: SearchSpace) -> None:
    """Every choice and both ends of every range make a valid config; refused with `space.<key>`."""
    for dim in space.dimensions:
        for value in dim.values:
            try:
                trial_config(base, {dim.key: value}, lambda2_unit=1.0)
            except ConfigError as exc:
                raise ConfigError(f"space.{_short(dim.key)}: value {value!r} is refused: {exc}") from None


def _short(key: str) -> str:
    return next((alias for alias, full in ALIASES.items() if full == key), key)


def trial_config(base: TrainConfig, params: dict[str, Any], lambda2_unit: float) -> TrainConfig:
    """The base config with a trial's parameters; `distill.lambda2` comes as a multiple of the unit."""
    data = base.to_dict()
    overrides = {k: (v * lambda2_unit if k == LAMBDA2 else v) for k, v in params.items()}
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return from_dict(data).validate()


def lambda2_unit(config: TrainConfig) -> float:
    """1 / (T*H*W) of the attention grid (phi, Mixed_4f) for the config's clips."""
    import torch

    from vidistill.trainers.train import build_model

    model = build_model(config, 2).eval()
    clip = torch.zeros(1, model.in_channels, config.data.clip_length, config.data.crop_size, config.data.crop_size)
    with torch.no_grad():
        phi, _ = model.forward_features(clip)
    t, h, w = phi.shape[-3:]
    return 1.0 / (t * h * w)


@dataclass
class TrialRow:
    trial_id: str
    run_id: str | None
    status: str  # completed | stopped early | error | not run
    epochs: int
    val_accuracy: float | None
    val_loss: float | None
    best_val_accuracy: float | None
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: str | None = None
    score: float | None = None


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
         run_id: str | None = None, on_run=None) -> TuneResult:
    """Search `space` around `base` with `trials` samples; ASHA stops the laggards; registers the best.

    `name` names the Tune experiment under `storage` (default $VIDISTILL_HOME/ray_results): calling
    again with the same name resumes it. `run_id` names the tuning run to continue (found by name
    otherwise); `on_run(run_id)` is called as soon as it exists.
    """
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from vidistill.trainers.data import open_splits
    from vidistill.trainers.teacher import pin_teacher

    base.validate()
    space = space or default_space(base.role)
    if trials < 1:
        raise ConfigError(f"trials: must be at least 1, got {trials}")
    if max_concurrent < 1:
        raise ConfigError(f"max_concurrent: must be at least 1, got {max_concurrent}")
    check_space(base, space)
    if base.role == "distill":  # every trial learns from the same teacher version
        base = dataclasses.replace(base, distill=dataclasses.replace(base.distill,
                                                                     teacher=pin_teacher(base.distill.teacher)))
    use_gpu = gpus_per_worker > 0
    base = dataclasses.replace(base, register=False, use_gpu=use_gpu)  # the best one is registered here
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
    # A trial that ends without a result (it failed before its first epoch) fails alone, not the search.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, configure_logging=False)

    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainable = ray_tune.with_parameters(
        _run_trial, base=base.to_dict(), parent=run_id, unit=unit, home=str(tracking.vidistill_home()),
        tracking_uri=tracking.tracking_uri(), storage=str(storage), resources=resources)
    # The trial's driver waits on its Train workers, which hold the CPUs/GPUs: it asks for none.
    # (Tune refuses an empty request, so it asks for one byte of memory.)
    trainable = ray_tune.with_resources(trainable, {"CPU": 0, "memory": 1})
    path = storage / name
    try:
        if ray_tune.Tuner.can_restore(str(path)):
            print(f"[vidistill] resuming the tuning experiment {path} in MLflow run {run_id}", flush=True)
            tuner = ray_tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                           resume_errored=True)
        else:
            scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=base.epochs, grace_period=min(grace_period, base.epochs),
                                      reduction_factor=reduction_factor, stop_last_trials=False)
            tuner = ray_tune.Tuner(
                trainable, param_space=space.to_tune(),
                tune_config=ray_tune.TuneConfig(
                    metric=SCORE, mode="max", scheduler=scheduler, num_samples=trials,
                    # (Tune ignores max_concurrent_trials when given a BasicVariantGenerator)
                    search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)),
                run_config=ray_tune.RunConfig(name=name, storage_path=str(storage), verbose=1,
                                              failure_config=ray_tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
    except BaseException:
        client.set_terminated(run_id, status="FAILED")  # the same name resumes it
        raise

    rows = _rows(grid, base.epochs)
    _close_trial_runs(client, run_id, base.experiment, rows)
    table = results_table(rows, space)
    print(table, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / RESULTS_MD).write_text(table + "\n")
        (Path(folder) / RESULTS_CSV).write_text(_csv(rows, space))
        client.log_artifact(run_id, str(Path(folder) / RESULTS_MD))
        client.log_artifact(run_id, str(Path(folder) / RESULTS_CSV))
    ranked = [r for r in rows if r.score is not None and r.checkpoint_path]
    best = max(ranked, key=lambda r: r.score) if ranked else None
    if best is None:
        client.set_terminated(run_id, status="FAILED")
        raise RuntimeError(f"tuning {name}: no trial finished an epoch; see the table above and the trials' logs")
    best_config = trial_config(base, best.params, unit)
    version = _register_best(client, run_id, best, best_config, splits, space, unit)
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in {
        "best_val_accuracy": best.val_accuracy, "best_val_loss": best.val_loss,
        "trials_completed": sum(r.status == "completed" for r in rows),
        "trials_stopped_early": sum(r.status == "stopped early" for r in rows),
        "trials_failed": sum(r.status == "error" for r in rows)}.items() if v is not None and math.isfinite(v)])
    client.set_tag(run_id, TAG_PREFIX + "best_trial", best.trial_id)
    client.set_tag(run_id, TAG_PREFIX + "best_run_id", best.run_id)
    client.set_tag(run_id, TAG_PREFIX + "best_model", f"models:/{version.name}/{version.version}")
    client.set_terminated(run_id, status="FINISHED")
    return TuneResult(run_id, name, rows, best, best_config, version.name, str(version.version), table)


def _create_tuning_run(client, base: TrainConfig, space: SearchSpace, name: str, trials: int, unit: float,
                       options: dict) -> str:
    tags = {TAG_NAME: name, tracking.TAG_ROLE: "tune", "vidistill.tuned_role": base.role,
            tracking.TAG_CODE: tracking.code_version()}
    if base.role == "distill":
        tags[tracking.TAG_TEACHER] = base.distill.teacher
    run = client.create_run(tracking.experiment_id(client, base.experiment), run_name=f"tune {name}", tags=tags)
    run_id = run.info.run_id
    searched = set(space.searched)
    params = {k: ("" if v is None else v) for k, v in base.flat().items() if k not in searched}
    params.update({f"tune.{k}": v for k, v in options.items()})
    params.update({"tune.trials": trials, "tune.lambda2_unit": unit, "tune.metric": "val_accuracy",
                   **{f"tune.space.{d.key}": d.describe() for d in space.dimensions}})
    tracking.log_params(client, run_id, params)  # scrubs credentials out of URL-valued fields
    with tempfile.TemporaryDirectory() as folder:
        import json

        (Path(folder) / SPACE_FILE).write_text(json.dumps(space.to_dict(), indent=2))
        client.log_artifact(run_id, str(Path(folder) / SPACE_FILE))
    return run_id


def _run_trial(params: dict, *, base: dict, parent: str, unit: float, home: str, tracking_uri: str, storage: str,
               resources: dict) -> None:
    """One Tune trial: the driver of one `train()` run, logged as a child run of the tuning run."""
    import ray.tune

    from vidistill.trainers.train import train

    os.environ.update(VIDISTILL_HOME=home, MLFLOW_TRACKING_URI=tracking_uri)
    trial_id = ray.tune.get_context().get_trial_id()
    config = trial_config(from_dict(base), params, unit)
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


def _rows(grid, epochs: int) -> list[TrialRow]:
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    rows = []
    for result in grid:
        metrics = result.metrics or {}
        params = {k: v for k, v in (result.config or {}).items()}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        history = result.metrics_dataframe
        done = int(metrics.get(TIME_ATTR, 0) or 0)
        if result.error is not None:
            status = "error"
        elif done == 0:
            status = "not run"
        elif done < epochs:
            status = "stopped early"
        else:
            status = "completed"
        best_acc = None
        if history is not None and "val_accuracy" in history:
            best_acc = float(history["val_accuracy"].max())
        rows.append(TrialRow(
            trial_id=str(trial_id), run_id=None, status=status, epochs=done,
            val_accuracy=_float(metrics.get("val_accuracy")), val_loss=_float(metrics.get("val_loss")),
            best_val_accuracy=best_acc, params=params, checkpoint_path=metrics.get(CHECKPOINT_PATH_KEY),
            score=_float(metrics.get(SCORE))))
    return sorted(rows, key=lambda r: r.trial_id)


def _float(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


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
        elif run.info.status == "RUNNING":  # Tune ended the trial's process (ASHA may stop one at its last epoch)
            client.set_terminated(row.run_id, status={"completed": "FINISHED", "stopped early": "KILLED"}.get(
                row.status, "FAILED"))


def results_table(rows: list[TrialRow], space: SearchSpace) -> str:
    keys = space.searched
    head = ["trial", "status", "epochs", "val_accuracy", "val_loss", "best_val_accuracy", *map(_short, keys), "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (r.score is None, -(r.score or 0))):
        cells = [r.trial_id, r.status, str(r.epochs), _fmt(r.val_accuracy), _fmt(r.val_loss),
                 _fmt(r.best_val_accuracy), *(_fmt(r.params.get(k)) for k in keys), r.run_id or ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv(rows: list[TrialRow], space: SearchSpace) -> str:
    keys = space.searched
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "status", "epochs", "val_accuracy", "val_loss", "best_val_accuracy", *keys, "run_id"])
    for r in rows:
        writer.writerow([r.trial_id, r.status, r.epochs, r.val_accuracy, r.val_loss, r.best_val_accuracy,
                         *(r.params.get(k) for k in keys), r.run_id])
    return out.getvalue()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _register_best(client, run_id: str, best: TrialRow, config: TrainConfig, splits, space: SearchSpace,
                   unit: float):
    """Register the best trial's final checkpoint, tagged with its trial config."""
    import torch
    from ray.train import Checkpoint

    from vidistill.trainers.kept_weights import kept_model_state
    from vidistill.trainers.train import CHECKPOINT_FILE, build_model

    model = build_model(config, len(splits.classes))
    with Checkpoint(best.checkpoint_path).as_directory() as folder:
        checkpoint = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu")
    model.load_state_dict(kept_model_state(checkpoint, config.keep_weights)[0])
    version = tracking.register_model(best.run_id, model, config, splits.content_hash)
    tags = {TAG_PREFIX + "run_id": run_id, TAG_TRIAL: best.trial_id,
            TAG_PREFIX + "val_accuracy": best.val_accuracy, TAG_PREFIX + "val_loss": best.val_loss}
    flat = config.flat()
    for key in space.searched:
        tags[TAG_PREFIX + key] = flat[key]
    if LAMBDA2 in space.searched:
        tags[TAG_PREFIX + "lambda2_multiple"] = best.params[LAMBDA2]
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, "" if value is None else str(value))
    return version
