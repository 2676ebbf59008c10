"""MLflow: where runs go, one run per training, the model registry and its lineage tags.

By default everything stays on this machine: a SQLite backend store
`$VIDISTILL_HOME/mlflow.db` (the registry needs a SQL store) and artifacts under
`$VIDISTILL_HOME/mlartifacts`. `MLFLOW_TRACKING_URI` points elsewhere: at a tracking server
(http://...; PostgreSQL store, object-store artifacts), which then decides where artifacts
go, or at another SQL store.

Registered names: `<dataset>-teacher-flow`, `<dataset>-student-rgb`, `<dataset>-rgb-<variant>`.
Every version carries tags: the teacher version it learned from, the data set's manifest
hash, the code version, and the run's role and attention variant.
"""
from __future__ import annotations

import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from vidistill.trainers.config import TrainConfig
from vidistill.trainers.settings import REDACTED, scrub_credentials, vidistill_home  # noqa: F401 (re-exported)

TAG_TEACHER = "vidistill.teacher"  # models:/NAME/VERSION the student learned from
TAG_DATASET = "vidistill.dataset_manifest"  # sha256 of the prepared data's manifest
TAG_CODE = "vidistill.code_version"
TAG_ROLE = "vidistill.role"
TAG_ATTENTION = "vidistill.attention"
TAG_OBJECTIVE = "vidistill.objective"


def log_params(client: MlflowClient, run_id: str, params: dict) -> None:
    """Log params with credentials scrubbed (see scrub_credentials); None as ''."""
    for key, value in params.items():
        client.log_param(run_id, key, "" if value is None else scrub_credentials(value))


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{vidistill_home() / 'mlflow.db'}"


def store_client(uri: str | None = None) -> MlflowClient:
    """A client on one store for runs and registry alike (default: tracking_uri()).

    `MlflowClient(uri)` alone takes its registry from this process's global setting, which an
    earlier configure() may have pointed at another store: its runs would come from one store
    and its registered models and aliases from the other.
    """
    uri = uri or tracking_uri()
    return MlflowClient(uri, registry_uri=uri)


def configure() -> MlflowClient:
    """Point this process's MLflow at the configured store; returns a client on it."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        _create_sqlite_store_once(Path(uri.removeprefix("sqlite:///")), uri)
    # MLflow 3's setters also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI; a process that
    # later starts a dispatcher or a job for another store (a job gets its store handed to it)
    # must not pass this one on, so the environment is left as it was.
    exported = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in exported.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return store_client(uri)


_CREATED_STORES: set[str] = set()


def _create_sqlite_store_once(path: Path, uri: str) -> None:
    """Create the SQLite store's schema under a file lock.

    MLflow migrates a new database when a store first opens it; two jobs starting at once
    (a pipeline's teacher and RGB baseline) would run the migrations side by side and one
    fails ("expected to match one row ... in 'alembic_version'").
    """
    from filelock import FileLock

    if uri in _CREATED_STORES:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        SqlAlchemyStore(uri, (vidistill_home() / "mlartifacts").as_uri())  # migrates if needed
        _CREATED_STORES.add(uri)


# MLflow 3's UI opens an experiment on its GenAI view (traces, token usage) unless the
# experiment says it is a model-training one; this tag, with this value, is what its UI reads.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created on first use (artifacts under $VIDISTILL_HOME for a local store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made before the tag, or by hand
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return found.experiment_id
    # A tracking server places artifacts itself; with a store reached directly (SQLite,
    # PostgreSQL) they go under $VIDISTILL_HOME, not into ./mlruns of whatever the cwd is.
    location = None
    if not tracking_uri().startswith(("http://", "https://", "databricks")):
        location = (vidistill_home() / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except mlflow.exceptions.MlflowException:
        return client.get_experiment_by_name(name).experiment_id  # created by a concurrent run


def code_version() -> str:
    """The git commit of the checkout when there is one, else the installed package version."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0 and commit.stdout.strip():
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return version("vidistill")
    except PackageNotFoundError:
        return "unknown"


def registered_name(config: TrainConfig) -> str:
    dataset = config.dataset_name
    if config.role == "teacher":
        return f"{dataset}-teacher-flow"
    if config.role == "distill":
        from vidistill.trainers.methods import get_method

        return f"{dataset}-student-rgb{get_method(config.distill.objective).suffix}"
    return f"{dataset}-rgb-{config.model.attention}"


def create_run(config: TrainConfig, run_name: str | None = None, parent_run_id: str | None = None) -> str:
    """Open the MLflow run a training logs into, with the full config as params; returns its id.

    Created before the workers start so a caller (a queue job) can record the id at once and
    resume the same run after a crash. A student's teacher is pinned here to its exact
    registry version; the run's tag keeps it, so a resume uses the same teacher.
    """
    client = configure()
    tags = {TAG_ROLE: config.role, TAG_ATTENTION: config.model.attention, TAG_CODE: code_version()}
    if config.role == "distill":  # pinned by the caller (teacher.pin_run_teacher)
        tags.update({TAG_TEACHER: config.distill.teacher, TAG_OBJECTIVE: config.distill.objective})
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(client, config.experiment), run_name=run_name or registered_name(config),
                            tags=tags)
    log_params(client, run.info.run_id, config.flat())
    return run.info.run_id


def resolve_model_version(uri: str):
    """The registry entry behind models:/NAME/VERSION or models:/NAME@ALIAS."""
    client = configure()
    if not uri.startswith("models:/"):
        raise ValueError(f"{uri!r} is not a registry URI; use models:/NAME/VERSION or models:/NAME@ALIAS")
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, _, number = ref.rpartition("/")
    return client.get_model_version(name, number)


def log_model(run_id: str, model) -> str:
    """Log a torch model to its run (every registered model goes through here); its model URI."""
    client = configure()
    before = client.get_run(run_id).info
    with mlflow.start_run(run_id=run_id):
        # "pickle": the registry must give back the vidistill module itself (its attention
        # heads and ModelOutput), which the traced pt2 format would not.
        info = mlflow.pytorch.log_model(model.cpu().eval(), name="model", serialization_format="pickle",
                                        pip_requirements=[f"vidistill=={_package_version()}"])
    # Leaving start_run() marks the run FINISHED; logging a model must not change how a run ended
    # (Tune registers a trial ASHA stopped, which stays KILLED) nor end one still training.
    if before.status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status=before.status, end_time=before.end_time)
    return info.model_uri


def register_model(run_id: str, model, config: TrainConfig,
                   dataset_hash: str) -> "mlflow.entities.model_registry.ModelVersion":
    """Log the trained model to its run with mlflow.pytorch and register it with lineage tags."""
    model_uri = log_model(run_id, model)
    client = store_client()
    name = registered_name(config)
    version_ = mlflow.register_model(model_uri, name, tags={
        TAG_DATASET: dataset_hash,
        TAG_CODE: code_version(),
        TAG_ROLE: config.role,
        TAG_ATTENTION: config.model.attention,
        "vidistill.run_id": run_id,
        **({TAG_TEACHER: config.distill.teacher, TAG_OBJECTIVE: config.distill.objective}
           if config.role == "distill" else {}),
    })
    client.set_registered_model_tag(name, "vidistill.role", config.role)
    return version_


def _package_version() -> str:
    try:
        return version("vidistill")
    except PackageNotFoundError:
        return "0.1.0"
