"""Submitting a job: `submit_job` validates its config against its kind, checks it, and
writes the row. The one door to the queue for the CLI, the pipelines and the tests; the
store itself knows rows, not kinds.

`submit-job --help` promises that a config is checked when the job is submitted, never
discovered later on a worker. The config classes check their fields; what needs the world
outside the config is checked here, once, by `submit_job`:

* sizes: the owner fits its column; the stored config (a command line, say) stays far below
  what Ray can pass to a job's supervisor, which hung a 200 k-character command for minutes;
* paths: a source folder (`root`) must exist; a prepared folder must exist and hold videos,
  unless the job runs after others (`--after`), one of which may prepare it;
* the registry: a model pinned as models:/NAME/VERSION must be registered already, again
  unless the job runs after others; an alias (`@job-12`) is left to the job, since an earlier
  job of the same pipeline registers it;
* the MLflow store: the tracking URI of the submitter is what the job logs to
  (`tracking_uri_for_job`), and holds no password, since the job's environment is visible.

Each check raises ConfigError(field, reason), which the CLI shows as a usage error.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from vidistill.platform.kinds import get_kind
from vidistill.platform.kinds.config import ConfigError
from vidistill.platform.queue import Job, JobQueue

MAX_OWNER_CHARS = 128           # the jobs.owner column is VARCHAR(128)
MAX_CONFIG_CHARS = 64 * 1024    # Ray passes the entrypoint as one argument; Linux caps one at 128 KiB
PRIORITY_RANGE = (-(2 ** 31), 2 ** 31 - 1)  # the jobs.priority column is a 32-bit INTEGER on PostgreSQL
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


def submit_job(queue: JobQueue, kind: str, config: Mapping[str, Any] | None = None, *,
               owner: str | None = None, priority: int = 0, depends_on: Sequence[int] = (),
               max_attempts: int = 3) -> Job:
    """Validate `config` for `kind`, check it against the world, and queue the job.

    Raises UnknownKind, ConfigError (field + reason) or JobNotFound (a dependency that does
    not exist) before anything is written.
    """
    job_kind = get_kind(kind)
    normalised, resources = job_kind.validated(config)
    try:
        tracking_uri = tracking_uri_for_job()
    except ConfigError as error:
        raise error.for_kind(job_kind.name) from None
    check_submission(job_kind.name, normalised, owner=owner, priority=priority, depends_on=depends_on,
                     tracking_uri=tracking_uri)
    return queue.insert_job(job_kind.name, normalised, num_workers=resources.num_workers,
                            cpus_per_worker=resources.cpus_per_worker, gpus_per_worker=resources.gpus_per_worker,
                            owner=owner, priority=priority, depends_on=depends_on, max_attempts=max_attempts,
                            mlflow_tracking_uri=tracking_uri)


def check_submission(kind: str, config: Mapping[str, Any], *, owner: str | None, priority: int,
                     depends_on: Sequence[int], tracking_uri: str | None = None) -> None:
    """Raise ConfigError (with `kind`) for what the job would only find out on a worker."""
    try:
        check_sizes(config, owner=owner, priority=priority)
        check_paths(config, after_others=bool(depends_on))
        if not depends_on:
            check_registered_models(config, tracking_uri)
    except ConfigError as error:
        raise error.for_kind(kind) from None


def check_sizes(config: Mapping[str, Any], *, owner: str | None, priority: int) -> None:
    if owner is not None and len(owner) > MAX_OWNER_CHARS:
        raise ConfigError("owner", f"is {len(owner)} characters long; at most {MAX_OWNER_CHARS}")
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise ConfigError("priority", f"{priority} is out of range; give an integer from {low} to {high}")
    size = len(json.dumps(dict(config)))
    if size > MAX_CONFIG_CHARS:
        largest = max(config, key=lambda key: len(json.dumps(config[key])))
        raise ConfigError(largest, f"the job's config is {size} characters long, at most {MAX_CONFIG_CHARS}; "
                                   "put a long command line into a script and submit the script")


def _data_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The data settings a job reads: a training job's resolved.data, an evaluation's resolved."""
    resolved = config.get("resolved") or {}
    return resolved.get("data", resolved) if isinstance(resolved, Mapping) else {}


def check_paths(config: Mapping[str, Any], *, after_others: bool) -> None:
    if "out" in config and config.get("root"):  # a prepare job: its source videos
        _must_be_folder("root", config["root"], "the source data set folder")
    data = _data_section(config)
    if data.get("root"):
        _must_be_folder("root", data["root"], "the source data set folder")
    if data.get("prepared") and not after_others:
        check_prepared_folder(data["prepared"])


def _must_be_folder(field: str, path: str, what: str) -> None:
    if not Path(path).is_dir():
        raise ConfigError(field, f"{path} does not exist or is not a folder; give {what}")


def check_prepared_folder(path: str) -> None:
    """A prepared folder must exist and, when it has a manifest, hold at least one video."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError("prepared", f"{path} does not exist; prepare it first (`vidistill datasets prepare "
                                      f"--out {path}`) or submit this job --after the job that prepares it")
    manifest = folder / "manifest.json"
    try:
        videos = json.loads(manifest.read_text()).get("videos", {})
    except (OSError, ValueError, AttributeError):
        return  # frames extracted elsewhere (a file list), or a manifest the loader explains
    if not videos:
        raise ConfigError("prepared", f"{path} has no videos (its manifest lists none; every video failed "
                                      "to prepare?); see `vidistill datasets describe` and prepare it again")


def _pinned_models(config: Mapping[str, Any]) -> list[str]:
    uris = list(config.get("models") or [])
    resolved = config.get("resolved") or {}
    distill = resolved.get("distill") if isinstance(resolved, Mapping) else None
    if isinstance(distill, Mapping) and distill.get("teacher"):
        uris.append(distill["teacher"])
    return [uri for uri in uris if isinstance(uri, str) and _VERSION_URI.match(uri)]


def check_registered_models(config: Mapping[str, Any], tracking_uri: str | None) -> None:
    """Every models:/NAME/VERSION the job loads exists in the registry it will read."""
    uris = _pinned_models(config)
    if not uris:
        return  # no registry access (and no MLflow import) for jobs that name no version
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(uri, registry_uri=uri)
    for model in uris:
        match = _VERSION_URI.match(model)
        field = "models" if model in (config.get("models") or []) else "teacher"
        try:
            client.get_model_version(match["name"], match["version"])
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise ConfigError(field, f"cannot check {model} in the model registry at {_redacted(uri)}: "
                                         f"{error.message[:300]}") from None
            raise ConfigError(field, f"{model} is not in the model registry at {_redacted(uri)}; "
                                     "list versions with `mlflow models` / `vidistill ui`, or submit this job "
                                     "--after the job that registers it") from None


def default_tracking_uri(environ: Mapping[str, str] | None = None) -> str:
    """The store the trainers log to (vidistill.trainers.tracking.tracking_uri), without importing MLflow."""
    env = os.environ if environ is None else environ
    home = Path(env.get("VIDISTILL_HOME") or Path.home() / ".vidistill").expanduser()
    return env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"


def tracking_uri_for_job(environ: Mapping[str, str] | None = None) -> str:
    """The submitter's tracking URI, recorded on the job; refused when it holds a password."""
    uri = default_tracking_uri(environ)
    from urllib.parse import urlsplit

    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    if password:
        raise ConfigError("MLFLOW_TRACKING_URI", "holds a password, which the job's environment would show "
                                                 "(Ray's job records, the dashboard); drop it from the URI and "
                                                 "use ~/.mlflow/credentials (tracking server) or PGPASSFILE "
                                                 "(PostgreSQL store)")
    return uri


def _redacted(uri: str) -> str:
    return re.sub(r"//([^/@:]+):[^/@]*@", r"//\1:***@", uri)


__all__ = ["check_prepared_folder", "check_submission", "submit_job", "default_tracking_uri", "tracking_uri_for_job"]
